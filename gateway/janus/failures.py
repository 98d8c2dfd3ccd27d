"""How a Janus failure reaches the client: translated once, at the janus/ boundary.

Every public method of the janus/ package runs its Janus calls inside
``janus_call``, so what leaves the package is a ``GatewayError`` (or a typed
result), never a ``JanusError``.  One rule sets the status:

- Janus refused SDP that carries what the *client* wrote (its offer, its
  answer, its trickled candidates, or a bridged answer with its transport):
  400 if Janus could not parse it, 422 if the plugin would not serve it;
- Janus did not answer (down, hung, session lost): 503;
- anything else (a room, a mountpoint, a forwarder, a layer choice the
  gateway asked for), or an SDP from Janus that cannot be read: 502.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

from gateway.errors import (
    GatewayError,
    MalformedSdp,
    MediaServerRejected,
    MediaServerUnavailable,
    UnsupportedMedia,
)
from gateway.janus.client import JanusError, JanusPluginError, JanusUnreachable
from gateway.sdp import model as sdp

log = logging.getLogger(__name__)


@contextmanager
def janus_call(node_name: str, *, client_sdp: bool = False) -> Iterator[None]:
    """Run Janus calls; turn their failures into the error the client sees.

    ``client_sdp``: the request carries SDP (or candidates) the client wrote,
    so Janus refusing it is the client's 400/422, not the gateway's 502.
    """
    try:
        yield
    except GatewayError:
        raise
    except JanusUnreachable as exc:
        log.warning("janus node %s unreachable: %s", node_name, exc)
        raise MediaServerUnavailable(f"media server {node_name} did not answer") from exc
    except JanusError as exc:
        plugin = exc.plugin if isinstance(exc, JanusPluginError) else "core"
        log.warning("janus %s on %s: %s (code %s)", plugin, node_name, exc.reason, exc.code)
        if client_sdp and isinstance(exc, JanusPluginError):
            raise UnsupportedMedia(f"the media server refused the offer: {exc.reason}") from exc
        if client_sdp and exc.code == JanusError.INVALID_SDP:
            raise MalformedSdp(f"the media server could not use the offer: {exc.reason}") from exc
        raise MediaServerRejected(f"the media server failed: {exc.reason} ({exc.code})") from exc
    except sdp.SdpError as exc:
        raise MediaServerRejected(f"the media server sent an unreadable SDP: {exc}") from exc
