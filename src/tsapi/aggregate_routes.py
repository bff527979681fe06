"""HTTP routes for aggregates."""

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tsapi import formats
from tsapi.aggregate import AggregateQuery
from tsapi.aggregate_params import parse_aggregate_query
from tsapi.aggregates import run_aggregate
from tsapi.state import State

Row = dict[str, Any]


def _table(query: AggregateQuery) -> formats.Table[Row]:
    columns = (
        ("bucket", "sensor", *query.functions) if query.by_sensor else ("bucket", *query.functions)
    )

    def as_json(row: Row) -> Row:
        return {**row, "bucket": formats.format_ts(row["bucket"])}

    def as_csv(row: Row) -> list[object]:
        return [formats.format_ts(row["bucket"]), *(row.get(column) for column in columns[1:])]

    return formats.Table("buckets", columns, as_json, as_csv)


async def get_aggregate(request: Request) -> Response:
    state: State = request.app.state.tsapi
    settings = state.settings
    query = parse_aggregate_query(request.query_params, settings.max_points)
    output = formats.negotiate(request.query_params, request.headers.get("accept"))
    async with state.pool.acquire(timeout=settings.pool_timeout) as conn:
        rows = await run_aggregate(conn, query, settings.rollup_widths, settings.max_points)
    return formats.respond(output, _table(query), rows, None, {})


routes = [Route("/readings/aggregate", get_aggregate, methods=["GET"])]
