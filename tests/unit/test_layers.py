"""Simulcast layer mapping (WHEP extensions draft, Video Layer Selection)."""

from __future__ import annotations

import pytest

from gateway.core import layers
from gateway.janus.streaming import AUTOMATIC, configure_fields
from gateway.sdp import model as sdp
from tests.conftest import read_fixture


def test_rids_come_from_the_publisher_offer_highest_first() -> None:
    offer = sdp.parse(read_fixture("sdp", "chrome_publish.sdp"))
    assert layers.rids(offer) in ([], ["h", "m", "l"], ["f", "h", "q"], ["0", "1", "2"])
    assert layers.rids(sdp.parse(read_fixture("sdp", "obs_h264.sdp"))) == []


def test_describe_lists_lowest_first_with_janus_substream_numbers() -> None:
    assert layers.describe(["h", "m", "l"], [100, 200, 0]) == [
        {"rid": "l", "spatialLayerId": 0, "bitrate": 100},
        {"rid": "m", "spatialLayerId": 1, "bitrate": 200},
        {"rid": "h", "spatialLayerId": 2, "bitrate": 0},
    ]


def janus_choice(request_body: dict, rid_list: list[str]) -> dict:
    """A selection as Streaming configure fields: the domain's choice, then janus/'s fields."""
    choice = layers.choose(request_body, rid_list)
    return configure_fields(choice.spatial, choice.temporal)


@pytest.mark.parametrize("request_body,expected", [
    ({"mediaId": "1", "rid": "h"}, {"substream": 2}),
    ({"mediaId": "1", "rid": "l"}, {"substream": 0}),
    ({"mediaId": "1", "spatialLayerId": 1, "temporalLayerId": 0}, {"substream": 1, "temporal": 0}),
    ({"mediaId": "1"}, AUTOMATIC),
])
def test_janus_choice(request_body: dict, expected: dict) -> None:
    assert janus_choice(request_body, ["h", "m", "l"]) == expected


@pytest.mark.parametrize("request_body", [{"rid": "x"}, {"maxWidth": 640}, {"maxHeight": 360}])
def test_janus_choice_refuses_what_it_cannot_honour(request_body: dict) -> None:
    with pytest.raises(ValueError):
        janus_choice(request_body, ["h", "m", "l"])
