"""Every request's id, its access log line and its metrics. The outermost middleware, so that
what the others answer (401, 403, 429, CORS) is logged and counted too.

The id is the client's ``X-Request-ID`` when it is a sane one, else a new one; it is sent back in
``X-Request-ID`` and is part of every log line written while the request runs. The access line
names the method, path, route, status, duration, client address and key id: never a query string,
a header's value or a body, which may hold secrets.
"""

import functools
import random
import re
import time

import structlog
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tsapi import permissions
from tsapi.keys import ApiKey
from tsapi.metrics import LATENCY, REQUESTS

log = structlog.get_logger("tsapi.access")

_SANE_ID = re.compile(rb"[\w.:/+=@-]{1,128}", re.ASCII)


# The metrics' series by labels, kept here: prometheus_client's labels() checks and locks each time.
@functools.cache
def _requests(method: str, route: str, status: int) -> Counter:
    return REQUESTS.labels(method, route, str(status))


@functools.cache
def _latency(method: str, route: str) -> Histogram:
    return LATENCY.labels(method, route)


def _request_id(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"x-request-id" and _SANE_ID.fullmatch(value):
            return bytes(value)
    # Unique, not secret: the process's random generator (reseeded in each forked worker) is
    # much cheaper than uuid4's system call.
    return b"%032x" % random.getrandbits(128)


class AccessMiddleware:
    def __init__(self, app: ASGIApp, count: bool = True) -> None:
        self.app = app
        self.count = count  # whether requests are counted and timed for GET /metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        request_id = _request_id(scope)
        status = 500  # unless an answer starts: an exception ServerErrorMiddleware answers

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        # bind and reset rather than bound_contextvars(), a generator-based context manager that
        # costs more than the rest of this middleware.
        bound = structlog.contextvars.bind_contextvars(request_id=request_id.decode())
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - began
            method = scope["method"]
            routed = scope.get("route")  # the router's own finding, when it ran
            route = routed.path if routed else permissions.route_of(scope)[0]
            if self.count:
                _requests(method, route, status).inc()
                _latency(method, route).observe(seconds)
            key: ApiKey | None = scope.get("tsapi.key")
            client = scope.get("client")
            log.info(
                "request",
                method=method,
                path=scope["path"],
                route=route,
                status=status,
                ms=round(seconds * 1000, 2),
                client=client[0] if client else None,
                key=key.id if key else None,
            )
            structlog.contextvars.reset_contextvars(**bound)
