"""Scaling out: 8 clients asking ``GET /readings?limit=100`` of a table of 200,000 readings, then
posting JSON batches of 1,000 readings, to tsapi run four ways on one database, in turn:

1. one worker, straight to PostgreSQL (the baseline);
2. ``--workers 2``, straight to PostgreSQL;
3. ``--workers 2`` through a PgBouncer of the benchmark's own, in transaction pooling mode
   (``database_pooler = "pgbouncer"``, ``direct_database_url`` straight to PostgreSQL);
4. one worker with the read cache on (``cache_ttl``), GET only: the same URL over and over, so
   mostly hits, against the baseline's uncached GET.

Run from the repository root: ``python -m benchmarks.scale [--duration 10] [--database-url URL]``
(wrk and PgBouncer must be installed).
"""

import argparse
import datetime as dt
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import (
    CLIENTS,
    Result,
    argument_parser,
    batches,
    best,
    check_page,
    check_stored,
    copy_payloads,
    describe,
    fresh_database,
    json_body,
    load_table,
    make_readings,
    metered_http_load,
    parse,
    print_table,
    reset,
    run_async,
    running_pgbouncer,
    running_tsapi,
)

ROWS = 200_000  # in the table; as many distinct readings, another seed, are posted in turn
BATCH = 1_000
LIMIT = 100
POOL_SIZE = 20  # PgBouncer's server connections
CACHE_TTL = 5.0
GET = f"GET /readings?limit={LIMIT}"
POST = f"POST /readings, {BATCH:,} rows/request"


@dataclass(frozen=True)
class Variant:
    name: str
    options: tuple[str, ...] = ()
    settings: tuple[tuple[str, str], ...] = ()  # TSAPI_* variables
    pooled: bool = False
    loads: tuple[str, ...] = (GET, POST)


TWO = ("--workers", "2")
VARIANTS = [
    Variant("1 worker, direct"),  # the baseline
    Variant("2 workers, direct", TWO),
    Variant("2 workers, PgBouncer", TWO, pooled=True),
    Variant("1 worker, cached", settings=(("TSAPI_CACHE_TTL", f"{CACHE_TTL:g}"),), loads=(GET,)),
]
BASELINE, CACHED = VARIANTS[0], VARIANTS[-1]
HEADER = (
    "variant",
    "load",
    "rate",
    "ratio",
    "tsapi",
    "postgres",
    "tsapi/unit",
    "postgres/unit",
    "median",
)


def main() -> None:
    args = parse(argument_parser(__doc__))
    # Timestamps ahead of the clock by more than the run can last: none is late for the rollups.
    lead = dt.timedelta(seconds=args.rounds * (7 * args.duration + 200) + 120)
    table = copy_payloads(make_readings(ROWS, lead=lead))
    bodies = [json_body(chunk) for chunk in batches(make_readings(ROWS, 3, lead), BATCH)]
    results: dict[tuple[Variant, str], Result] = {}
    with (
        tempfile.TemporaryDirectory(prefix="tsapi-bench-") as tmp,
        fresh_database(args.database_url) as database_url,
        running_pgbouncer(database_url, POOL_SIZE) as pooled_url,
    ):
        machine = run_async(describe(database_url, embedded=args.database_url is None))
        for _ in range(args.rounds):  # variants interleaved; the best round of each counts
            for variant in VARIANTS:
                found = measure(variant, args, Path(tmp), database_url, pooled_url, table, bodies)
                for load, result in found.items():
                    results[variant, load] = best(results.get((variant, load)), result)
    print(f"tsapi scale benchmark: {machine}")
    print(
        f"{args.duration:g} s per load, best of {args.rounds} round(s), {CLIENTS} concurrent "
        f"clients, HTTP client {args.client}\nGET: {ROWS:,} readings in the table, restored for "
        f"each variant; POST: {ROWS:,} other readings, in turn\nPgBouncer: transaction pooling, "
        f"{POOL_SIZE} server connections (its own CPU is not counted); cached: cache_ttl = "
        f"{CACHE_TTL:g} s\n"
    )
    table_rows: list[tuple[str, ...]] = [HEADER]
    for (variant, load), result in results.items():
        unit = "rows/s" if load == POST else "req/s"
        cpu, seconds, count = result.cpu, result.seconds, result.count
        table_rows.append(
            (
                variant.name,
                load,
                f"{result.rate:,.0f} {unit}",
                f"{result.rate / results[BASELINE, load].rate:.2f}",
                f"{cpu.tsapi / seconds:.2f}",
                f"{cpu.postgres / seconds:.2f}",
                f"{cpu.tsapi / count * 1e6:.2f} us",
                f"{cpu.postgres / count * 1e6:.2f} us",
                "" if result.latency_ms is None else f"{result.latency_ms:.1f} ms",
            )
        )
    print_table(table_rows)
    cached = results[CACHED, GET].rate / results[BASELINE, GET].rate
    print(f"\ncached / uncached GET (1 worker each): {cached:.2f}")
    print(
        "ratio: to the same load on 1 worker, direct; tsapi, postgres: cores kept busy by tsapi\n"
        "(all its processes) and by the database's backends; /unit: their CPU per row or request"
    )


def measure(
    variant: Variant,
    args: argparse.Namespace,
    tmp: Path,
    database_url: str,
    pooled_url: str,
    table: list[bytes],
    bodies: list[bytes],
) -> dict[str, Result]:
    """Each of the variant's loads once, on a tsapi of its own; ingest counted in rows."""
    settings = dict(variant.settings)
    if variant.pooled:
        settings["TSAPI_DATABASE_POOLER"] = "pgbouncer"
        settings["TSAPI_DIRECT_DATABASE_URL"] = database_url
    served_url = pooled_url if variant.pooled else database_url
    found = {}
    with running_tsapi(served_url, tmp / "tsapi.log", variant.options, settings) as tsapi:
        # The same table for every variant (tsapi's first start made the schema).
        run_async(reset(database_url))
        run_async(load_table(database_url, table))
        check_page(f"{tsapi.base_url}/readings?limit={LIMIT}", LIMIT)
        for load in variant.loads:
            posted = load == POST
            url = f"{tsapi.base_url}/readings" + ("" if posted else f"?limit={LIMIT}")
            result = run_async(
                metered_http_load(
                    args.client,
                    url,
                    bodies if posted else None,
                    args.duration,
                    tmp,
                    tsapi,
                    database_url,  # PostgreSQL itself, where the backends are seen
                )
            )
            if posted:  # in rows, which must all be stored
                result = Result(result.count * BATCH, result.seconds, result.cpu, result.latency_ms)
                check_stored(database_url, ROWS + result.count)
            found[load] = result
    return found


if __name__ == "__main__":
    main()
