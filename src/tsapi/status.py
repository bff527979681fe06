"""``tsapi db status``: where readings are stored (each partition or chunk with its bounds, size
and row estimate), how fresh the rollups are, and which policies apply."""

from datetime import datetime, timedelta
from typing import Any

from tsapi.db import Connection
from tsapi.durations import format_duration
from tsapi.formats import format_ts
from tsapi.settings import Settings
from tsapi.storage import Layout, detect_layout

_PARTITIONS = """
    SELECT name, lower, upper, row_estimate AS rows, bytes, NULL::boolean AS compressed
    FROM tsapi_partitions ORDER BY lower"""
_CHUNKS = """
    SELECT format('%I.%I', c.chunk_schema, c.chunk_name) AS name, c.range_start AS lower,
           c.range_end AS upper, c.is_compressed AS compressed, s.total_bytes AS bytes,
           approximate_row_count(format('%I.%I', c.chunk_schema, c.chunk_name)::regclass) AS rows
    FROM timescaledb_information.chunks c
    LEFT JOIN chunks_detailed_size('readings') s
           ON s.chunk_schema = c.chunk_schema AND s.chunk_name = c.chunk_name
    WHERE c.hypertable_schema = current_schema() AND c.hypertable_name = 'readings'
    ORDER BY c.range_start"""
_ROLLUPS = """
    SELECT s.width_s, s.materialized, s.published,
           (SELECT count(*) FROM tsapi_rollup_log l WHERE l.lo < s.published) AS pending,
           (SELECT min(lo) FROM tsapi_rollup_log l WHERE l.lo < s.published) AS pending_from,
           (SELECT max(hi) FROM tsapi_rollup_log l WHERE l.lo < s.published) AS pending_to
    FROM tsapi_rollup_state s ORDER BY s.width_s"""


async def gather(conn: Connection) -> dict[str, Any]:
    layout = await detect_layout(conn)
    pieces: list[Any] = []
    if layout is Layout.PARTITIONED:
        pieces = await conn.fetch(_PARTITIONS)
    elif layout is Layout.HYPERTABLE:
        pieces = await conn.fetch(_CHUNKS)
    return {
        "layout": layout,
        "timescaledb": await conn.fetchval(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
        ),
        "pieces": [dict(row) for row in pieces],
        "rollups": [dict(row) for row in await conn.fetch(_ROLLUPS)],
        "sensors": await conn.fetchval("SELECT count(*) FROM tsapi_sensors"),
        "now": await conn.fetchval("SELECT now()"),
    }


def _size(count: int | None) -> str:
    if count is None:
        return "?"
    size = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1024:
            return f"{size:.0f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def _when(ts: datetime | None) -> str:
    return "-" if ts is None else format_ts(ts)


def _policy(value: timedelta | None, what: str, available: bool, kept: str = "kept") -> str:
    if value is None:
        return kept
    return f"{what} older than {format_duration(value)}" + ("" if available else " (not available)")


def report(found: dict[str, Any], settings: Settings) -> list[str]:
    layout: Layout = found["layout"]
    hypertable = layout is Layout.HYPERTABLE
    lines = [f"storage: {layout.value}"]
    if hypertable:
        lines[0] += f" (TimescaleDB {found['timescaledb']})"
    if layout is Layout.PLAIN:
        lines.append("partitions: none (an adopted plain table)")
    else:
        lines.append(f"{'chunks' if hypertable else 'partitions'}: {len(found['pieces'])}")
    for piece in found["pieces"]:
        rows = "?" if piece["rows"] is None or piece["rows"] < 0 else f"~{piece['rows']}"
        state = {True: ", compressed", False: ", uncompressed"}.get(piece["compressed"], "")
        lines.append(
            f"  {piece['name']}  [{_when(piece['lower'])}, {_when(piece['upper'])})"
            f"  {rows} rows  {_size(piece['bytes'])}{state}"
        )
    lines.append("rollups:" if found["rollups"] else "rollups: none")
    for rollup in found["rollups"]:
        width = format_duration(timedelta(seconds=rollup["width_s"]))
        pending = (
            f"{rollup['pending']} late range(s) pending,"
            f" [{_when(rollup['pending_from'])}, {_when(rollup['pending_to'])}]"
            if rollup["pending"]
            else "no late ranges pending"
        )
        lines.append(
            f"  {width}: materialized up to {_when(rollup['materialized'])}"
            f" (published {_when(rollup['published'])}); {pending}"
        )
    lines.append(f"sensors summarized: {found['sensors']}")
    partitioned = layout is not Layout.PLAIN
    off = "off" if hypertable else "not available (needs TimescaleDB)"
    compress = _policy(settings.compress_after, "compress chunks", hypertable, off)
    lines += [
        "policies:",
        f"  retention: {_policy(settings.retention, 'drop readings', partitioned)}",
        f"  rollup retention: {_policy(settings.rollup_retention, 'drop rollups', partitioned)}",
        f"  compression: {compress}",
        f"  maintenance: every {settings.maintenance_interval:g} s, in every tsapi process",
    ]
    return lines
