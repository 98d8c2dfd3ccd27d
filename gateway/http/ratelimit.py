"""Rate limits on the requests that cost Janus work: POST, PATCH and DELETE.

Two budgets, each a moving window from the ``limits`` library: one per
client address (a script gone wild) and one per stream (many clients
hammering one stream).  Over either budget the request gets 429 with a
Retry-After that says when the window frees a slot.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from gateway.errors import TooManyRequests


class RateLimits:
    def __init__(self, per_client: str | None, per_stream: str | None) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._per_client: RateLimitItem | None = parse(per_client) if per_client else None
        self._per_stream: RateLimitItem | None = parse(per_stream) if per_stream else None

    def check(self, client: str, stream: str) -> None:
        for item, scope, key in ((self._per_client, "client", client),
                                 (self._per_stream, "stream", stream)):
            if item is None:
                continue
            if not self._limiter.hit(item, scope, key):
                reset = self._limiter.get_window_stats(item, scope, key).reset_time
                wait = max(1, math.ceil(reset - time.time()))
                raise TooManyRequests(f"too many requests for this {scope} ({item}); "
                                      f"retry in {wait} s", retry_after=wait)
