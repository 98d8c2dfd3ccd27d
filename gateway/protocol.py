"""WHIP and WHEP on the wire: media types and link relations, named once.

The HTTP resources, the aiortc clients and the SDP code all use these, so a
media type or a link relation is spelled in one place.
"""

from __future__ import annotations

SDP = "application/sdp"  # RFC 9725 section 4.2: offers and answers
SDPFRAG = "application/trickle-ice-sdpfrag"  # RFC 8840: trickle and ICE restart PATCHes
JSON = "application/json"  # the WHEP extensions' request bodies
PROBLEM_JSON = "application/problem+json"  # RFC 9457 error bodies

ICE_SERVER_REL = "ice-server"  # RFC 9725 section 4.6
SSE_REL = "urn:ietf:params:whep:ext:core:server-sent-events"  # WHEP extensions, section 4
LAYER_REL = "urn:ietf:params:whep:ext:core:layer"  # WHEP extensions, Video Layer Selection
