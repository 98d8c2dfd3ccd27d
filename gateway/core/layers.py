"""Simulcast layers: what the ``layers`` event says, and what a selection means.

Janus numbers a publisher's substreams from the lowest (0) up, while an
offer's ``a=rid`` lines list them from the highest down (Janus 1.1.2's
default ``rid_order``), so a rid's substream is counted from the end.
Layer sizes are not reported: Janus does not decode, so it does not know
them; a layer without traffic has bitrate 0, which the extension reads as
inactive.
"""

from __future__ import annotations

from typing import Any

from gateway.sdp.model import SessionDescription

AUTOMATIC = {"substream": 2, "temporal": 2}  # Janus then sends the best layer it has


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


def janus_choice(request: dict[str, Any], rid_list: list[str]) -> dict[str, int]:
    """A layer selection request as Streaming ``configure`` fields.

    ``{mediaId}`` alone returns to automatic selection.  Raises ValueError
    for a rid the publisher does not send, and for a selection by size
    alone (``maxWidth``/``maxHeight``), since layer sizes are unknown here.
    """
    fields: dict[str, int] = {}
    by_layer = {"rid", "spatialLayerId", "temporalLayerId"} & request.keys()
    if not by_layer and {"maxWidth", "maxHeight"} & request.keys():
        raise ValueError("this server does not know layer sizes (Janus does not decode): "
                         "select a layer by rid or spatialLayerId")
    if "rid" in request:
        if request["rid"] not in rid_list:
            raise ValueError(f"unknown rid {request['rid']!r}; layers: {rid_list}")
        fields["substream"] = len(rid_list) - 1 - rid_list.index(request["rid"])
    elif "spatialLayerId" in request:
        fields["substream"] = int(request["spatialLayerId"])
    if "temporalLayerId" in request:
        fields["temporal"] = int(request["temporalLayerId"])
    return fields or dict(AUTOMATIC)
