"""Every way a request can fail, each named once with its HTTP status.

The domain raises these; the HTTP layer turns any of them into an RFC 9457
``application/problem+json`` response (see ``gateway.http.problems``).  Keeping
the status beside the name means a reader finds "what does a client see when
X goes wrong" in one file, and no handler invents its own status code.
"""

from __future__ import annotations

from typing import ClassVar


class GatewayError(Exception):
    """A failure that a client is told about."""

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"
    # Seconds a client should wait before trying again (Retry-After), for
    # errors that pass with time; decided here, per error, and nowhere else.
    retry_after_default: ClassVar[int | None] = None

    def __init__(
        self,
        detail: str,
        *,
        retry_after: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after if retry_after is not None else self.retry_after_default
        self.headers = dict(headers or {})

    @property
    def type_slug(self) -> str:
        """A stable, human-readable problem type, e.g. ``malformed-sdp``."""
        name = type(self).__name__
        return "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")


class MalformedSdp(GatewayError):
    status = 400
    title = "Malformed SDP"


class MalformedBody(GatewayError):
    status = 400
    title = "Malformed request body"


class AuthenticationRequired(GatewayError):
    """RFC 6750 section 3: a missing or unknown token."""

    status = 401
    title = "Authentication required"

    def __init__(self, detail: str, *, error: str | None = None) -> None:
        challenge = 'Bearer realm="whip-gateway"'
        if error:
            challenge += f', error="{error}"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class PublishKeyRequired(AuthenticationRequired):
    """RFC 9725 section 4.7.1: a publisher without the stream's key."""

    title = "Publish key required"


class ViewerTokenRequired(AuthenticationRequired):
    """A viewer without the stream's viewer token (or a signed one)."""

    title = "Viewer token required"


class AdminTokenRequired(AuthenticationRequired):
    """An operator API call without ``Authorization: Bearer <admin_token>``."""

    title = "Admin token required"


class Forbidden(GatewayError):
    status = 403
    title = "Forbidden"


class PublishKeyRejected(Forbidden):
    """A key that does not publish this stream."""

    title = "Publish key rejected"


class AdminTokenRejected(Forbidden):
    """A token that is not the operator's ``admin_token``."""

    title = "Admin token rejected"


class ViewerTokenRejected(Forbidden):
    """A viewer token that does not open this stream (unknown, forged, or another stream's)."""

    title = "Viewer token rejected"


class ResourceNotFound(GatewayError):
    status = 404
    title = "Not found"


class AdminApiOff(ResourceNotFound):
    """No ``admin_token`` is set: the operator API does not exist."""

    title = "Admin API off"


class RecordingNotFound(ResourceNotFound):
    """No recording has that id (never made, deleted, or past the retention)."""

    title = "Recording not found"


class StreamBusy(GatewayError):
    """Another publisher is live on the stream (and still sending media)."""

    status = 409
    title = "Stream already has a live publisher"
    retry_after_default = 5


class IceRestartInProgress(GatewayError):
    """A second ICE restart of one publisher while the first is still with Janus.

    Janus 1.1.2 can crash when a publisher's handle gets a new offer while
    another one, or its hang-up, is in flight (bench/README.md, issue 11), so
    the gateway sends one at a time and the client retries shortly.
    """

    status = 409
    title = "An ICE restart of this session is in progress"
    retry_after_default = 1


class StreamNotLive(GatewayError):
    """WHEP draft-03, Session Management: no live publisher to watch yet."""

    status = 409
    title = "Stream is not live"
    retry_after_default = 5


class RecordingNotReady(GatewayError):
    """The recording's file is not there yet (recording, processing) or never will be
    (failed): no download, and no delete while it is being made."""

    status = 409
    title = "Recording not ready"


class PreconditionFailed(GatewayError):
    """RFC 9725 section 4.3.1: If-Match does not name the current ICE session."""

    status = 412
    title = "Precondition failed"


class BodyTooLarge(GatewayError):
    status = 413
    title = "Request body too large"


class UnsupportedContentType(GatewayError):
    status = 415
    title = "Unsupported media type"


class RangeNotSatisfiable(GatewayError):
    """RFC 9110 section 15.5.17: a Range that starts past the end of the file."""

    status = 416
    title = "Range not satisfiable"

    def __init__(self, detail: str, *, size: int) -> None:
        super().__init__(detail, headers={"Content-Range": f"bytes */{size}"})


class UnsupportedMedia(GatewayError):
    """RFC 9725 section 4.4.3: no partially successful answers."""

    status = 422
    title = "Unsupported media"


class UnsupportedPatch(GatewayError):
    """RFC 9725 section 4.3.1: a kind of PATCH this session does not support."""

    status = 422
    title = "Unsupported PATCH"


class PreconditionRequired(GatewayError):
    """RFC 9725 section 4.3.1 / RFC 6585 section 3: PATCH without If-Match."""

    status = 428
    title = "Precondition required"


class TooManyRequests(GatewayError):
    """RFC 6585 section 4: a budget of ``gateway.http.ratelimit`` is spent; Retry-After says when
    it frees a slot."""

    status = 429
    title = "Too many requests"


class AuthenticationFailuresExceeded(TooManyRequests):
    """RFC 6585 section 4: too many 401/403 answers to one client address (token guessing):
    its requests that carry a token are refused until the window frees a slot."""

    status = 429
    title = "Too many failed authentications"


class RequestTimeout(GatewayError):
    """The client stalled while sending its body."""

    status = 408
    title = "Request timeout"


class ClientGone(GatewayError):
    """The client closed the connection before its body arrived (it gave up
    waiting, as a load test's clients do): nothing reaches it any more, and
    it is no server fault, so no 5xx and no traceback in the log."""

    status = 400
    title = "Client closed the request"


class MediaServerUnavailable(GatewayError):
    """No Janus node can take the request right now."""

    status = 503
    title = "Media server unavailable"
    retry_after_default = 2


class CapacityExhausted(MediaServerUnavailable):
    """Every egress node that could take the viewer is full or draining (WHEP,
    Load Balancing and Redirections: 503 with Retry-After under high load)."""

    title = "No capacity left"
    retry_after_default = 5


class ViewerInOtherRegion(GatewayError):
    """RFC 9725 section 4.5 and WHEP Load Balancing: a viewer of another region
    is sent to that region's gateway with 307 (the POST is repeated there)."""

    status = 307
    title = "Served by another region's gateway"

    def __init__(self, detail: str, *, location: str) -> None:
        super().__init__(detail, headers={"Location": location})


class NodeConflict(GatewayError):
    """An operator change the node pool cannot make: a name it already has,
    or removing its last node."""

    status = 409
    title = "Node pool conflict"


class MediaServerRejected(GatewayError):
    """Janus refused or failed something the gateway itself wrote or asked for
    (not the client's SDP: that is 400 or 422)."""

    status = 502
    title = "Media server rejected the request"


class AuthHookRefused(AuthenticationRequired):
    """The auth webhook (``auth_webhook_url``) answered 401 for this publish or view."""

    title = "Refused by the auth webhook"


class AuthHookForbidden(Forbidden):
    """The auth webhook answered 403 for this publish or view."""

    title = "Forbidden by the auth webhook"


class AuthHookUnavailable(GatewayError):
    """The auth webhook could not answer (down, slow, 5xx): fail closed."""

    status = 503
    title = "Authorization service unavailable"
    retry_after_default = 5


# -- the operator API (/api/streams, /api/sessions) ------------------------------


class StreamNotFound(ResourceNotFound):
    """No stream of that name is defined, live or watched."""

    title = "Stream not found"


class StreamNotDefined(ResourceNotFound):
    """The stream was not created through the API (settings' stream keys are read-only)."""

    title = "Stream not created through the API"


class StreamExists(GatewayError):
    """``POST /api/streams`` for a name the API already defines."""

    status = 409
    title = "Stream already exists"


class SessionNotFound(ResourceNotFound):
    """No live publisher or viewer session has that id."""

    title = "Session not found"

class ReplicaUnavailable(GatewayError):
    """The replica that holds the session is not answering, and its lease has
    not lapsed yet, so no other replica may take its sessions over."""

    status = 503
    title = "Gateway replica unavailable"
    retry_after_default = 2
