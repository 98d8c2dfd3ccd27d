"""Simulcast layers: what the ``layers`` event says, and what a selection means.

Janus numbers a publisher's substreams from the lowest (0) up, while an
offer's ``a=rid`` lines list them from the highest down (Janus 1.1.2's
default ``rid_order``), so a rid's substream is counted from the end.
Layer sizes are not reported: Janus does not decode, so it does not know
them; a layer without traffic has bitrate 0, which the extension reads as
inactive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.errors import MalformedBody
from gateway.sdp.model import SessionDescription

MAX_LAYER_INT = 2**31 - 1  # larger numbers Janus refuses (and Python's bool is an int)


@dataclass(frozen=True)
class LayerChoice:
    """Which simulcast layer a viewer wants; both None means automatic."""

    spatial: int | None = None  # 0 is the lowest layer
    temporal: int | None = None


def rids(offer: SessionDescription) -> list[str]:
    """The publisher's send rids, highest first; empty without simulcast."""
    for media in offer.media:
        if media.kind == "video" and media.rids:
            return media.rids
    return []


def describe(rid_list: list[str], bitrates: list[int]) -> list[dict[str, Any]]:
    """The ``layers`` event entries for one video m-line, lowest layer first."""
    return [
        {"rid": rid_list[len(rid_list) - 1 - index] if index < len(rid_list) else str(index),
         "spatialLayerId": index, "bitrate": bitrate}
        for index, bitrate in enumerate(bitrates)
    ]


def check_request(request: Any) -> dict[str, Any]:
    """The layer selection body: a JSON object with sane integers (400 otherwise)."""
    if not isinstance(request, dict):
        raise MalformedBody("the body must be a JSON object")
    for name in ("spatialLayerId", "temporalLayerId", "maxWidth", "maxHeight"):
        value = request.get(name, 0)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_LAYER_INT:
            raise MalformedBody(f"{name} must be an integer from 0 to {MAX_LAYER_INT}")
    if "rid" in request and not isinstance(request["rid"], str):
        raise MalformedBody("rid must be a string")
    return request


def choose(request: dict[str, Any], rid_list: list[str]) -> LayerChoice:
    """A layer selection request as a layer choice.

    ``{mediaId}`` alone returns to automatic selection.  Raises ValueError
    for a rid the publisher does not send, and for a selection by size
    alone (``maxWidth``/``maxHeight``), since layer sizes are unknown here.
    """
    spatial: int | None = None
    temporal: int | None = None
    by_layer = {"rid", "spatialLayerId", "temporalLayerId"} & request.keys()
    if not by_layer and {"maxWidth", "maxHeight"} & request.keys():
        raise ValueError("this server does not know layer sizes (Janus does not decode): "
                         "select a layer by rid or spatialLayerId")
    if "rid" in request:
        if request["rid"] not in rid_list:
            raise ValueError(f"unknown rid {request['rid']!r}; layers: {rid_list}")
        spatial = len(rid_list) - 1 - rid_list.index(request["rid"])
    elif "spatialLayerId" in request:
        spatial = int(request["spatialLayerId"])
    if "temporalLayerId" in request:
        temporal = int(request["temporalLayerId"])
    return LayerChoice(spatial, temporal)
