"""What one viewer's join sends, as far as the rate limits can see: for the
1000-viewer test and bench/limiter_cost.py alike.

A WHEP POST with a browser's offer, two trickle PATCHes (If-Match "*") and
a DELETE on the session URL.  Against a stream that nobody publishes, the
answers are 409 and 404: the requests pass the limiter and end in the
domain before any Janus work.
"""

from __future__ import annotations

from collections import Counter

import httpx

SDP = "application/sdp"
TRICKLE = ("a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghijklmn\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"
           "a=mid:0\r\na=candidate:1 1 udp 2122260223 192.0.2.7 50000 typ host\r\n")
REQUESTS_PER_VIEWER = 4


async def join_and_leave(http: httpx.AsyncClient, endpoint: str, session: str, offer: str,
                         statuses: Counter[int]) -> None:
    """POST to ``endpoint``, PATCH twice and DELETE ``session``; count each status."""
    r = await http.post(endpoint, content=offer, headers={"Content-Type": SDP})
    statuses[r.status_code] += 1
    for _ in range(2):
        r = await http.patch(session, content=TRICKLE, headers={
            "Content-Type": "application/trickle-ice-sdpfrag", "If-Match": "*"})
        statuses[r.status_code] += 1
    statuses[(await http.delete(session)).status_code] += 1
