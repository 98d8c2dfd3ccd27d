"""The Janus API's failures as exceptions, whichever transport carried the request.

Kept apart from ``client`` so that the transports (``transport``,
``websocket``) and the client can all raise them without importing each
other.  ``gateway.janus.client`` re-exports every name here.
"""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]


class JanusError(Exception):
    """A Janus core error (``{"janus":"error"}``), codes from src/apierror.h."""

    NO_SUCH_SESSION = 458
    NO_SUCH_HANDLE = 459
    INVALID_SDP = 465

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"Janus error {code}: {reason}")
        self.code = code
        self.reason = reason


class JanusPluginError(JanusError):
    """An error a plugin reported in ``plugindata.data.error_code``."""

    def __init__(self, plugin: str, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.plugin = plugin
        self.args = (f"{plugin} error {code}: {reason}",)


class JanusUnreachable(Exception):
    """The node did not answer (refused, timed out, or answered garbage)."""


class JanusSessionLost(JanusUnreachable):
    """The Janus session is gone (node restarted, or the session timed out)."""


def raise_for_error(reply: Json) -> Json:
    """``reply`` itself, unless it is a Janus core error."""
    if reply.get("janus") == "error":
        err = reply.get("error") or {}
        raise JanusError(int(err.get("code", 0)), str(err.get("reason", "")))
    return reply
