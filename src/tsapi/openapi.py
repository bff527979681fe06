"""The OpenAPI description of tsapi's HTTP API, and the interactive docs page that renders it."""

from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from tsapi import __version__
from tsapi.web import json_response

_ERROR = {"$ref": "#/components/schemas/Error"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, description: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "description": description, "schema": schema, **extra}


_TIMESTAMP = {"type": "string", "format": "date-time"}
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
                "description": "The body is parsed as JSON whatever its Content-Type (so "
                "`curl -d` works): an array of readings, or one reading object.",
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
                        }
                    },
                },
                "responses": {
                    "200": _json("How many readings were inserted", {"type": "integer"}),
                    "400": _error("The body is not JSON, or not an array or object"),
                    "413": _error("The body or its number of readings is over the limit"),
                    "422": _error("Invalid readings, each named by row, field and reason"),
                    "503": _error("The database is unavailable; retry"),
                },
            },
            "get": {
                "summary": "Readings, newest first by default",
                "parameters": [
                    _query("limit", "How many readings (default 100)", {"type": "integer"}),
                    _query(
                        "sensor",
                        "Only these sensors; repeat it or separate UUIDs with commas",
                        {"type": "array", "items": {"type": "string"}},
                        style="form",
                        explode=True,
                    ),
                    _query("from", "Earliest ts, inclusive (RFC 3339)", _TIMESTAMP),
                    _query("to", "Latest ts, exclusive (RFC 3339)", _TIMESTAMP),
                    _query("order", "By ts", {"type": "string", "enum": ["desc", "asc"]}),
                ],
                "responses": {
                    "200": _json(
                        "The readings",
                        {"type": "array", "items": {"$ref": "#/components/schemas/Reading"}},
                    ),
                    "400": _error("A parameter is invalid; `parameter` names it"),
                    "503": _error("The database is unavailable; retry"),
                },
            },
        },
        "/healthz": {
            "get": {
                "summary": "The process is alive",
                "responses": {"200": _json("Alive", {"type": "object"})},
            }
        },
        "/readyz": {
            "get": {
                "summary": "The database is reachable",
                "responses": {
                    "200": _json("Ready", {"type": "object"}),
                    "503": _json("The database is not reachable", {"type": "object"}),
                },
            }
        },
    },
    "components": {
        "schemas": {
            "Reading": {
                "type": "object",
                "required": ["ts", "sensor", "metadata", "value"],
                "properties": {
                    "ts": {**_TIMESTAMP, "example": "2024-05-01T12:00:00.000000Z"},
                    "sensor": {"type": "string", "format": "uuid", "nullable": True},
                    "metadata": {"type": "object", "nullable": True},
                    "value": {"type": "number"},
                },
            },
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {"type": "string"},
                    "parameter": {"type": "string"},
                    "errors": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "row": {"type": "integer"},
                                "field": {"type": "string", "nullable": True},
                                "reason": {"type": "string"},
                            },
                        },
                    },
                },
            },
        }
    },
}

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
