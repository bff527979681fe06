"""Rate limits: a token bucket per API key, or per client address for requests without a key.

Buckets live in the process (each process of a multi-process tsapi limits on its own), which keeps
the check to a few arithmetic operations: no round trip to a shared store on every request. It is
hand-written because that is all it takes; libraries for it bring stores and windows not needed.
Installed only when ``rate_limit`` is set.
"""

import math
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from tsapi.keys import ApiKey
from tsapi.settings import Settings
from tsapi.web import json_response

PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
MAX_BUCKETS = 100_000  # then the buckets that have refilled (idle clients) are forgotten
EXEMPT = frozenset({"/healthz", "/readyz"})  # probes must not be refused


def parse_rate(text: str) -> tuple[float, int]:
    """Tokens per second and the count of ``N/s``, ``N/m`` or ``N/h`` (checked by Settings)."""
    count, _, period = text.partition("/")
    return int(count) / PERIODS[period], int(count)


class TokenBuckets:
    """Each client may make ``burst`` requests at once, then ``rate`` per second."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self._buckets: dict[str, list[float]] = {}  # client: [tokens, when they were counted]

    def take(self, client: str, now: float) -> float:
        """0 when the client may go ahead (a token is taken), else the seconds until it may."""
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._forget_full(now)
            bucket = self._buckets[client] = [self.burst, now]
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1:
            bucket[0] = tokens - 1
            return 0.0
        bucket[0] = tokens
        return (1 - tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        # A bucket that has refilled is the same as none at all.
        self._buckets = {
            client: bucket
            for client, bucket in self._buckets.items()
            if bucket[0] + (now - bucket[1]) * self.rate < self.burst
        }


class RateLimitMiddleware:
    """Runs after authentication, so that a key's bucket is drained only by that key."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        assert settings.rate_limit is not None
        self.app = app
        rate, count = parse_rate(settings.rate_limit)
        self.buckets = TokenBuckets(rate, settings.rate_limit_burst or count)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in EXEMPT:
            key: ApiKey | None = scope.get("tsapi.key")
            client = f"key {key.id}" if key else f"address {(scope.get('client') or ('?',))[0]}"
            wait = self.buckets.take(client, time.monotonic())
            if wait:
                seconds = max(1, math.ceil(wait))
                body = {"error": f"too many requests: retry in {seconds} s"}
                response = json_response(body, 429, {"Retry-After": str(seconds)})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
