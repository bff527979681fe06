"""Authentication: the API key a request presents, as ``Authorization: Bearer <key>`` or as
InfluxDB's clients send it, ``Authorization: Token <key>``; what it may do is tsapi.permissions'.

Keys are looked up in a per-process cache that forgets each entry after ``key_cache_seconds``, so
that most requests cost no query, and a revoked key is refused by every process within that time.
Installed only when ``auth`` is not ``off``.
"""

import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from tsapi import keys, permissions
from tsapi.db import Pool
from tsapi.errors import ApiError
from tsapi.keys import ApiKey
from tsapi.metrics import CACHE_LOOKUPS
from tsapi.settings import Settings
from tsapi.web import UNAVAILABLE, json_response, unavailable

MAX_CACHED = 10_000  # keys and unknown ids remembered per process; then the expired are dropped
SCHEMES = ("bearer", "token")
_HIT, _MISS = CACHE_LOOKUPS.labels("api_keys", "hit"), CACHE_LOOKUPS.labels("api_keys", "miss")


@dataclass
class _Entry:
    expires: float
    key: ApiKey | None  # None: no such key, or revoked
    touched: bool = False  # whether its last_used_at was set since it was looked up


class KeyCache:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, _Entry] = {}
        self._required = False
        self._checked_until = float("-inf")

    async def required(self, pool: Pool, timeout: float) -> bool:
        """Whether any key exists: then auth = auto requires one on every request."""
        # Keys are never deleted (revoking keeps the row), so once true it stays true.
        if not self._required and time.monotonic() >= self._checked_until:
            async with pool.acquire(timeout=timeout) as conn:
                self._required = await keys.any_exist(conn)
            self._checked_until = time.monotonic() + self.ttl
        return self._required

    async def find(self, pool: Pool, timeout: float, key_id: str) -> _Entry:
        now = time.monotonic()
        entry = self._entries.get(key_id)
        if entry is not None and now < entry.expires:
            _HIT.inc()
            return entry
        _MISS.inc()
        async with pool.acquire(timeout=timeout) as conn:
            key = await keys.find(conn, key_id)
        if len(self._entries) >= MAX_CACHED:
            self._entries = {i: e for i, e in self._entries.items() if now < e.expires}
            if len(self._entries) >= MAX_CACHED:
                self._entries.clear()
        entry = self._entries[key_id] = _Entry(now + self.ttl, key)
        return entry


def _presented(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() in SCHEMES else None
    return None


def _unauthorized(message: str, challenge: str = 'Bearer realm="tsapi"') -> ApiError:
    error = ApiError(401, message)
    error.headers["WWW-Authenticate"] = challenge
    return error


class AuthMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.auto = settings.auth == "auto"
        self.timeout = settings.pool_timeout
        self.cache = KeyCache(settings.key_cache_seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or permissions.route_of(scope)[0] in permissions.OPEN:
            await self.app(scope, receive, send)
            return
        try:
            key = await self._authenticate(scope, scope["app"].state.tsapi.pool)
            if key is not None:
                scope["tsapi.key"] = key  # for the access log, even when it is refused next
                permissions.authorize(key, scope)
        except ApiError as exc:
            await json_response(exc.body(), exc.status, exc.headers)(scope, receive, send)
            return
        except UNAVAILABLE as exc:
            await (await unavailable(Request(scope), exc))(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _authenticate(self, scope: Scope, pool: Pool) -> ApiKey | None:
        """The request's valid key; None when no key is needed."""
        if self.auto and not await self.cache.required(pool, self.timeout):
            return None
        token = _presented(scope)
        if token is None:
            raise _unauthorized("an API key is required: send it as Authorization: Bearer <key>")
        parts = keys.split(token)
        if parts is not None:
            entry = await self.cache.find(pool, self.timeout, parts[0])
            if entry.key is not None and entry.key.verifies(parts[1]):
                if not entry.touched:  # last_used_at is kept to within key_cache_seconds
                    entry.touched = True
                    async with pool.acquire(timeout=self.timeout) as conn:
                        await keys.touch(conn, entry.key.id)
                return entry.key
        raise _unauthorized(
            "the API key is not valid: unknown, revoked or mistyped",
            'Bearer realm="tsapi", error="invalid_token"',
        )
