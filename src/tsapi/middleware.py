"""The middleware every request goes through, outermost first, and the refusal to serve an open
API beyond this machine.

All are plain ASGI callables rather than BaseHTTPMiddleware, which costs a task and a copy of the
answer per request; those that are off by default are not installed at all when off.
"""

import ipaddress

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from tsapi.access import AccessMiddleware
from tsapi.auth import AuthMiddleware
from tsapi.body_timeout import BodyTimeoutMiddleware
from tsapi.ratelimit import RateLimitMiddleware
from tsapi.settings import Settings


def stack(settings: Settings) -> list[Middleware]:
    layers = [Middleware(AccessMiddleware, count=settings.metrics)]
    if settings.cors_origins:  # outside auth: browsers send preflight requests without keys
        layers.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
                expose_headers=["Link", "Retry-After", "X-Request-ID"],
            )
        )
    layers.append(
        Middleware(
            BodyTimeoutMiddleware, seconds=settings.body_timeout, min_rate=settings.body_min_rate
        )
    )
    if settings.auth != "off":
        layers.append(Middleware(AuthMiddleware, settings=settings))
    if settings.rate_limit is not None:
        layers.append(Middleware(RateLimitMiddleware, settings=settings))
    return layers


def insecure_bind(settings: Settings) -> str | None:
    """Why serving with these settings is refused, if it is: a host other machines can reach,
    with auth not required, unless allow_insecure_bind says that is meant."""
    if settings.auth == "required" or settings.allow_insecure_bind:
        return None
    host = settings.host
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it may resolve to anything
        loopback = False
    if loopback:
        return None
    return (
        f"refusing to serve on {host} without requiring API keys: set auth = required (and "
        "create a key with `tsapi keys create`), or allow_insecure_bind = true to serve it open"
    )
