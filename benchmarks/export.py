"""Exports: every reading through ``GET /readings?limit=all`` in JSON, NDJSON and CSV, against
PostgreSQL's own fastest export of the same rows in the same run, ``COPY (SELECT ...) TO STDOUT``
in CSV, to an asyncpg connection.

Run from the repository root: ``python -m benchmarks.export [--rows 2000000] [--rounds 3]``.
"""

import http.client
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from benchmarks.common import (
    argument_parser,
    describe,
    fresh_database,
    parse,
    print_table,
    run_async,
    running_tsapi,
)
from benchmarks.shapes import load_readings
from tsapi.db import Connection

FORMATS = ("json", "ndjson", "csv")
READ_BYTES = 1 << 16
SELECT_SQL = "SELECT ts, sensor, metadata, value FROM readings ORDER BY ts DESC, sensor DESC"


@dataclass(frozen=True)
class Export:
    seconds: float
    first_byte_ms: float
    size: int  # bytes


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--rows", type=int, default=2_000_000, help="readings (2000000)")
    args = parse(parser)
    with (
        tempfile.TemporaryDirectory(prefix="tsapi-bench-") as tmp,
        fresh_database(args.database_url) as database_url,
        running_tsapi(database_url, Path(tmp) / "tsapi.log") as tsapi,
    ):
        machine = run_async(describe(database_url, embedded=args.database_url is None))
        run_async(load_readings(database_url, args.rows))
        rounds: dict[str, list[Export]] = {name: [] for name in ("COPY", *FORMATS)}
        for _ in range(args.rounds):  # interleaved; the fastest round of each counts
            rounds["COPY"].append(run_async(_copy(database_url)))
            for name in FORMATS:
                rounds[name].append(_served(tsapi.host, tsapi.port, name))
    print(f"tsapi export benchmark: {machine}")
    print(f"{args.rows:,} readings (1,000 sensors, each with metadata); fastest of {args.rounds}")
    print(f"direct: COPY ({SELECT_SQL}) TO STDOUT WITH (FORMAT csv), read by asyncpg")
    direct = min(rounds["COPY"], key=lambda export: export.seconds)
    table = [("export", "rows/s", "MB/s", "first byte ms", "ratio to COPY")]
    for name, exports in rounds.items():
        fastest = min(exports, key=lambda export: export.seconds)
        label = "direct COPY, CSV" if name == "COPY" else f"GET /readings?limit=all&format={name}"
        table.append(
            (
                label,
                f"{args.rows / fastest.seconds:,.0f}",
                f"{fastest.size / fastest.seconds / 1e6:,.1f}",
                f"{fastest.first_byte_ms:.1f}",
                f"{direct.seconds / fastest.seconds:.2f}",
            )
        )
    print_table(table)


def _served(host: str, port: int, name: str) -> Export:
    client = http.client.HTTPConnection(host, port, timeout=600)
    began = time.perf_counter()
    client.request("GET", f"/readings?limit=all&format={name}")
    response = client.getresponse()
    if response.status != 200:
        raise RuntimeError(f"the {name} export answered {response.status}")
    size = len(response.read1(READ_BYTES))
    first_byte = time.perf_counter() - began
    while chunk := response.read1(READ_BYTES):
        size += len(chunk)
    seconds = time.perf_counter() - began
    client.close()
    return Export(seconds, first_byte * 1000, size)


async def _copy(database_url: str) -> Export:
    conn: Connection = await asyncpg.connect(database_url)
    size = 0
    first_byte: float | None = None

    async def sink(chunk: bytes) -> None:
        nonlocal size, first_byte
        if first_byte is None:
            first_byte = time.perf_counter() - began
        size += len(chunk)

    try:
        began = time.perf_counter()
        await conn.copy_from_query(SELECT_SQL, output=sink, format="csv")
        seconds = time.perf_counter() - began
    finally:
        await conn.close()
    assert first_byte is not None
    return Export(seconds, first_byte * 1000, size)


if __name__ == "__main__":
    main()
