"""Issue #3's query shapes over a table of sensors reading every 10 s: each through tsapi (with
default settings, and with the read cache on) and as the equivalent SQL straight on the raw rows,
in the same run; the raw-row shapes also through benchmarks.floor, the least an HTTP API on
tsapi's parts can do for them. Single-client p50/p99 latency, and requests/s from 8 concurrent
clients.

Run from the repository root: ``python -m benchmarks.shapes [--rows 10000000] [--duration 5]``.
"""

import argparse
import asyncio
import functools
import http.client
import json
import math
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from benchmarks.common import (
    CLIENTS,
    Tsapi,
    argument_parser,
    describe,
    direct_load,
    fresh_database,
    http_load,
    parse,
    run_async,
    running_tsapi,
)
from benchmarks.floor import running_floor
from tsapi.db import Connection

SENSORS = 1_000
STEP_SECONDS = 10
SAMPLES = 200  # single-client requests per shape for p50/p99...
SAMPLING_SECONDS = 30.0  # ...or fewer, at least MIN_SAMPLES, for what takes seconds a time
MIN_SAMPLES = 5
HISTORY_SENSORS = 10  # of SENSORS, reading hourly in the --history-days before the readings
SLOW_GRACE = 600.0  # seconds the 8-client direct load may overrun its duration
SENSOR = "00000000-0000-0000-0000-000000000007"
# The read cache on: nothing is written while the shapes are asked, so after the first request
# each answer comes from the cache, after the round trip that checks no write came meanwhile.
CACHED = {"TSAPI_CACHE_TTL": "60"}
FLOOR = "floor"
ORIGIN = "timestamptz '0001-01-01 00:00:00+00'"


@dataclass(frozen=True)
class Shape:
    name: str
    path: str  # through tsapi
    sql: str  # the same answer computed directly from the raw rows
    # Columns whose values must be the direct SQL's, row by row, besides the number of rows (the
    # raw shapes pick rows among those sharing a timestamp in an order of their own).
    compared: tuple[str, ...] = ()
    floor: bool = False  # whether benchmarks.floor answers it too: the raw-row shapes


SHAPES = [
    Shape(
        "latest 100 rows",
        "/readings?limit=100",
        "SELECT ts, sensor, metadata, value FROM readings ORDER BY ts DESC LIMIT 100",
        floor=True,
    ),
    Shape(
        "one sensor, raw, 1 h",
        f"/readings?sensor={SENSOR}&from=-1h&limit=10000",
        "SELECT ts, sensor, metadata, value FROM readings"  # noqa: S608 - constants only
        f" WHERE sensor = '{SENSOR}' AND ts >= now() - interval '1 hour' ORDER BY ts DESC",
        floor=True,
    ),
    Shape(
        "one sensor, hourly avg/min/max, 24 h",
        f"/readings/aggregate?bucket=1h&fn=avg,min,max&sensor={SENSOR}&from=-24h",
        f"SELECT date_bin('1 hour', ts, {ORIGIN}) AS bucket, avg(value), min(value), max(value)"  # noqa: S608
        f" FROM readings WHERE sensor = '{SENSOR}' AND ts >= now() - interval '24 hours'"
        " GROUP BY 1 ORDER BY 1",
        ("avg", "min", "max"),
    ),
    Shape(
        "latest value of every sensor",
        "/readings/latest",
        "SELECT DISTINCT ON (sensor) ts, sensor, metadata, value FROM readings"
        " ORDER BY sensor, ts DESC, value DESC",
        ("value",),
    ),
    Shape(
        "per-minute avg of all sensors, 1 h",
        "/readings/aggregate?bucket=1m&fn=avg&group=none&from=-1h",
        f"SELECT date_bin('1 minute', ts, {ORIGIN}) AS bucket, avg(value) FROM readings"  # noqa: S608
        " WHERE ts >= now() - interval '1 hour' GROUP BY 1 ORDER BY 1",
        ("avg",),
    ),
]


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000, help="readings (10000000)")
    parser.add_argument(
        "--history-days",
        type=int,
        default=0,
        help="days of daily partitions before the readings, each holding an hourly reading of"
        f" {HISTORY_SENSORS} sensors: what retention keeps after months (0)",
    )
    args = parse(parser)
    with (
        tempfile.TemporaryDirectory(prefix="tsapi-bench-") as tmp,
        fresh_database(args.database_url) as database_url,
        running_tsapi(database_url, Path(tmp) / "tsapi.log") as tsapi,
        running_tsapi(database_url, Path(tmp) / "cached.log", settings=CACHED) as cached,
        running_floor(database_url, Path(tmp) / "floor.log") as floor,
    ):
        machine = run_async(describe(database_url, embedded=args.database_url is None))
        began = time.monotonic()
        run_async(load_readings(database_url, args.rows, args.history_days))
        print(
            f"loaded {args.rows:,} readings and their rollups in {time.monotonic() - began:.0f} s"
        )
        table = [("shape", "side", "p50 ms", "p99 ms", f"req/s ({CLIENTS} clients)", "p50 ratio")]
        for shape in SHAPES:
            servers = [("tsapi", tsapi), ("tsapi, read cache", cached)]
            if shape.floor:
                servers.append((FLOOR, floor))
            for _name, server in servers:
                run_async(check_answer(database_url, server, shape))
            sides = [
                (name, *_served(server, shape.path, args, Path(tmp))) for name, server in servers
            ]
            direct = run_async(direct_latencies(database_url, shape.sql))
            # Eight at once of SQL that takes seconds may rightly overrun the duration by minutes.
            direct_rate = run_async(
                direct_load(database_url, args.duration, _query(shape.sql), grace=SLOW_GRACE)
            )
            for side, times, rate in [*sides, ("direct SQL", direct, direct_rate.rate)]:
                ratio = statistics.median(times) / statistics.median(direct)
                table.append(
                    (
                        shape.name,
                        side,
                        f"{statistics.median(times):.2f}",
                        f"{_p99(times):.2f}",
                        f"{rate:,.0f}",
                        f"{ratio:.2f}" if times is not direct else "",
                    )
                )
    print(f"tsapi query shapes: {machine}")
    print(f"{args.rows:,} readings: {SENSORS} sensors every {STEP_SECONDS} s up to now")
    if args.history_days:
        print(f"before them, {args.history_days} days of partitions of sparse history")
    print("tsapi: default settings; tsapi, read cache: cache_ttl = 60, answers served from it")
    print(f"{FLOOR}: tsapi's query and JSON on the same uvicorn, nothing else (benchmarks.floor)")
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def _served(
    tsapi: Tsapi, path: str, args: argparse.Namespace, work: Path
) -> tuple[list[float], float]:
    """Single-client latencies of one shape, and the requests/s of CLIENTS at once."""
    client = http.client.HTTPConnection(tsapi.host, tsapi.port, timeout=60)
    times = latencies(functools.partial(get, client, path))
    client.close()
    return times, http_load(args.client, f"{tsapi.base_url}{path}", None, args.duration, work).rate


def get(client: http.client.HTTPConnection, path: str) -> None:
    """One request on a kept-alive connection, as the direct side keeps its connection."""
    client.request("GET", path)
    response = client.getresponse()
    response.read()
    if response.status != 200:
        raise RuntimeError(f"GET {path} answered {response.status}")


async def check_answer(database_url: str, tsapi: Tsapi, shape: Shape) -> None:
    """tsapi answers what the direct SQL does: as many rows, and the same values in the columns
    compared. Timing a wrong answer would be worthless."""
    client = http.client.HTTPConnection(tsapi.host, tsapi.port, timeout=60)
    conn: Connection = await asyncpg.connect(database_url)
    try:
        # A relative window's edge may pass a reading between the two questions: asked again.
        for _attempt in range(3):
            client.request("GET", shape.path)
            answer = json.loads(client.getresponse().read())
            rows = await conn.fetch(shape.sql)
            if len(answer) == len(rows) and all(
                math.isclose(float(mine[column]), float(row[column]), rel_tol=1e-9)
                for mine, row in zip(answer, rows, strict=True)
                for column in shape.compared
            ):
                return
    finally:
        client.close()
        await conn.close()
    raise RuntimeError(f"{shape.name}: tsapi's answer is not the direct SQL's: {shape.path}")


def _enough(times: list[float], began: float) -> bool:
    return len(times) >= SAMPLES or (
        len(times) >= MIN_SAMPLES and time.perf_counter() - began > SAMPLING_SECONDS
    )


def latencies(
    request: Callable[[], None], enough: Callable[[list[float], float], bool] = _enough
) -> list[float]:
    """Milliseconds each request took, after one to warm, until ``enough(times, began)``."""
    request()  # warm
    times: list[float] = []
    began = time.perf_counter()
    while not enough(times, began):
        start = time.perf_counter()
        request()
        times.append((time.perf_counter() - start) * 1000)
    return times


async def direct_latencies(database_url: str, sql: str) -> list[float]:
    conn: Connection = await asyncpg.connect(database_url)
    try:
        await conn.fetch(sql)
        times: list[float] = []
        began = time.perf_counter()
        while not _enough(times, began):
            start = time.perf_counter()
            await conn.fetch(sql)
            times.append((time.perf_counter() - start) * 1000)
        return times
    finally:
        await conn.close()


def _query(sql: str) -> Callable[[Connection, int], Awaitable[int]]:
    async def run(conn: Connection, index: int) -> int:
        await conn.fetch(sql)
        return 1

    return run


def _p99(times: list[float]) -> float:
    return sorted(times)[int(len(times) * 0.99) - 1]


async def load_readings(database_url: str, count: int, history_days: int = 0) -> None:
    """Readings generated in the database itself, ending now, after ``history_days`` of sparse
    ones; then the rollups tsapi keeps for them (its refresher materializes the history) and fresh
    statistics."""
    steps = count // SENSORS
    conn: Connection = await asyncpg.connect(database_url)
    try:
        start = f"now() - interval '{steps * STEP_SECONDS} seconds'"
        await conn.execute(
            "SELECT tsapi_ensure_partitions(ARRAY(SELECT generate_series("
            f"{start} - interval '{history_days + 1} days', now(),"
            " interval '1 day')), interval '1 day')"
        )
        await conn.execute(
            "INSERT INTO readings (ts, sensor, value)"  # noqa: S608
            f" SELECT {start} - n * interval '1 hour',"
            " ('00000000-0000-0000-0000-' || lpad(s::text, 12, '0'))::uuid, n % 100"
            f" FROM generate_series(1, {history_days * 24}) AS n,"
            f" generate_series(1, {HISTORY_SENSORS}) AS s"
        )
        for first in range(0, steps, 500):
            await conn.execute(
                "INSERT INTO readings (ts, sensor, metadata, value)"  # noqa: S608
                f" SELECT date_bin('{STEP_SECONDS} seconds', now(), {ORIGIN})"
                f" - n * interval '{STEP_SECONDS} seconds',"
                " ('00000000-0000-0000-0000-' || lpad(s::text, 12, '0'))::uuid,"
                " jsonb_build_object('room', 'r' || s % 50), round((random() * 100)::numeric, 2)"
                f" FROM generate_series($1::int, $2::int) AS n, generate_series(1, {SENSORS}) AS s",
                first,
                min(first + 499, steps - 1),
            )
        # Written around tsapi: rows older than what the refresher had already rolled up would
        # stay out of the rollups. Their range is logged as tsapi's own writes log theirs.
        await conn.execute(
            "INSERT INTO tsapi_rollup_log (lo, hi) SELECT min(ts), max(ts) FROM readings"
        )
        await conn.execute("ANALYZE")
        # Until every width is materialized up to its last complete bucket (give or take a
        # refresh), as a refresher keeping up with live writes leaves it, the logged range too.
        while not await conn.fetchval(
            "SELECT bool_and(materialized >= now() - make_interval(secs => width_s)"
            " - interval '2 minutes') AND NOT EXISTS (SELECT FROM tsapi_rollup_log)"
            " FROM tsapi_rollup_state"
        ):
            await asyncio.sleep(1)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
