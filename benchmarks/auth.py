"""What auth and metrics cost: wrk sending ``GET /readings?limit=100``, then POSTs of 1,000-row
batches, to tsapi processes on one database: with neither (``metrics = false``, ``auth = off``:
the baseline), with metrics, with metrics and keys required and sent, the baseline again in a
process of its own as a control, and with no middleware at all (no request id or access line
either).

Run from the repository root: ``python -m benchmarks.auth [--duration 3] [--rounds 9]
[--database-url URL]`` (wrk must be installed). They run at once and take short bursts of
load in turn, round after round, each round starting with another; each variant is compared with
the baseline's burst of the same round, and the median of those ratios is reported. On a shared
machine whose speed drifts by tens of percent within a minute, and where two identical processes
differ by several percent (the control shows how much), timing cannot resolve a cost of a few
percent: ``--instructions`` counts instead the instructions each request takes, under valgrind
(Debian's package), which are the same from run to run."""

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median

import httpx

from tsapi.embedded import EmbeddedPostgres

CONNECTIONS = 8
BATCH_ROWS = 1000
SEED_BATCHES = 100
# The app built with no middleware at all: no request id, access line, body timeout, metrics or
# auth.
BARE = (
    "import tsapi.middleware as m; m.stack = lambda settings: []; from tsapi.cli import cli; cli()"
)
NO_MIDDLEWARE = "no middleware"
BASELINE = "neither"  # what the goal compares with: all but auth and metrics
# Each variant: its environment, and whether requests send a key.
VARIANTS: dict[str, tuple[dict[str, str], bool]] = {
    BASELINE: ({"TSAPI_AUTH": "off", "TSAPI_METRICS": "false"}, False),
    "metrics": ({"TSAPI_AUTH": "off"}, False),
    "metrics, keys": ({"TSAPI_AUTH": "required"}, True),
    # The control: a second process of the baseline's, whose difference from the baseline is the
    # measurement's noise alone (two identical processes differ by several percent in speed).
    "neither again": ({"TSAPI_AUTH": "off", "TSAPI_METRICS": "false"}, False),
    # What request ids, access lines and the body timeout cost, which the goal leaves aside.
    NO_MIDDLEWARE: ({}, False),
}


def batch_body(seed: int) -> bytes:
    """Rows with timestamps of their own: one second apart, batch after batch from 2024-05-01.
    The loads post batch 0, whose rows are older than every seeded one (seeds count from 1), so
    the newest 100 that the GETs read stay the same however many POSTs ran before them."""
    sensors = [str(uuid.UUID(int=seed * 1000 + n, version=4)) for n in range(50)]
    start = datetime(2024, 5, 1, tzinfo=UTC) + timedelta(seconds=seed * BATCH_ROWS)
    rows = [
        {
            "sensor": sensors[n % 50],
            "value": n / 4,
            "ts": (start + timedelta(seconds=n)).isoformat(),
            **({"metadata": {"site": "a"}} if n % 10 == 0 else {}),
        }
        for n in range(BATCH_ROWS)
    ]
    return json.dumps(rows).encode()


@contextlib.contextmanager
def tsapi(
    database_url: str, port: int, variant: str, log: Path, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, int]]:
    """A tsapi process of the variant, run under ``prefix`` (valgrind, say) if given."""
    env, _ = VARIANTS[variant]
    bare = variant == NO_MIDDLEWARE
    command = [sys.executable, *(["-c", BARE] if bare else ["-m", "tsapi"])]
    command += ["serve", "--database-url", database_url, "--port", str(port)]
    env = {**os.environ, "TSAPI_LOG_FORMAT": "json", "TSAPI_LOG_LEVEL": "info", **env}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*prefix, *command], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + (600 if prefix else 60)  # valgrind: fifty times slower
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"tsapi did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield base, process.pid
    finally:
        process.terminate()
        process.wait(30)


def wrk(url: str, seconds: float, key: str | None, body: Path | None, work: Path) -> float:
    """Requests per second, every one of them answered 2xx."""
    script = work / "load.lua"
    script.write_text(
        ""
        if body is None
        else f'local f = io.open("{body}", "rb")\nwrk.method = "POST"\nwrk.body = f:read("*a")\n'
        'f:close()\nwrk.headers["Content-Type"] = "application/json"\n'
    )
    command = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "-s", str(script), url]
    if key is not None:
        command += ["-H", f"Authorization: Bearer {key}"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in output or "Socket errors" in output:
        sys.exit(f"failed requests:\n{output}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", output)
    assert found is not None, output
    return float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", help="a PostgreSQL URL (default: embedded)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per burst (3)")
    parser.add_argument("--rounds", type=int, default=9, help="bursts of each load (9)")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per request under valgrind instead of timing bursts",
    )
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tsapi-bench-")))
        url = args.database_url or stack.enter_context(EmbeddedPostgres(work / "pg")).url
        body = work / "batch.json"
        body.write_bytes(batch_body(0))
        port = 18000 + os.getpid() % 1000
        with tsapi(url, port, BASELINE, work / "tsapi.log") as (base, _):  # migrations, seed
            for seed in range(1, SEED_BATCHES + 1):
                httpx.post(f"{base}/readings", content=batch_body(seed), timeout=60)
        key = subprocess.run(
            [sys.executable, "-m", "tsapi", "keys", "create", "--scope", "admin"],
            env={**os.environ, "TSAPI_DATABASE_URL": url},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        loads = (
            ("GET /readings?limit=100", "/readings?limit=100", None),
            (f"POST {BATCH_ROWS} rows", "/readings", body),
        )
        if args.instructions:
            count_instructions(url, port, key, loads, work)
        else:
            measure_rates(url, port, key, loads, work, args.rounds, args.duration, stack)


Load = tuple[str, str, Path | None]  # its name, its path, and the body it posts


def measure_rates(
    url: str,
    port: int,
    key: str,
    loads: tuple[Load, ...],
    work: Path,
    rounds: int,
    duration: float,
    stack: contextlib.ExitStack,
) -> None:
    rates: dict[tuple[str, str], list[float]] = defaultdict(list)  # a rate per round
    cpus: dict[tuple[str, str], list[float]] = defaultdict(list)  # CPU us per request
    servers: dict[str, tuple[str, int]] = {}
    for n, variant in enumerate(VARIANTS):  # all at once: each burst pairs with its round's
        servers[variant] = stack.enter_context(tsapi(url, port + n, variant, work / f"{n}.log"))
    for load, path, posted in loads:  # every GET first, on the seeded rows alone
        for round_ in range(rounds):
            # Each round starts with another variant: none always follows the same one.
            turn = round_ % len(VARIANTS)
            for variant in [*VARIANTS][turn:] + [*VARIANTS][:turn]:
                base, pid = servers[variant]
                sent = key if VARIANTS[variant][1] else None
                cpu = process_cpu(pid)
                rate = wrk(base + path, duration, sent, posted, work)
                rates[variant, load].append(rate)
                cpus[variant, load].append((process_cpu(pid) - cpu) / (rate * duration) * 1e6)
    print(
        f"{os.cpu_count()} CPUs, {CONNECTIONS} connections, {rounds} rounds of {duration:g} s "
        "bursts, access log at info level. Each cell: the median rate and tsapi's CPU per "
        "request, and in brackets the median over rounds of their ratio to the baseline's in "
        "the same round.\n"
    )
    print(f"{'variant':<15}" + "".join(f"{load:>44}" for load, _, _ in loads))
    for variant in VARIANTS:
        cells = []
        for load, _, _ in loads:
            its_rates, its_cpus = rates[variant, load], cpus[variant, load]
            pairs = zip(its_rates, rates[BASELINE, load], strict=True)
            rate_change = median(a / b for a, b in pairs) - 1
            cpu_change = (
                median(a / b for a, b in zip(its_cpus, cpus[BASELINE, load], strict=True)) - 1
            )
            cells.append(
                f"{median(its_rates):,.0f} req/s ({rate_change * 100:+.1f}%), "
                f"{median(its_cpus):,.0f} us ({cpu_change * 100:+.1f}%)"
            )
        print(f"{variant:<15}" + "".join(f"{cell:>44}" for cell in cells))


# Requests counted per load, after as many again to warm up: instructions vary by less than 1%
# between runs, so a few suffice.
COUNTED = {"GET": 200, "POST": 20}


def count_instructions(url: str, port: int, key: str, loads: tuple[Load, ...], work: Path) -> None:
    """Instructions per request, counted by valgrind's callgrind: the same count whatever else
    the machine does, where timings drift by more than the difference measured."""
    counts: dict[tuple[str, str], float] = {}
    for n, variant in enumerate(VARIANTS):
        out = work / f"callgrind-{n}"
        prefix = ("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}")
        log = work / f"valgrind-{n}.log"
        with tsapi(url, port + n, variant, log, prefix) as (base, pid):
            sent = {"Authorization": f"Bearer {key}"} if VARIANTS[variant][1] else {}
            with httpx.Client(base_url=base, headers=sent, timeout=600) as client:
                for load, path, posted in loads:
                    method = load.split()[0]
                    content = posted.read_bytes() if posted else None
                    for _warm_then_counted in range(2):
                        for _ in range(COUNTED[method]):
                            client.request(method, path, content=content).raise_for_status()
                        # Each dump holds what was run since the one before.
                        subprocess.run(["callgrind_control", "--dump", str(pid)], check=True)
                    dumps = sorted(work.glob(f"callgrind-{n}.*"), key=lambda f: int(f.suffix[1:]))
                    summary = re.search(r"^summary: (\d+)", dumps[-1].read_text(), re.M)
                    assert summary is not None, dumps[-1]
                    counts[variant, load] = int(summary.group(1)) / COUNTED[method]
    print("Instructions per request (valgrind --tool=callgrind), and their change:\n")
    print(f"{'variant':<15}" + "".join(f"{load:>30}" for load, _, _ in loads))
    for variant in VARIANTS:
        cells = [
            f"{counts[variant, load] / 1e6:,.2f} M "
            f"({(counts[variant, load] / counts[BASELINE, load] - 1) * 100:+.1f}%)"
            for load, _, _ in loads
        ]
        print(f"{variant:<15}" + "".join(f"{cell:>30}" for cell in cells))


def process_cpu(pid: int) -> float:
    """User and system CPU seconds of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
