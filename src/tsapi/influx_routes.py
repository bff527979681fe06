"""InfluxDB's write routes, so that Telegraf, InfluxDB's client libraries and anything else that
writes line protocol to InfluxDB 2 (``/api/v2/write``) or 1 (``/write``) can write to tsapi
unchanged. They answer as InfluxDB does: 204, or an error ``{"code", "message"}`` (400 for a bad
line, naming it, and then nothing is written; 413 when too large)."""

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tsapi import streaming
from tsapi.errors import ApiError
from tsapi.parsers import LineError
from tsapi.parsers.lineprotocol import LineProtocolParser
from tsapi.state import State
from tsapi.web import json_response

_S = 10**9
V2_PRECISIONS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": _S}
V1_PRECISIONS = {**V2_PRECISIONS, "n": 1, "u": 1_000, "m": 60 * _S, "h": 3600 * _S}
_CODES = {403: "forbidden", 503: "unavailable"}  # InfluxDB's error codes; others are "invalid"


async def write_v2(request: Request) -> Response:
    """POST /api/v2/write?bucket=...&org=...&precision=ns|us|ms|s; org is not kept."""
    return await _write(request, "bucket", V2_PRECISIONS)


async def write_v1(request: Request) -> Response:
    """POST /write?db=...&precision=n|u|ms|s|m|h; rp, u and p are not used."""
    return await _write(request, "db", V1_PRECISIONS)


async def _write(request: Request, target: str, precisions: dict[str, int]) -> Response:
    state: State = request.app.state.tsapi
    params = request.query_params
    name, precision = params.get(target), params.get("precision") or "ns"
    if not name:
        return _error(400, f"the {target} query parameter is required")
    if "\x00" in name:  # it is kept in each reading's metadata, which jsonb refuses it in
        return _error(400, f"the {target} query parameter cannot contain \\u0000")
    if precision not in precisions:
        return _error(400, f"precision must be one of {', '.join(precisions)}, not {precision!r}")
    parser = LineProtocolParser({target: name}, precisions[precision])
    limit = state.settings.max_body_bytes_lineprotocol
    try:
        return await streaming.ingest(request, state, parser, limit, _no_content)
    except streaming.BadLines as exc:
        lines = "\n".join(f"line {error.line}: {_describe(error)}" for error in exc.lines)
        message = f"{exc.message}; errors encountered on line(s):\n{lines}"
        return _error(400, message, line=exc.lines[0].line)
    except ApiError as exc:
        return _error(exc.status, exc.message)


def _no_content(inserted: int) -> Response:
    return Response(status_code=204)


def _describe(error: LineError) -> str:
    return error.reason if error.field is None else f"field {error.field!r}: {error.reason}"


def _error(status: int, message: str, **extra: int) -> Response:
    code = _CODES.get(status, "invalid")
    return json_response({"code": code, "message": message, **extra}, status)


routes = [
    Route("/api/v2/write", write_v2, methods=["POST"]),
    Route("/write", write_v1, methods=["POST"]),
]
