"""Ingest by body format: 8 clients posting JSON, NDJSON, CSV and InfluxDB line protocol bodies
of 1,000 and of 5,000 readings to tsapi, against 8 connections doing a binary COPY of the same
rows (the rows tsapi stores) straight into the same table.

Run from the repository root:
``python -m benchmarks.ingest_formats [--duration 10] [--rounds 1] [--database-url URL]``.
Each round runs the direct COPY and then tsapi, for every format and size; the round of the
median ratio is reported.
"""

import asyncio
import csv
import io
import json
import resource
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from benchmarks.common import (
    CLIENTS,
    GRACE,
    Reading,
    Result,
    Row,
    Tsapi,
    argument_parser,
    backends_cpu,
    batches,
    check_stored,
    copier,
    copy_payload,
    cpu_since,
    describe,
    direct_load,
    fresh_database,
    json_body,
    make_readings,
    parse,
    process_cpu,
    report,
    reset,
    run_async,
    running_tsapi,
)
from tsapi.db import Connection
from tsapi.parsers.lineprotocol import LineProtocolParser

READINGS = 200_000  # distinct rows, posted in turn; every tenth carries metadata (or tags)
SIZES = (1000, 5000)
BUCKET = "bench"


@dataclass(frozen=True)
class Format:
    name: str
    path: str
    content_type: str
    body: Callable[[Sequence[Reading]], bytes]
    goal_ratio: float  # of the direct COPY's rate


def ndjson_body(batch: Sequence[Reading]) -> bytes:
    return json_body(batch)[1:-1].replace(b"},{", b"}\n{") + b"\n"


def csv_body(batch: Sequence[Reading]) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(("ts", "sensor", "value", "metadata"))
    for reading in batch:
        metadata = "" if reading.metadata is None else json.dumps(reading.metadata)
        ts = reading.ts.isoformat(timespec="microseconds").replace("+00:00", "Z")
        writer.writerow((ts, reading.sensor, reading.value, metadata))
    return text.getvalue().encode()


def line_protocol_body(batch: Sequence[Reading]) -> bytes:
    """A line per reading: its sensor as a tag, its metadata (if any) as more tags."""
    lines = []
    for reading in batch:
        tags = {"sensor": str(reading.sensor), **(reading.metadata or {})}
        tag_set = ",".join(f"{key}={value}" for key, value in sorted(tags.items()))
        nanoseconds = int(reading.ts.timestamp()) * 10**9 + reading.ts.microsecond * 1000
        lines.append(f"readings,{tag_set} value={reading.value} {nanoseconds}\n")
    return "".join(lines).encode()


def line_protocol_rows(body: bytes) -> list[Reading]:
    """The rows tsapi stores for a line protocol body: a sensor per series, metadata on each."""
    parsed = LineProtocolParser({"bucket": BUCKET}, 1).parse(body, 1)
    assert not parsed.errors and not parsed.batch.untimed
    return [
        Reading(ts, uuid.UUID(str(sensor)), json.loads(metadata or b"null"), value)
        for ts, sensor, metadata, value in parsed.batch.timed
    ]


FORMATS = [
    Format("JSON", "/readings", "application/json", json_body, 0.6),
    Format("NDJSON", "/readings", "application/x-ndjson", ndjson_body, 0.6),
    Format("CSV", "/readings", "text/csv", csv_body, 0.7),
    Format(
        "line protocol", f"/api/v2/write?bucket={BUCKET}", "text/plain", line_protocol_body, 0.7
    ),
]


def main() -> None:
    args = parse(argument_parser(__doc__))
    if args.client != "wrk":
        sys.exit("this benchmark sends its bodies with wrk only")
    readings = make_readings(READINGS)
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="tsapi-bench-") as tmp,
        fresh_database(args.database_url) as database_url,
        running_tsapi(database_url, Path(tmp) / "tsapi.log") as tsapi,
    ):
        machine = run_async(describe(database_url, embedded=args.database_url is None))
        for size in SIZES:
            chunks = batches(readings, size)
            for form in FORMATS:
                bodies = [form.body(chunk) for chunk in chunks]
                lp = form.name == "line protocol"
                stored = [line_protocol_rows(body) for body in bodies] if lp else chunks
                payloads = [copy_payload(rows_) for rows_ in stored]
                rounds: list[tuple[Result, Result]] = []
                for _ in range(args.rounds):  # each a COPY load, then tsapi's, back to back
                    run_async(reset(database_url))
                    direct = run_async(
                        direct_load(database_url, args.duration, copier(payloads, size))
                    )
                    check_stored(database_url, direct.count)
                    run_async(reset(database_url))
                    url = tsapi.base_url + form.path
                    served = run_async(
                        _metered(url, form, bodies, args.duration, Path(tmp), tsapi, database_url)
                    )
                    served = Result(served.count * size, served.seconds, served.cpu)
                    check_stored(database_url, served.count)
                    rounds.append((served, direct))
                # The round of the median ratio: the machine's speed drifts between rounds, far
                # less between two loads run one after the other.
                rounds.sort(key=lambda pair: pair[0].rate / pair[1].rate)
                served, direct = rounds[(len(rounds) - 1) // 2]
                label = f"{form.name}, {size:,} rows/request"
                rows.append(Row(label, "rows/s", served, direct, 0.0, form.goal_ratio))
    report(
        [
            f"tsapi ingest-by-format benchmark: {machine}",
            f"{args.duration:g} s per load; of {args.rounds} round(s), each a direct load then "
            f"tsapi's, the one of the median ratio; {CLIENTS} concurrent "
            f"clients (wrk); {READINGS:,} distinct rows (500 sensors, ts given, every tenth with "
            "metadata, or for line protocol two more tags) sent in turn",
            "tsapi: POST /readings (JSON, NDJSON, CSV) or /api/v2/write (line protocol) over "
            "keep-alive connections; direct: the rows tsapi stores,",
            "pre-encoded once as binary COPY payloads and sent with COPY readings (ts, sensor, "
            f"metadata, value) FROM STDIN (FORMAT binary), one per batch, from {CLIENTS} "
            "asyncpg connections",
        ],
        rows,
    )


# -- HTTP load with wrk, for bodies of many lines -------------------------------------------------

# Bodies are read from one file where each ends with a record separator (0x1e), built into
# requests once in init(); request() only hands the next one out.
_WRK_SCRIPT = """
local requests, count, index = {}, 0, 0
function init(args)
  local file = assert(io.open(args[1], "rb"))
  local data = file:read("*a")
  file:close()
  for body in string.gmatch(data, "([^\\30]+)\\30") do
    count = count + 1
    requests[count] = wrk.format("POST", nil, {["Content-Type"] = args[2]}, body)
  end
  index = math.random(count)
end
function request()
  index = index % count + 1
  return requests[index]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK %d %d %d %d\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


async def _metered(
    url: str,
    form: Format,
    bodies: Sequence[bytes],
    duration: float,
    work: Path,
    tsapi: Tsapi,
    database_url: str,
) -> Result:
    """POSTs of the bodies in turn from CLIENTS keep-alive connections for ``duration`` seconds,
    with the CPU that wrk, tsapi and the database's backends used; any failure is fatal."""
    monitor: Connection = await asyncpg.connect(database_url)
    try:
        backends, server = await backends_cpu(monitor), process_cpu(tsapi.process.pid)
        result = await asyncio.to_thread(_wrk, url, form.content_type, bodies, duration, work)
        result.cpu.tsapi = process_cpu(tsapi.process.pid) - server
        result.cpu.postgres = cpu_since(backends, await backends_cpu(monitor))
    finally:
        await monitor.close()
    return result


def _wrk(
    url: str, content_type: str, bodies: Sequence[bytes], duration: float, work: Path
) -> Result:
    script, body_file = work / "bodies.lua", work / "bodies.bin"
    script.write_text(_WRK_SCRIPT)
    body_file.write_bytes(b"".join(body + b"\x1e" for body in bodies))
    command = ["wrk", "-t1", f"-c{CLIENTS}", f"-d{duration:g}s", "--timeout", "30s"]
    command += ["-s", str(script), url, "--", str(body_file), content_type]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=duration + GRACE, check=False
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = [line.split()[1:] for line in done.stdout.splitlines() if line.startswith("WRK ")]
    if done.returncode != 0 or not summary:
        sys.exit(f"wrk failed:\n{done.stdout}{done.stderr}")
    requests, micros, socket_errors, bad_status = map(int, summary[0])
    if socket_errors or bad_status:
        sys.exit(f"{socket_errors + bad_status} of {requests} requests to {url} failed")
    result = Result(requests, micros / 1e6)
    result.cpu.client = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return result


if __name__ == "__main__":
    main()
