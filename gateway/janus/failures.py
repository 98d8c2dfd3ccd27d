"""How a Janus failure reaches the client: one mapping, used by ingest and egress."""

from __future__ import annotations

import logging

from gateway.sdp import model as sdp
from gateway.errors import (
    GatewayError,
    MalformedSdp,
    MediaServerRejected,
    MediaServerUnavailable,
    UnsupportedMedia,
)
from gateway.janus.client import JanusError, JanusPluginError, JanusUnreachable
from gateway.janus.node import JanusNode

log = logging.getLogger(__name__)


def backend_error(exc: Exception, node: JanusNode) -> GatewayError:
    """One place that maps a Janus failure to what the client sees."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, JanusUnreachable):
        log.warning("janus node %s unreachable: %s", node.name, exc)
        return MediaServerUnavailable(f"media server {node.name} did not answer")
    if isinstance(exc, JanusPluginError):
        log.warning("janus %s on %s: %s (code %s)", exc.plugin, node.name, exc.reason, exc.code)
        return UnsupportedMedia(f"the media server refused the offer: {exc.reason}")
    if isinstance(exc, JanusError):
        log.warning("janus error on %s: %s (code %s)", node.name, exc.reason, exc.code)
        if exc.code == JanusError.INVALID_SDP:
            return MalformedSdp(f"the media server could not use the offer: {exc.reason}")
        return MediaServerRejected(f"the media server failed: {exc.reason} ({exc.code})")
    if isinstance(exc, sdp.SdpError):
        return MediaServerRejected(f"the media server sent an unreadable SDP: {exc}")
    raise exc
