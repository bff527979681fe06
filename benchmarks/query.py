"""Reading back: 8 clients asking tsapi for ``GET /readings?limit=100``, against 8 asyncpg
connections running the SQL that tsapi runs for it, straight on the same database.

Run from the repository root: ``python -m benchmarks.query [--duration 10] [--database-url URL]``.
"""

import tempfile
from pathlib import Path

from benchmarks.common import (
    CLIENTS,
    Row,
    argument_parser,
    best,
    check_page,
    copy_payloads,
    describe,
    direct_load,
    fresh_database,
    load_table,
    make_readings,
    metered_http_load,
    parse,
    report,
    run_async,
    running_tsapi,
)
from tsapi.db import Connection
from tsapi.query import ReadingsQuery

LIMIT = 100
GOAL = 1_500.0  # requests/s, from issue #2


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--rows", type=int, default=200_000, help="readings in the table (200000)")
    args = parse(parser)
    sql, sql_args = ReadingsQuery(limit=LIMIT).sql()  # what tsapi runs for the request

    async def query(conn: Connection, index: int) -> int:
        await conn.fetch(sql, *sql_args)
        return 1

    with (
        tempfile.TemporaryDirectory(prefix="tsapi-bench-") as tmp,
        fresh_database(args.database_url) as database_url,
        running_tsapi(database_url, Path(tmp) / "tsapi.log") as tsapi,
    ):
        machine = run_async(describe(database_url, embedded=args.database_url is None))
        run_async(load_table(database_url, copy_payloads(make_readings(args.rows))))
        url = f"{tsapi.base_url}/readings?limit={LIMIT}"
        check_page(url, LIMIT)
        direct = served = None
        for _ in range(args.rounds):  # interleaved; the best round of each counts
            direct = best(direct, run_async(direct_load(database_url, args.duration, query)))
            result = run_async(
                metered_http_load(
                    args.client, url, None, args.duration, Path(tmp), tsapi, database_url
                )
            )
            served = best(served, result)
    assert direct is not None and served is not None
    rows = [Row(f"GET /readings?limit={LIMIT}", "req/s", served, direct, GOAL)]
    report(
        [
            f"tsapi query benchmark: {machine}",
            f"{args.duration:g} s per load, best of {args.rounds} round(s), {CLIENTS} concurrent "
            f"clients, HTTP client {args.client}; {args.rows:,} readings in the table",
            "tsapi: GET over keep-alive connections, answered as JSON; direct: the SQL tsapi runs "
            f"for it, from {CLIENTS} asyncpg connections, rows decoded but not formatted:",
            f"  {' '.join(sql.split())}  -- {sql_args}",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
