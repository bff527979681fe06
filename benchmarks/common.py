"""What both benchmarks share: a fresh database, a tsapi process on it, realistic readings in the
API's JSON and in PostgreSQL's binary COPY format, HTTP load generators, CPU accounting and the
table of figures. Everything targets this machine only and stops by itself."""

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import platform
import pwd
import random
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg
import structlog
import uvloop

from tsapi.db import Connection
from tsapi.embedded import EmbeddedPostgres

T = TypeVar("T")

CLIENTS = 8
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", ""}
START_TIMEOUT = 60.0
GRACE = 60.0  # seconds a load may overrun its duration before it is deemed stuck
COLUMNS = ("ts", "sensor", "metadata", "value")


def argument_parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes; ``parse`` them."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--database-url",
        help="a local PostgreSQL 14+ superuser URL: a fresh database is created on it and dropped "
        "afterwards (default: a fresh embedded PostgreSQL in a temporary directory)",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load (10)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="times each load runs, tsapi and direct interleaved; the best of each counts (1)",
    )
    parser.add_argument(
        "--client",
        choices=("wrk", "python"),
        default="wrk",
        help="HTTP load generator: wrk (default; apt-get install wrk) or a raw asyncio client",
    )
    return parser


def parse(parser: argparse.ArgumentParser) -> argparse.Namespace:
    args = parser.parse_args()
    # The embedded server's progress would interleave with the figures; its warnings would not.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.database_url is not None:
        check_local(args.database_url)
    if args.client == "wrk" and shutil.which("wrk") is None:
        sys.exit("wrk is not installed: `apt-get install wrk` (Debian/Ubuntu), or --client python")
    if not 0 < args.duration <= 600:
        sys.exit("--duration must be between 0 and 600 seconds")
    if not 1 <= args.rounds <= 10:
        sys.exit("--rounds must be between 1 and 10")
    return args


def check_local(url: str) -> None:
    parts = urlsplit(url)
    hosts = [parts.hostname or "", *parse_qs(parts.query).get("host", [])]
    if any(host not in LOCAL_HOSTS and not host.startswith("/") for host in hosts):
        sys.exit(f"benchmarks only run against this machine, not {parts.hostname}")


# -- the database and the tsapi process ----------------------------------------------------------


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def execute(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.contextmanager
def fresh_database(server_url: str | None) -> Iterator[str]:
    """The URL of a new, empty database on the given server or on a new embedded one."""
    with contextlib.ExitStack() as stack:
        if server_url is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tsapi-bench-")))
            server_url = stack.enter_context(EmbeddedPostgres(work)).url
        name = f"tsapi_bench_{uuid.uuid4().hex[:12]}"
        asyncio.run(execute(server_url, f'CREATE DATABASE "{name}"'))
        try:
            yield with_database(server_url, name)
        finally:
            asyncio.run(execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Tsapi:
    process: subprocess.Popen[bytes]
    host: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


@contextlib.contextmanager
def running_tsapi(
    database_url: str,
    log_path: Path,
    options: Sequence[str] = (),
    settings: Mapping[str, str] | None = None,
) -> Iterator[Tsapi]:
    """``python -m tsapi serve`` on the database, ready, and stopped on exit; with default
    settings but for the extra command-line ``options`` and ``TSAPI_*`` ``settings`` given."""
    port = free_port()
    command = [sys.executable, "-m", "tsapi", "serve", "--database-url", database_url]
    command += ["--host", "127.0.0.1", "--port", str(port), *options]
    # Default settings: none from the environment, nor from a tsapi.toml (it runs elsewhere).
    env = {name: value for name, value in os.environ.items() if not name.startswith("TSAPI_")}
    env |= {"TSAPI_LOG_FORMAT": "json", "TSAPI_LOG_LEVEL": "warning", **(settings or {})}
    with running_server(command, env, port, log_path) as tsapi:
        yield tsapi


@contextlib.contextmanager
def running_server(
    command: Sequence[str], env: Mapping[str, str], port: int, log_path: Path
) -> Iterator[Tsapi]:
    """``command``, serving HTTP on ``port``, ready (its ``/readyz`` answers 200), and stopped on
    exit; its output is appended to ``log_path``, in whose folder it runs."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=log_path.parent
        )
    tsapi = Tsapi(process, "127.0.0.1", port)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _ready(tsapi):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        yield tsapi
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _ready(tsapi: Tsapi) -> bool:
    try:
        with urllib.request.urlopen(f"{tsapi.base_url}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def running_pgbouncer(database_url: str, pool_size: int = 20) -> Iterator[str]:
    """A PgBouncer in transaction pooling mode in front of the database's server (over its Unix
    socket when the URL names one, as the embedded server's does), in a temporary directory, and
    stopped on exit: the database's URL through it."""
    parts = urlsplit(database_url)
    query = parse_qs(parts.query)
    socket_dir = query.get("host", [parts.hostname or "127.0.0.1"])[0]
    server_port = parts.port or int(query.get("port", ["5432"])[0])
    user, password = parts.username or "postgres", parts.password or ""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="tsapi-pgbouncer-") as tmp:
        work = Path(tmp)
        (work / "users.txt").write_text(f'"{user}" "{password}"\n')
        (work / "pgbouncer.ini").write_text(
            f"[databases]\n* = host={socket_dir} port={server_port}\n[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {work / 'users.txt'}\npool_mode = transaction\n"
            f"default_pool_size = {pool_size}\nmax_client_conn = 1000\n"
            f"logfile = {work / 'pgbouncer.log'}\npidfile = {work / 'pgbouncer.pid'}\n"
        )
        command = [shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"]
        if os.geteuid() == 0:  # PgBouncer refuses to run as root: as the owner of the server's
            # socket directory (the embedded server's lets no one else in), or as nobody
            owner = Path(socket_dir).stat().st_uid if socket_dir.startswith("/") else None
            entry = pwd.getpwnam("nobody") if owner is None else pwd.getpwuid(owner)
            for path in (work, *work.iterdir()):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            command += ["-u", entry.pw_name]
        process = subprocess.Popen(
            [*command, str(work / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not _listening(port):
                if process.poll() is not None or time.monotonic() > deadline:
                    log = (work / "pgbouncer.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"PgBouncer did not start:\n{log}")
                time.sleep(0.05)
            yield urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{port}", query=""))
        finally:
            process.terminate()
            process.wait(30)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def check_page(url: str, count: int) -> None:
    """Exit unless ``GET url`` answers a JSON array of ``count`` readings."""
    with urllib.request.urlopen(url, timeout=10) as response:
        if len(json.load(response)) != count:
            sys.exit(f"GET {url} did not answer {count} readings")


async def reset(database_url: str) -> None:
    """An empty readings table and a fresh checkpoint, so loads start alike."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("TRUNCATE readings")
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


# -- readings -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    ts: dt.datetime
    sensor: uuid.UUID
    metadata: dict[str, str] | None
    value: Decimal


def make_readings(
    count: int, seed: int = 2, lead: dt.timedelta = dt.timedelta(minutes=1)
) -> list[Reading]:
    """Readings of 500 sensors over half an hour, every tenth with metadata, values with two
    decimals as thermometers send them. Their timestamps start ``lead`` (a minute) ahead of the
    clock: live rows, which tsapi's rollups never see as late during a run that lasts less than
    that (late ones cost a log entry and a recomputation each), and whose partitions tsapi made
    at its start."""
    rng = random.Random(seed)
    sensors = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(500)]
    sites = [f"plant-{n}" for n in range(1, 9)]
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) + lead
    step = dt.timedelta(minutes=30) / count
    readings = []
    for index in range(count):
        metadata = None
        if index % 10 == 0:
            metadata = {"site": rng.choice(sites), "firmware": f"2.{rng.randrange(8)}.1"}
        value = Decimal(rng.randrange(-2000, 4500)).scaleb(-2)
        readings.append(Reading(start + index * step, rng.choice(sensors), metadata, value))
    return readings


def batches(readings: Sequence[Reading], size: int) -> list[list[Reading]]:
    return [list(readings[i : i + size]) for i in range(0, len(readings) - size + 1, size)]


def json_body(batch: Sequence[Reading]) -> bytes:
    """The batch as a client posts it: one JSON array, compact, on one line."""
    rows = []
    for reading in batch:
        row: dict[str, object] = {
            "sensor": str(reading.sensor),
            "value": "VALUE",
            "ts": reading.ts.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        }
        if reading.metadata is not None:
            row["metadata"] = reading.metadata
        rows.append(json.dumps(row, separators=(",", ":")).replace('"VALUE"', str(reading.value)))
    return ("[" + ",".join(rows) + "]").encode()


_PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_TRAILER = struct.pack("!h", -1)


def copy_payload(batch: Sequence[Reading]) -> bytes:
    """The batch in COPY's binary format, ready for ``COPY readings (ts, sensor, metadata, value)
    FROM STDIN (FORMAT binary)``."""
    parts = [_COPY_HEADER]
    for reading in batch:
        micros = (reading.ts - _PG_EPOCH) // dt.timedelta(microseconds=1)
        parts.append(struct.pack("!hiq", 4, 8, micros))
        parts.append(struct.pack("!i", 16) + reading.sensor.bytes)
        if reading.metadata is None:
            parts.append(struct.pack("!i", -1))
        else:
            jsonb = b"\x01" + json.dumps(reading.metadata).encode()
            parts.append(struct.pack("!i", len(jsonb)) + jsonb)
        numeric = _numeric(reading.value)
        parts.append(struct.pack("!i", len(numeric)) + numeric)
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


def copy_payloads(readings: Sequence[Reading], size: int = 10_000) -> list[bytes]:
    """All the readings, tail included, as COPY payloads of ``size`` rows."""
    return [copy_payload(readings[i : i + size]) for i in range(0, len(readings), size)]


async def load_table(database_url: str, payloads: Sequence[bytes]) -> None:
    """A table's readings, copied in directly (tsapi's startup made their partitions), and
    analyzed."""
    conn: Connection = await asyncpg.connect(database_url)
    try:
        for payload in payloads:
            await copy_in(conn, payload)
        await conn.execute("ANALYZE readings")
    finally:
        await conn.close()


def _numeric(value: Decimal) -> bytes:
    """PostgreSQL's binary numeric: base-10000 digits around the decimal point."""
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits)) + "0" * max(exponent, 0)
    scale = max(-exponent, 0)
    whole, fraction = text[: len(text) - scale] or "0", text[len(text) - scale :].rjust(scale, "0")
    whole = whole.lstrip("0")
    whole = whole.rjust(-(-len(whole) // 4) * 4, "0")
    fraction = fraction.ljust(-(-len(fraction) // 4) * 4, "0")
    groups = [int(whole[i : i + 4]) for i in range(0, len(whole), 4)]
    weight = len(groups) - 1
    groups += [int(fraction[i : i + 4]) for i in range(0, len(fraction), 4)]
    while groups and groups[0] == 0:
        groups.pop(0)
        weight -= 1
    while groups and groups[-1] == 0:
        groups.pop()
    if not groups:
        weight = 0
    head = struct.pack("!hhHh", len(groups), weight, 0x4000 if sign and groups else 0, scale)
    return head + struct.pack(f"!{len(groups)}h", *groups)


# -- CPU accounting -------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """User plus system CPU seconds of a live process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def tree_cpu(pid: int) -> float:
    """``process_cpu`` of a live process and all its descendants (tsapi's workers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parent = int(stat.read_text().rpartition(")")[2].split()[1])
            children.setdefault(parent, []).append(int(stat.parent.name))
    pids, total = [pid], 0.0
    while pids:
        current = pids.pop()
        total += process_cpu(current)
        pids += children.get(current, [])
    return total


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def backends_cpu(conn: Connection) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend serving this database but ``conn``'s (the
    server is on this machine: see check_local)."""
    rows = await conn.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid()"
    )
    return {row["pid"]: process_cpu(row["pid"]) for row in rows}


def cpu_since(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds the backends used between two snapshots; new backends count from zero."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


@dataclass
class Cpu:
    """CPU seconds each party used during one load."""

    client: float = 0.0
    tsapi: float = 0.0
    postgres: float = 0.0


@dataclass
class Result:
    count: int  # rows or requests done
    seconds: float
    cpu: Cpu = field(default_factory=Cpu)
    latency_ms: float | None = None  # median, where the load generator measures it

    @property
    def rate(self) -> float:
        return self.count / self.seconds


def best(kept: Result | None, new: Result) -> Result:
    """The faster of two rounds: the one least disturbed by the rest of the machine."""
    return new if kept is None or new.rate > kept.rate else kept


async def metered_http_load(
    client: str,
    url: str,
    bodies: Sequence[bytes] | None,
    duration: float,
    work: Path,
    tsapi: Tsapi,
    database_url: str,
) -> Result:
    """``http_load`` against tsapi, with the CPU that tsapi (workers included) and its database
    backends used; ``database_url`` must reach PostgreSQL itself, not through a pooler."""
    monitor: Connection = await asyncpg.connect(database_url)
    try:
        backends, server = await backends_cpu(monitor), tree_cpu(tsapi.process.pid)
        result = await asyncio.to_thread(http_load, client, url, bodies, duration, work)
        result.cpu.tsapi = tree_cpu(tsapi.process.pid) - server
        result.cpu.postgres = cpu_since(backends, await backends_cpu(monitor))
    finally:
        await monitor.close()
    return result


async def direct_load(
    database_url: str,
    duration: float,
    unit: Callable[[Connection, int], Awaitable[int]],
    grace: float = GRACE,
) -> Result:
    """``CLIENTS`` connections straight to the database, each doing ``unit(conn, n)`` for
    n = 0, 1, 2... back to back for ``duration`` seconds; the units' counts added up."""
    conns: list[Connection] = [await asyncpg.connect(database_url) for _ in range(CLIENTS + 1)]
    monitor, clients = conns[0], conns[1:]
    try:
        backends, cpu = await backends_cpu(monitor), self_cpu()
        began = time.monotonic()
        deadline = began + duration

        async def client(conn: Connection, offset: int) -> int:
            done, index = 0, offset
            while time.monotonic() < deadline:
                done += await unit(conn, index)
                index += 1
            return done

        async with asyncio.timeout(duration + grace):
            counts = await asyncio.gather(*(client(c, n * 7919) for n, c in enumerate(clients)))
        result = Result(sum(counts), time.monotonic() - began)
        result.cpu.client = self_cpu() - cpu
        result.cpu.postgres = cpu_since(backends, await backends_cpu(monitor))
    finally:
        for conn in conns:
            await conn.close()
    return result


async def copy_in(conn: Connection, payload: bytes) -> None:
    """One pre-encoded batch into readings with ``COPY ... FROM STDIN (FORMAT binary)``."""

    async def source() -> AsyncIterator[bytes]:  # bare bytes would be taken for a file name
        yield payload

    await conn.copy_to_table("readings", source=source(), columns=COLUMNS, format="binary")


def copier(payloads: list[bytes], size: int) -> Callable[[Connection, int], Awaitable[int]]:
    """A ``direct_load`` unit: the next pre-encoded batch copied in, counting ``size`` rows."""

    async def copy_batch(conn: Connection, index: int) -> int:
        await copy_in(conn, payloads[index % len(payloads)])
        return size

    return copy_batch


def check_stored(database_url: str, expected: int) -> None:
    """Exit unless readings holds at least the rows a load reported written."""
    stored = run_async(count_readings(database_url))
    if stored < expected:
        sys.exit(f"only {stored} of the {expected} rows reported written are in readings")


async def count_readings(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM readings")
    finally:
        await conn.close()
    return count


# -- HTTP load ------------------------------------------------------------------------------------

# Every request is built once, in init(); request() only hands the next one out.
_WRK_SCRIPT = """
local requests, count, index = {}, 0, 0
function init(args)
  if args[1] then
    local file = assert(io.open(args[1], "rb"))
    for body in file:lines() do
      count = count + 1
      requests[count] = wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
    end
    file:close()
    index = math.random(count)
  else
    requests[1], count = wrk.format(), 1
  end
end
function request()
  index = index % count + 1
  return requests[index]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK %d %d %d %d %d\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status, latency:percentile(50)))
end
"""


def http_load(
    client: str, url: str, bodies: Sequence[bytes] | None, duration: float, work: Path
) -> Result:
    """``CLIENTS`` keep-alive connections sending requests back to back for ``duration`` seconds:
    POSTs of the bodies in turn, or GETs when there are none. Any failed request is fatal."""
    if client == "wrk":
        result, failures = _wrk(url, bodies, duration, work)
    else:
        result, failures = _python_client(url, bodies, duration)
    if failures:
        sys.exit(f"{failures} of {result.count + failures} requests to {url} failed")
    return result


def _wrk(
    url: str, bodies: Sequence[bytes] | None, duration: float, work: Path
) -> tuple[Result, int]:
    script = work / "load.lua"
    script.write_text(_WRK_SCRIPT)
    command = ["wrk", "-t1", f"-c{CLIENTS}", f"-d{duration:g}s", "--timeout", "30s"]
    command += ["-s", str(script), url]
    if bodies is not None:
        body_file = work / "bodies.jsonl"
        body_file.write_bytes(b"".join(body + b"\n" for body in bodies))
        command += ["--", str(body_file)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk is the one child reaped meanwhile
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=duration + GRACE, check=False
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = [line.split()[1:] for line in done.stdout.splitlines() if line.startswith("WRK ")]
    if done.returncode != 0 or not summary:
        sys.exit(f"wrk failed:\n{done.stdout}{done.stderr}")
    requests, micros, socket_errors, bad_status, median = map(int, summary[0])
    result = Result(requests - bad_status, micros / 1e6, latency_ms=median / 1000)
    result.cpu.client = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return result, socket_errors + bad_status


def _python_client(url: str, bodies: Sequence[bytes] | None, duration: float) -> tuple[Result, int]:
    """The same load from raw asyncio streams on uvloop, requests pre-built as bytes."""
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    head = f"Host: {parts.netloc}\r\n"
    if bodies is None:
        requests = [f"GET {target} HTTP/1.1\r\n{head}\r\n".encode()]
    else:
        requests = [
            f"POST {target} HTTP/1.1\r\n{head}Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
            for body in bodies
        ]

    async def connection(offset: int, deadline: float, tally: list[int]) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        index = offset
        while time.monotonic() < deadline:
            writer.write(requests[index % len(requests)])
            index += 1
            response = await reader.readuntil(b"\r\n\r\n")
            start = response.lower().index(b"content-length:") + 15
            await reader.readexactly(int(response[start : response.index(b"\r\n", start)]))
            tally[0 if response[9:10] == b"2" else 1] += 1
        writer.close()

    async def run() -> tuple[Result, int]:
        tally = [0, 0]
        began, cpu = time.monotonic(), self_cpu()
        deadline = began + duration
        spread = len(requests) // CLIENTS
        async with asyncio.timeout(duration + GRACE):
            await asyncio.gather(*(connection(n * spread, deadline, tally) for n in range(CLIENTS)))
        result = Result(tally[0], time.monotonic() - began)
        result.cpu.client = self_cpu() - cpu
        return result, tally[1]

    return run_async(run())


# -- running and reporting ------------------------------------------------------------------------


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    return uvloop.run(coroutine)


async def describe(database_url: str, embedded: bool) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        version = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    where = "embedded" if embedded else "given server"
    return (
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs ({model}), "
        f"Linux {platform.release()}, Python {platform.python_version()}, "
        f"PostgreSQL {version} ({where})"
    )


@dataclass
class Row:
    load: str
    unit: str  # "rows/s" or "req/s"
    tsapi: Result
    direct: Result
    goal_rate: float
    goal_ratio: float | None = None

    @property
    def ratio(self) -> float:
        return self.tsapi.rate / self.direct.rate

    @property
    def met(self) -> bool:
        return self.tsapi.rate >= self.goal_rate and (
            self.goal_ratio is None or self.ratio >= self.goal_ratio
        )


def report(header: Sequence[str], rows: Sequence[Row]) -> bool:
    """Print the figures; whether every goal was met."""
    for line in header:
        print(line)
    print()
    table = [("load", "tsapi", "direct", "ratio", "goal", "met?")]
    for row in rows:
        goal = f">= {row.goal_rate:,.0f} {row.unit}"
        if row.goal_ratio is not None:
            goal += f" and ratio >= {row.goal_ratio:g}"
        table.append(
            (
                row.load,
                f"{row.tsapi.rate:,.0f} {row.unit}",
                f"{row.direct.rate:,.0f} {row.unit}",
                f"{row.ratio:.2f}",
                goal,
                "yes" if row.met else "NO",
            )
        )
    print_table(table)
    print()
    print(
        "CPU used during each load: cores busy (CPU seconds per second; this machine has "
        f"{os.cpu_count()}), and microseconds of CPU per row or request"
    )
    cpu_table = [
        ("load", "side", "client", "tsapi", "postgres", "tsapi/unit", "postgres/unit", "median")
    ]
    for row in rows:
        for side, result in (("tsapi", row.tsapi), ("direct", row.direct)):
            cpu, seconds, count = result.cpu, result.seconds, result.count
            served = side == "tsapi"
            cpu_table.append(
                (
                    row.load,
                    side,
                    f"{cpu.client / seconds:.2f}",
                    f"{cpu.tsapi / seconds:.2f}" if served else "-",
                    f"{cpu.postgres / seconds:.2f}",
                    f"{cpu.tsapi / count * 1e6:.2f} us" if served else "-",
                    f"{cpu.postgres / count * 1e6:.2f} us",
                    "" if result.latency_ms is None else f"{result.latency_ms:.1f} ms",
                )
            )
    print_table(cpu_table)
    return all(row.met for row in rows)


def print_table(table: Sequence[Sequence[str]]) -> None:
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
