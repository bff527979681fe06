"""What auth and metrics cost: wrk sending ``GET /readings?limit=100``, then POSTs of 1,000-row
batches, to three tsapi processes in turn on one database: without any middleware (the baseline),
with auth off (request ids, access log lines and metrics only), and with keys required and sent.

Run from the repository root: ``python -m benchmarks.auth [--duration 10] [--database-url URL]``
(wrk must be installed). Each load runs ``--rounds`` times per variant, interleaved; the best
round counts, as the least disturbed by the rest of the machine.
"""

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
from collections.abc import Iterator
from pathlib import Path

import httpx

from tsapi.embedded import EmbeddedPostgres

CONNECTIONS = 8
BATCH_ROWS = 1000
SEED_BATCHES = 100
# The baseline: the app built with no middleware at all.
BARE = (
    "import tsapi.middleware as m; m.stack = lambda settings: []; from tsapi.cli import cli; cli()"
)
VARIANTS = {"no middleware": ({}, False), "auth off": ({"TSAPI_AUTH": "off"}, False)}
VARIANTS["keys required"] = ({"TSAPI_AUTH": "required"}, True)


def batch_body(seed: int) -> bytes:
    sensors = [str(uuid.UUID(int=seed * 1000 + n, version=4)) for n in range(50)]
    rows = [
        {
            "sensor": sensors[n % 50],
            "value": n / 4,
            "ts": f"2024-05-01T00:{n // 60 % 60:02d}:{n % 60:02d}Z",
            **({"metadata": {"site": "a"}} if n % 10 == 0 else {}),
        }
        for n in range(BATCH_ROWS)
    ]
    return json.dumps(rows).encode()


@contextlib.contextmanager
def tsapi(database_url: str, port: int, variant: str, log: Path) -> Iterator[tuple[str, int]]:
    env, _ = VARIANTS[variant]
    python = [sys.executable, "-c", BARE] if variant == "no middleware" else [sys.executable]
    command = [*python, *([] if variant == "no middleware" else ["-m", "tsapi"])]
    command += ["serve", "--database-url", database_url, "--port", str(port)]
    env = {**os.environ, "TSAPI_LOG_FORMAT": "json", "TSAPI_LOG_LEVEL": "info", **env}
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
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
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load (10)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each load (3)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tsapi-bench-")))
        url = args.database_url or stack.enter_context(EmbeddedPostgres(work / "pg")).url
        body = work / "batch.json"
        body.write_bytes(batch_body(1))
        port = 18000 + os.getpid() % 1000
        with tsapi(url, port, "auth off", work / "tsapi.log") as (base, _):  # migrations, seed
            for seed in range(SEED_BATCHES):
                httpx.post(f"{base}/readings", content=batch_body(seed), timeout=60)
        key = subprocess.run(
            [sys.executable, "-m", "tsapi", "keys", "create", "--scope", "admin"],
            env={**os.environ, "TSAPI_DATABASE_URL": url},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        best: dict[tuple[str, str], float] = {}  # requests per second
        least: dict[tuple[str, str], float] = {}  # tsapi's CPU microseconds per request
        for _ in range(args.rounds):
            for variant, (_, keyed) in VARIANTS.items():
                with tsapi(url, port, variant, work / "tsapi.log") as (base, pid):
                    sent = key if keyed else None
                    for load, path, posted in (
                        ("GET /readings?limit=100", "/readings?limit=100", None),
                        (f"POST {BATCH_ROWS} rows", "/readings", body),
                    ):
                        cpu = process_cpu(pid)
                        rate = wrk(base + path, args.duration, sent, posted, work)
                        used = (process_cpu(pid) - cpu) / (rate * args.duration) * 1e6
                        best[variant, load] = max(best.get((variant, load), 0.0), rate)
                        least[variant, load] = min(least.get((variant, load), 1e9), used)
    print(
        f"{os.cpu_count()} CPUs, {CONNECTIONS} connections, best of {args.rounds} x "
        f"{args.duration:g} s, access log at info level. Throughput depends on whatever else "
        "runs on the machine; the tsapi process's CPU time per request much less.\n"
    )
    loads = sorted({load for _, load in best}, reverse=True)
    print(f"{'variant':<15}" + "".join(f"{load:>44}" for load in loads))
    for variant in VARIANTS:
        cells = []
        for load in loads:
            rate, bare = best[variant, load], best["no middleware", load]
            cpu, bare_cpu = least[variant, load], least["no middleware", load]
            cells.append(
                f"{rate:,.0f} req/s ({(rate / bare - 1) * 100:+.1f}%), "
                f"{cpu:,.0f} us ({(cpu / bare_cpu - 1) * 100:+.1f}%)"
            )
        print(f"{variant:<15}" + "".join(f"{cell:>44}" for cell in cells))


def process_cpu(pid: int) -> float:
    """User and system CPU seconds of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
