"""The OpenAPI description of tsapi's HTTP API, and the interactive docs page that renders it."""

from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from tsapi import __version__
from tsapi.permissions import OPEN
from tsapi.ratelimit import EXEMPT as NOT_RATE_LIMITED
from tsapi.web import json_response

_ERROR = {"$ref": "#/components/schemas/Error"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, description: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "description": description, "schema": schema, **extra}


def _status(status: str, **properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["status", *properties],
        "properties": {"status": {"type": "string", "enum": [status]}, **properties},
    }


_TIMESTAMP = {"type": "string", "format": "date-time"}
_INSTANT_FORMS = (
    "RFC 3339 (no offset: UTC), or relative to the database's now(): now, -15m, now-2h, +1d "
    "(units s, m, h, d, w)"
)
_INSTANT = {
    "anyOf": [
        _TIMESTAMP,
        {
            "type": "string",
            "minLength": 1,
            "pattern": "^(?:[nN][oO][wW])?(?:[-+ ][0-9]+[smhdwSMHDW])?$",
        },
    ]
}
_READING_IN = {
    "type": "object",
    "required": ["sensor", "value"],
    "properties": {
        "sensor": {"type": "string", "format": "uuid"},
        "value": {
            "oneOf": [{"type": "number"}, {"type": "string"}],
            "description": "A finite number, or a numeric string; stored exactly.",
        },
        "ts": {
            "type": "string",
            "nullable": True,
            "description": "RFC 3339; without an offset it is UTC; missing means the "
            "database's now().",
        },
        "metadata": {"type": "object", "nullable": True},
    },
}

_SENSOR_FILTER = _query(
    "sensor",
    "Only these sensors; repeat it or separate UUIDs with commas",
    {"type": "array", "items": {"type": "string", "format": "uuid"}},
    style="form",
    explode=True,
)
_METADATA_FILTER = {
    "name": "metadata",
    "in": "query",
    "description": 'A JSON object the metadata must contain (jsonb @>), e.g. {"room":"r1"}',
    "content": {"application/json": {"schema": {"type": "object"}}},
}
_SENSOR_PATH = {
    "name": "sensor",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
    "example": "6f3e43a4-d1c1-4cb6-b928-0ac0efaf84a5",
}
_SUMMARY = {
    "type": "object",
    "required": ["sensor", "count", "first_ts", "last_ts", "last_value", "metadata"],
    "properties": {
        "sensor": {"type": "string", "format": "uuid"},
        "count": {"type": "integer", "minimum": 1},
        "first_ts": _TIMESTAMP,
        "last_ts": _TIMESTAMP,
        "last_value": {"type": "number", "nullable": True},
        "metadata": {"type": "object", "nullable": True},
    },
}
_NUMBER_OR_NULL = {"type": "number", "nullable": True}
_BUCKET = {
    "type": "object",
    "required": ["bucket"],
    "description": "A bucket's start, its sensor (unless group=none), and a field per function "
    "asked for: null where the bucket has no readings (with fill=null, or previous and linear "
    "where there is nothing to fill from)",
    "properties": {
        "bucket": _TIMESTAMP,
        "sensor": {"type": "string", "format": "uuid"},
        "avg": _NUMBER_OR_NULL,
        "min": _NUMBER_OR_NULL,
        "max": _NUMBER_OR_NULL,
        "sum": _NUMBER_OR_NULL,
        "count": {"type": "integer", "minimum": 0},
        "first": _NUMBER_OR_NULL,
        "last": _NUMBER_OR_NULL,
    },
}
_NDJSON_ROWS = {
    "schema": {"type": "string", "description": "One JSON object per line, as in the array"}
}
_CSV_ROWS = {"schema": {"type": "string", "description": "RFC 4180, UTF-8, with a header line"}}
_READINGS = {"type": "array", "items": {"$ref": "#/components/schemas/Reading"}}
_ANALYTICS_PATHS: dict[str, Any] = {
    "/readings/aggregate": {
        "get": {
            "summary": "Aggregates per time bucket, per sensor or across sensors",
            "parameters": [
                _query(
                    "bucket",
                    "Bucket width: a whole number of s, m, h, d or w (30s, 15m, 1h, 1d, 1w), "
                    "at most 1000000w",
                    {"type": "string", "pattern": r"^\s*0*[1-9][0-9]*\s*[smhdwSMHDW]\s*$"},
                    required=True,
                ),
                _query(
                    "fn",
                    "Functions, repeated or comma-separated (default avg)",
                    {
                        "type": "array",
                        "items": {
                            "type": "string",
                            "enum": ["avg", "min", "max", "sum", "count", "first", "last"],
                        },
                    },
                    style="form",
                    explode=False,
                ),
                _query(
                    "group",
                    "One series per sensor, or one in all",
                    {"type": "string", "enum": ["sensor", "none"]},
                ),
                _query(
                    "fill",
                    "Gap filling",
                    {"type": "string", "enum": ["none", "null", "previous", "linear"]},
                ),
                _query(
                    "tz",
                    "IANA time zone buckets align to (default UTC)",
                    {"type": "string", "example": "Europe/Paris"},
                ),
                _SENSOR_FILTER,
                _query("from", f"Earliest ts, inclusive: {_INSTANT_FORMS}", _INSTANT),
                _query("to", f"Latest ts, exclusive: {_INSTANT_FORMS}", _INSTANT),
                _METADATA_FILTER,
                _query(
                    "format", "Answer format", {"type": "string", "enum": ["json", "ndjson", "csv"]}
                ),
            ],
            "responses": {
                "200": {
                    "description": "One object per bucket (and sensor), by sensor then bucket",
                    "content": {
                        "application/json": {"schema": {"type": "array", "items": _BUCKET}},
                        "application/x-ndjson": _NDJSON_ROWS,
                        "text/csv": _CSV_ROWS,
                    },
                },
                "400": _error("A parameter is invalid; `parameter` names it"),
                "503": _error("The database is unavailable, or the query ran too long"),
            },
        }
    },
    "/readings/latest": {
        "get": {
            "summary": "The latest reading of each sensor",
            "parameters": [_SENSOR_FILTER],
            "responses": {
                "200": _json("One reading per sensor", _READINGS),
                "400": _error("A parameter is invalid; `parameter` names it"),
                "503": _error("The database is unavailable, or the query ran too long"),
            },
        }
    },
    "/sensors": {
        "get": {
            "summary": "Sensors with their counts, first and last readings",
            "parameters": [
                _SENSOR_FILTER,
                _METADATA_FILTER,
                _query(
                    "limit",
                    "How many sensors, 1 to max_limit (default default_limit)",
                    {"type": "integer", "minimum": 1},
                ),
                _query(
                    "after",
                    "The last sensor of the previous page",
                    {"type": "string", "format": "uuid"},
                ),
            ],
            "responses": {
                "200": {
                    **_json("Sensors, by id", {"type": "array", "items": _SUMMARY}),
                    "headers": {
                        "Link": {
                            "description": '`<...>; rel="next"`: the next page, if any',
                            "schema": {"type": "string"},
                        }
                    },
                },
                "400": _error("A parameter is invalid; `parameter` names it"),
                "503": _error("The database is unavailable, or the query ran too long"),
            },
        }
    },
    "/sensors/{sensor}": {
        "get": {
            "summary": "One sensor's summary",
            "parameters": [_SENSOR_PATH],
            "responses": {
                "200": _json("The sensor", _SUMMARY),
                "400": _error("The id is not a UUID"),
                "404": _error("The sensor has no readings"),
                "503": _error("The database is unavailable, or the query ran too long"),
            },
        }
    },
    "/sensors/{sensor}/latest": {
        "get": {
            "summary": "One sensor's latest reading",
            "parameters": [_SENSOR_PATH],
            "responses": {
                "200": _json("The reading", {"$ref": "#/components/schemas/Reading"}),
                "400": _error("The id is not a UUID"),
                "404": _error("The sensor has no readings"),
                "503": _error("The database is unavailable, or the query ran too long"),
            },
        }
    },
}

_CONTENT_ENCODING = {
    "name": "Content-Encoding",
    "in": "header",
    "description": "gzip (or x-gzip): the body is decompressed as it arrives (limits apply "
    "decompressed); identity or empty: the body is not encoded",
    "schema": {"type": "string", "enum": ["gzip", "x-gzip", "identity", ""]},
}
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "description": "Done once per key: a retry with the same key and the same request answers "
    "the first answer (with Idempotent-Replayed: true) and writes nothing again",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}
_INFLUX_ERROR = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {
        "code": {"type": "string", "enum": ["invalid", "forbidden", "unavailable"]},
        "message": {"type": "string"},
        "line": {"type": "integer", "description": "The first bad line"},
    },
}
_LINE_PROTOCOL = {
    "required": True,
    "content": {
        "text/plain": {
            "schema": {
                "type": "string",
                "description": "InfluxDB line protocol: a sensor per measurement, tag set and "
                "field key; a reading per numeric field value (strings are skipped)",
            },
            "example": "cpu,host=a usage_idle=98.5,procs=12i 1714564800000000000\n",
        }
    },
}


def _write_route(summary: str, target: str, precisions: list[str]) -> dict[str, Any]:
    def influx_error(description: str) -> dict[str, Any]:
        return {
            "description": description,
            "content": {"application/json": {"schema": _INFLUX_ERROR}},
        }

    def either_error(description: str) -> dict[str, Any]:
        """Refused before the route (tsapi's error) or by it (InfluxDB's)."""
        schema = {"oneOf": [_ERROR, _INFLUX_ERROR]}
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    return {
        "post": {
            "summary": summary,
            "description": "Answers as InfluxDB does. All or nothing: a bad line writes nothing.",
            "parameters": [
                _query(
                    target,
                    "Kept in each reading's metadata",
                    {"type": "string", "minLength": 1},
                    required=True,
                ),
                _query(
                    "precision",
                    "Unit of the timestamps (empty or absent: ns); truncated to microseconds",
                    {"type": "string", "enum": [*precisions, ""]},
                ),
                _CONTENT_ENCODING,
                _IDEMPOTENCY_KEY,
            ],
            "requestBody": _LINE_PROTOCOL,
            "responses": {
                "204": {"description": "Every line was written"},
                "400": influx_error(
                    "A bad line (nothing was written) or parameter, a gzip body that is not gzip, "
                    "or a malformed Idempotency-Key"
                ),
                "403": either_error("The key's scope or sensors do not allow this request"),
                "408": _error(
                    "The body stopped arriving or came too slowly (body_timeout, body_min_rate)"
                ),
                "409": influx_error(
                    "With dedupe = off, a reading for a sensor and instant already stored, "
                    "where readings has a unique index on (sensor, ts)"
                ),
                "413": influx_error("The body, decompressed, is over max_body_bytes_lineprotocol"),
                "415": influx_error("A Content-Encoding other than gzip"),
                "422": influx_error(
                    "Readings older than the retention period, or an Idempotency-Key already "
                    "used for another request"
                ),
                "503": either_error("The database is unavailable; retry"),
            },
        }
    }


_INFLUX_PATHS: dict[str, Any] = {
    "/api/v2/write": _write_route(
        "Write line protocol, as to InfluxDB 2 (org is accepted and not used)",
        "bucket",
        ["ns", "us", "ms", "s"],
    ),
    "/write": _write_route(
        "Write line protocol, as to InfluxDB 1 (rp, u and p are accepted and not used)",
        "db",
        ["n", "ns", "u", "us", "ms", "s", "m", "h"],
    ),
}

_READINGS_ARRAY = {"type": "array", "items": {"$ref": "#/components/schemas/Reading"}}
_READINGS_ENVELOPE = {
    "type": "object",
    "required": ["readings", "next"],
    "properties": {
        "readings": _READINGS_ARRAY,
        "next": {"type": "string", "nullable": True, "description": "The next page's cursor"},
    },
}

SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "tsapi",
        "version": __version__,
        "description": "An HTTP API for time-series sensor readings stored in PostgreSQL.",
    },
    "paths": {
        "/readings": {
            "post": {
                "summary": "Insert readings, all or none",
                "description": "NDJSON (application/x-ndjson) or CSV (text/csv) by Content-Type, "
                "else JSON whatever the Content-Type says (so `curl -d` works): an array of "
                "readings, or one reading object. NDJSON and CSV are parsed and written as they "
                "arrive, in one transaction, whatever their size. Any of them may be sent with "
                "Content-Encoding: gzip.",
                "parameters": [_CONTENT_ENCODING, _IDEMPOTENCY_KEY],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "oneOf": [
                                    {"type": "array", "items": _READING_IN},
                                    _READING_IN,
                                ]
                            }
                        },
                        "application/x-ndjson": {
                            "schema": {
                                "type": "string",
                                "description": "One reading object per line; blank lines "
                                "are ignored",
                            },
                            "example": '{"sensor": "6f3e43a4-d1c1-4cb6-b928-0ac0efaf84a5", '
                            '"value": 0.3, "ts": "2024-05-01T12:00:00Z"}\n',
                        },
                        "text/csv": {
                            "schema": {
                                "type": "string",
                                "description": "UTF-8, RFC 4180: a header naming sensor and "
                                "value, and optionally ts and metadata, in any order; then a "
                                "reading per record (empty ts: now(); metadata a JSON object)",
                            },
                            "example": "sensor,value,ts\r\n"
                            "6f3e43a4-d1c1-4cb6-b928-0ac0efaf84a5,0.3,2024-05-01T12:00:00Z\r\n",
                        },
                    },
                },
                "responses": {
                    "200": _json("How many readings were inserted", {"type": "integer"}),
                    "400": _error(
                        "The body is not JSON (or not an array or object), a CSV header is "
                        "bad, a gzip body is not gzip, or the Idempotency-Key is malformed"
                    ),
                    "408": _error(
                        "The body stopped arriving or came too slowly (body_timeout, body_min_rate)"
                    ),
                    "409": _error(
                        "With dedupe = off, a reading for a sensor and instant already stored, "
                        "where readings has a unique index on (sensor, ts)"
                    ),
                    "413": _error("The body or its number of readings is over the limit"),
                    "415": _error("A Content-Encoding other than gzip, or CSV not in UTF-8"),
                    "422": _error(
                        "Invalid readings, each named by row (JSON) or line (NDJSON, CSV), "
                        "field and reason; or an Idempotency-Key already used for another request"
                    ),
                    "503": _error("The database is unavailable; retry"),
                },
            },
            "get": {
                "summary": "Readings, newest first by default: a page at a time, or all",
                "description": "When more readings follow a page, its answer has a "
                '`Link: <...>; rel="next"` header (and, with `envelope=true`, a `next` cursor): '
                "following them walks every reading exactly once, even while readings are "
                "written. `limit=all` streams every reading from a server-side cursor, in any "
                "format. The format is `format=` if given, else the best of the Accept header, "
                "else JSON.",
                "parameters": [
                    _query(
                        "limit",
                        "How many readings, 1 to max_limit (default 100); `all` streams them all",
                        {"oneOf": [{"type": "integer", "minimum": 1}, {"enum": ["all"]}]},
                    ),
                    _query(
                        "sensor",
                        "Only these sensors; repeat it or separate UUIDs with commas",
                        {"type": "array", "items": {"type": "string", "format": "uuid"}},
                        style="form",
                        explode=True,
                    ),
                    _query("from", f"Earliest ts, inclusive: {_INSTANT_FORMS}", _INSTANT),
                    _query("to", f"Latest ts, exclusive: {_INSTANT_FORMS}", _INSTANT),
                    _METADATA_FILTER,
                    _query(
                        "order",
                        "By ts (then sensor, value, metadata)",
                        {"type": "string", "enum": ["desc", "asc"]},
                    ),
                    _query(
                        "cursor",
                        "Where to go on: the previous page's next cursor, with the same filters",
                        {"type": "string"},
                    ),
                    _query(
                        "format",
                        "The answer's format; wins over Accept",
                        {"type": "string", "enum": ["json", "ndjson", "csv"]},
                    ),
                    _query(
                        "envelope",
                        'JSON only: answer {"readings": [...], "next": cursor or null}',
                        {"type": "boolean"},
                    ),
                ],
                "responses": {
                    "200": {
                        "description": "The readings",
                        "headers": {
                            "Link": {
                                "description": '`<...>; rel="next"`: the next page, if any',
                                "schema": {"type": "string"},
                            }
                        },
                        "content": {
                            "application/json": {
                                "schema": {"oneOf": [_READINGS_ARRAY, _READINGS_ENVELOPE]}
                            },
                            "application/x-ndjson": {
                                "schema": {
                                    "type": "string",
                                    "description": "One Reading JSON object per line",
                                }
                            },
                            "text/csv": {
                                "schema": {
                                    "type": "string",
                                    "description": "RFC 4180, UTF-8: a header line "
                                    "ts,sensor,value,metadata, then a line per reading; value "
                                    "with its stored digits, metadata as JSON (empty if null)",
                                },
                                "example": "ts,sensor,value,metadata\r\n"
                                "2024-05-01T12:00:00.000000Z,"
                                '6f3e43a4-d1c1-4cb6-b928-0ac0efaf84a5,0.3,"{""room"": ""r1""}"\r\n',
                            },
                        },
                    },
                    "400": _error("A parameter is invalid; `parameter` names it"),
                    "503": _error("The database is unavailable; retry"),
                },
            },
        },
        "/healthz": {
            "get": {
                "summary": "The process is alive",
                "responses": {"200": _json("Alive", _status("ok"))},
            }
        },
        "/readyz": {
            "get": {
                "summary": "The database is reachable",
                "responses": {
                    "200": _json(
                        "Ready, and how readings are stored",
                        _status("ready", storage={"type": "string"}),
                    ),
                    "503": _json(
                        "The database is not reachable (with Retry-After)",
                        _status("unavailable", database={"type": "string"}),
                    ),
                },
            }
        },
        **_ANALYTICS_PATHS,
        **_INFLUX_PATHS,
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics of the process answering",
                "description": "Not served (a 404) when the `metrics` setting is off.",
                "responses": {
                    "200": {
                        "description": "Prometheus' text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    },
    "security": [{"apiKey": []}, {}],  # {}: none needed while no key exists (auth = auto)
    "components": {
        "securitySchemes": {
            "apiKey": {
                "type": "http",
                "scheme": "bearer",
                "description": "A key from `tsapi keys create`, as `Authorization: Bearer <key>` "
                "(or `Authorization: Token <key>`, as InfluxDB clients send it)",
            }
        },
        "schemas": {
            "Reading": {
                "type": "object",
                "required": ["ts", "sensor", "metadata", "value"],
                "properties": {
                    "ts": {**_TIMESTAMP, "example": "2024-05-01T12:00:00.000000Z"},
                    "sensor": {"type": "string", "format": "uuid", "nullable": True},
                    "metadata": {"type": "object", "nullable": True},
                    "value": {
                        "type": "number",
                        "nullable": True,
                        "description": "null for a NaN or infinity of an adopted table",
                    },
                },
            },
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {"type": "string"},
                    "parameter": {"type": "string", "description": "The query parameter"},
                    "header": {"type": "string", "description": "The request header"},
                    "errors": {
                        "type": "array",
                        "description": "Invalid readings: the first 100",
                        "items": {
                            "type": "object",
                            "required": ["field", "reason"],
                            "properties": {
                                "row": {"type": "integer", "description": "JSON: from 0"},
                                "line": {"type": "integer", "description": "NDJSON, CSV: from 1"},
                                "field": {"type": "string", "nullable": True},
                                "reason": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
    },
}


def _describe_auth(spec: dict[str, Any]) -> None:
    """The probes need no key; every other operation may be refused for its key. All but the
    probes may be refused for their rate. A route's own description of a status stays."""
    refusals = {
        "401": _error("No valid API key, while keys are required (see WWW-Authenticate)"),
        "403": _error("The key's scope or sensors do not allow this request"),
    }
    too_many = _error("Over the rate limit; retry after Retry-After seconds")
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            responses = operation["responses"]
            if path in OPEN:
                operation["security"] = []
            else:
                for status, response in refusals.items():
                    responses.setdefault(status, response)
            if path not in NOT_RATE_LIMITED:
                responses.setdefault("429", too_many)


_describe_auth(SPEC)

_DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>tsapi API</title>
  <link rel="stylesheet" href="/docs/static/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/static/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});
  </script>
</body>
</html>
"""


async def openapi_json(request: Request) -> Response:
    return json_response(SPEC)


async def docs(request: Request) -> Response:
    return HTMLResponse(_DOCS_PAGE)


routes = [
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", docs, methods=["GET"]),
    Mount("/docs/static", StaticFiles(directory=str(swagger_ui_path)), name="docs-static"),
]
