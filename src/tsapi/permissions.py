"""What an API key may do: which routes its scope opens, and, for a key restricted to sensors,
how each route is kept to those sensors.

Scopes: ``read`` is every GET route; ``write`` is POST /readings and nothing else (a device that
sends readings cannot read any back); ``admin`` is everything. A key restricted to sensors may
use only the routes below that are known to keep to them; any other route, including ones added
later, refuses it: what is not listed here cannot leak another sensor's data.
"""

import uuid
from collections.abc import Iterable
from typing import Any

from starlette.datastructures import QueryParams
from starlette.routing import Match
from starlette.types import Scope

from tsapi.errors import ApiError
from tsapi.ingest import Batch
from tsapi.keys import ApiKey
from tsapi.query import parse_sensors

OPEN = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/static"})
READ_METHODS = frozenset({"GET", "HEAD"})
# GET routes whose `sensor=` parameter selects every row they read, and those naming one sensor
# in their path.
FILTERED_BY_QUERY = frozenset({"/readings", "/readings/aggregate", "/readings/latest", "/sensors"})
FILTERED_BY_PATH = frozenset({"/sensors/{sensor}", "/sensors/{sensor}/latest"})
# Every route that writes readings: POST /readings and InfluxDB's two write routes.
WRITE_ROUTES = frozenset({"/readings", "/api/v2/write", "/write"})
UNMATCHED = "unmatched"  # no route: a 404, or a path only a Mount answers under
_STATIC: dict[str, str] = {}  # paths found to be routes without parameters (a handful)


def route_of(scope: Scope) -> tuple[str, dict[str, Any]]:
    """The template of the route a request is for (UNMATCHED if none) and its path parameters,
    worked out once per request, before the router runs."""
    found: tuple[str, dict[str, Any]] | None = scope.get("tsapi.route")
    if found is not None:
        return found
    template = _STATIC.get(scope["path"])
    if template is not None:  # most requests: matching every route again costs microseconds
        found = scope["tsapi.route"] = (template, {})
        return found
    found = (UNMATCHED, {})
    for route in scope["app"].router.routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            found = (route.path, child.get("path_params", {}))
            break
        if match is Match.PARTIAL and found[0] == UNMATCHED:  # the method is not the route's
            found = (route.path, child.get("path_params", {}))
    scope["tsapi.route"] = found
    if found[0] == scope["path"]:  # a route without parameters: its path is always its own
        _STATIC[found[0]] = found[0]
    return found


def authorize(key: ApiKey, scope: Scope) -> None:
    """Refuse (403) what the key may not do; keep a sensor-restricted key's reads to its sensors,
    adding them as the `sensor=` filter where the request names none."""
    method = scope["method"]
    route, path_params = route_of(scope)
    reading = method in READ_METHODS
    writing = method == "POST" and route in WRITE_ROUTES
    allowed = key.scope == "admin" or (reading if key.scope == "read" else writing)
    if not allowed:
        raise ApiError(403, f"this key's scope ({key.scope}) does not allow {method} {route}")
    if key.sensors is None or writing:  # a write's rows are checked by check_writes
        return
    if reading and route in FILTERED_BY_PATH:
        _check_sensors(key.sensors, parse_sensors([path_params["sensor"]]), "read")
    elif reading and route in FILTERED_BY_QUERY:
        params = QueryParams(scope["query_string"])
        asked = parse_sensors(params.getlist("sensor"))
        if asked:
            _check_sensors(key.sensors, asked, "read")
        else:
            allowed_sensors = ",".join(sorted(map(str, key.sensors)))
            query = scope["query_string"] + b"&" if scope["query_string"] else b""
            scope["query_string"] = query + f"sensor={allowed_sensors}".encode()
    else:
        raise ApiError(403, f"a key restricted to sensors cannot use {method} {route}")


def check_writes(scope: Scope, batch: Batch) -> None:
    """403 if the request's key may not write one of the batch's sensors."""
    key: ApiKey | None = scope.get("tsapi.key")
    if key is None or key.sensors is None:
        return
    distinct = {row[1] for row in batch.timed} | {row[0] for row in batch.untimed}
    # The ingest fast path keeps sensors as their canonical text.
    sensors = {uuid.UUID(s) if isinstance(s, str) else s for s in distinct}
    _check_sensors(key.sensors, sensors, "write")


def _check_sensors(allowed: frozenset[uuid.UUID], asked: Iterable[uuid.UUID], verb: str) -> None:
    refused = sorted(set(asked) - allowed)
    if refused:  # it names only a sensor the request itself named
        raise ApiError(403, f"this key may not {verb} sensor {refused[0]}")
