"""Two versions of tsapi on one database, asked issue #3's query shapes in alternation: each
version's single-client p50, the change between them, and the direct SQL's p50, in one run. For a
change smaller than what the machine drifts between two runs of ``benchmarks.shapes``.

Run from the repository root, with the version to compare checked out elsewhere, e.g.
``git worktree add /tmp/before <commit>``, then
``python -m benchmarks.versions --before /tmp/before/src [--rows 3000000] [--rounds 4]``.
"""

import argparse
import functools
import http.client
import logging
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import structlog

from benchmarks.common import (
    Tsapi,
    check_local,
    describe,
    fresh_database,
    print_table,
    run_async,
    running_tsapi,
)
from benchmarks.shapes import SHAPES, check_answer, direct_latencies, get, latencies, load_readings

PER_ROUND = 200  # requests to each version per shape and round
THIS_VERSION = Path(__file__).resolve().parent.parent / "src"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--database-url",
        help="a local PostgreSQL 14+ superuser URL: a fresh database is created on it and dropped "
        "afterwards (default: a fresh embedded PostgreSQL in a temporary directory)",
    )
    parser.add_argument(
        "--before", type=Path, required=True, help="the src folder of the version to compare"
    )
    parser.add_argument(
        "--after", type=Path, default=THIS_VERSION, help="the src folder compared (this one's)"
    )
    parser.add_argument("--rows", type=int, default=3_000_000, help="readings (3000000)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of every shape (4)")
    parser.add_argument(
        "--shape", action="append", help="only shapes whose name holds this (repeatable)"
    )
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.database_url is not None:
        check_local(args.database_url)
    versions = {"before": args.before.resolve(), "after": args.after.resolve()}
    for source in versions.values():
        _check_source(source)
    shapes = [s for s in SHAPES if not args.shape or any(part in s.name for part in args.shape)]
    times: dict[tuple[str, str], list[float]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="tsapi-bench-") as tmp,
        fresh_database(args.database_url) as database_url,
        ExitStack() as stack,
    ):
        servers = {
            name: stack.enter_context(
                running_tsapi(
                    database_url, Path(tmp) / f"{name}.log", settings={"PYTHONPATH": str(source)}
                )
            )
            for name, source in versions.items()
        }
        machine = run_async(describe(database_url, embedded=args.database_url is None))
        run_async(load_readings(database_url, args.rows))
        for shape in shapes:
            for server in servers.values():
                run_async(check_answer(database_url, server, shape))
        direct = {s.name: run_async(direct_latencies(database_url, s.sql)) for s in shapes}
        for _round in range(args.rounds):
            for name, path in [("/healthz", "/healthz"), *((s.name, s.path) for s in shapes)]:
                for version, server in servers.items():
                    times.setdefault((name, version), []).extend(_timed(server, path))
    print(f"tsapi versions: {machine}")
    print(f"{args.rows:,} readings; before: {versions['before']}, after: {versions['after']}")
    print(f"{args.rounds} rounds of {PER_ROUND} requests to each version, alternating; p50 in ms")
    table = [("shape", "before", "after", "change", "direct SQL")]
    for name in ["/healthz", *(s.name for s in shapes)]:
        before, after = (statistics.median(times[name, v]) for v in ("before", "after"))
        sql = f"{statistics.median(direct[name]):.2f}" if name in direct else ""
        table.append((name, f"{before:.2f}", f"{after:.2f}", f"{after / before - 1:+.0%}", sql))
    print_table(table)


def _check_source(source: Path) -> None:
    """The folder holds a tsapi, and it is that one a process started on it imports."""
    imported = subprocess.run(
        [sys.executable, "-c", "import tsapi; print(tsapi.__file__)"],
        env={"PYTHONPATH": str(source)},
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if not imported.startswith(str(source)):
        sys.exit(f"{source} is not the src folder of a tsapi (it imports {imported or 'none'})")


def _timed(server: Tsapi, path: str) -> list[float]:
    """Latencies of PER_ROUND requests on a connection of their own (an idle one would be closed
    by the server's keep-alive timeout while the other version is asked)."""
    client = http.client.HTTPConnection(server.host, server.port, timeout=60)
    try:
        return latencies(
            functools.partial(get, client, path), lambda times, began: len(times) >= PER_ROUND
        )
    finally:
        client.close()


if __name__ == "__main__":
    main()
