"""JSON ingest: 8 clients posting batches of 1,000 and of 100 readings to tsapi, against 8
connections doing a binary COPY of the same rows straight into the same table.

Run from the repository root: ``python -m benchmarks.ingest [--duration 10] [--database-url URL]``.
"""

import tempfile
from pathlib import Path

from benchmarks.common import (
    CLIENTS,
    Result,
    Row,
    argument_parser,
    batches,
    best,
    check_stored,
    copier,
    copy_payload,
    describe,
    direct_load,
    fresh_database,
    json_body,
    make_readings,
    metered_http_load,
    parse,
    report,
    reset,
    run_async,
    running_tsapi,
)

READINGS = 200_000  # distinct rows, posted in turn; every tenth carries metadata
# (batch size, goal in rows/s, goal as a share of the direct COPY) from issue #2
LOADS = [(1000, 100_000.0, 0.6), (100, 40_000.0, None)]


def main() -> None:
    args = parse(argument_parser(__doc__))
    readings = make_readings(READINGS)
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="tsapi-bench-") as tmp,
        fresh_database(args.database_url) as database_url,
        running_tsapi(database_url, Path(tmp) / "tsapi.log") as tsapi,
    ):
        machine = run_async(describe(database_url, embedded=args.database_url is None))
        url = f"{tsapi.base_url}/readings"
        for size, goal, goal_ratio in LOADS:
            chunks = batches(readings, size)
            payloads = [copy_payload(chunk) for chunk in chunks]
            bodies = [json_body(chunk) for chunk in chunks]
            direct = served = None
            for _ in range(args.rounds):  # interleaved; the best round of each counts
                run_async(reset(database_url))
                result = run_async(direct_load(database_url, args.duration, copier(payloads, size)))
                check_stored(database_url, result.count)
                direct = best(direct, result)

                run_async(reset(database_url))
                result = run_async(
                    metered_http_load(
                        args.client, url, bodies, args.duration, Path(tmp), tsapi, database_url
                    )
                )
                result = Result(result.count * size, result.seconds, result.cpu, result.latency_ms)
                check_stored(database_url, result.count)
                served = best(served, result)
            assert direct is not None and served is not None
            label = f"POST /readings, {size:,} rows/request"
            rows.append(Row(label, "rows/s", served, direct, goal, goal_ratio))
    report(
        [
            f"tsapi ingest benchmark: {machine}",
            f"{args.duration:g} s per load, best of {args.rounds} round(s), {CLIENTS} concurrent "
            f"clients, HTTP client {args.client}; {READINGS:,} distinct rows (500 sensors, ts "
            "given, every tenth with metadata) sent in turn",
            "tsapi: JSON bodies POSTed over keep-alive connections; direct: the same rows, "
            "pre-encoded once as binary COPY payloads,",
            "sent with COPY readings (ts, sensor, metadata, value) FROM STDIN (FORMAT binary), "
            f"one COPY per batch, from {CLIENTS} asyncpg connections",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
