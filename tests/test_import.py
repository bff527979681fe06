"""``tsapi import``: JSON, NDJSON, CSV, gzip and stdin, through a running tsapi and straight into
the database; a bad row stops it naming its file and line; run again after an interruption (the
server killed halfway, or the import itself), it resumes and writes every reading exactly once."""

import gzip
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Tsapi, sql, start_tsapi

SENSOR = "6f3e43a4-d1c1-4cb6-b928-0ac0efaf84a5"
OTHER = "d538f9fa-f6de-46e5-9fa2-d7ee9a0f0a68"


def readings(count: int, sensor: str = SENSOR, day: int = 1) -> list[dict[str, Any]]:
    return [
        {
            "sensor": sensor,
            "value": f"{i}.{i % 10}0",
            "ts": f"2024-01-{day:02d}T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z",
            "metadata": {"n": i} if i % 3 else None,
        }
        for i in range(count)
    ]


def write_ndjson(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    lines = ["sensor,ts,value,metadata"]  # any column order
    for row in rows:
        metadata = (
            ""
            if row["metadata"] is None
            else '"' + json.dumps(row["metadata"]).replace('"', '""') + '"'
        )
        lines.append(f"{row['sensor']},{row['ts']},{row['value']},{metadata}")
    path.write_text("\r\n".join(lines) + "\r\n")
    return path


def tsapi_import(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tsapi", "import", *args],
        input=None if stdin is None else stdin.decode(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def count(url: str) -> int:
    total: int = sql(url, "SELECT count(*) FROM readings")[0][0]
    return total


def stored(url: str) -> list[tuple[str, str, str, str | None]]:
    rows = sql(
        url,
        "SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS ts,"
        " sensor::text, value::text, metadata::text FROM readings ORDER BY sensor, ts",
    )
    return [(row["ts"], row["sensor"], row["value"], row["metadata"]) for row in rows]


def expected(*batches: list[dict[str, Any]]) -> list[tuple[str, str, str, str | None]]:
    rows = [
        (
            row["ts"],
            row["sensor"],
            row["value"],
            None if row["metadata"] is None else json.dumps(row["metadata"]),
        )
        for batch in batches
        for row in batch
    ]
    return sorted(rows, key=lambda row: (row[1], row[0]))


@pytest.fixture
def files(tmp_path: Path) -> tuple[list[str], list[list[dict[str, Any]]]]:
    """Files of every kind, each with readings of its own (new sensors each time, as idempotency
    keys outlive the tests' emptied readings): their names and the readings."""
    one, two = str(uuid.uuid4()), str(uuid.uuid4())
    kinds = [readings(1200, one, 1), readings(700, two, 2), readings(900, one, 3)]
    kinds.append(readings(500, two, 4))
    (tmp_path / "a.json").write_text(json.dumps(kinds[0], indent=2))
    write_ndjson(tmp_path / "b.ndjson", kinds[1])
    write_csv(tmp_path / "c.csv", kinds[2])
    with gzip.open(tmp_path / "d.jsonl.gz", "wt") as file:
        file.write("".join(json.dumps(row) + "\n" for row in kinds[3]))
    names = [str(tmp_path / name) for name in ("a.json", "b.ndjson", "c.csv", "d.jsonl.gz")]
    return names, kinds


@pytest.mark.parametrize("how", ["url", "direct"])
def test_every_format_is_imported_once_however_often_it_is_run(
    api: httpx.Client, tsapi: Tsapi, files: tuple[list[str], list[list[dict[str, Any]]]], how: str
) -> None:
    names, kinds = files
    where = {
        "url": ["--url", tsapi.base_url],
        "direct": ["--direct", "--database-url", tsapi.database_url],
    }
    first = tsapi_import(*where[how], "--chunk-size", "500", *names)
    assert first.returncode == 0, first.stderr
    assert "3,300 readings in 8 chunks; 3,300 written now" in first.stdout
    assert stored(tsapi.database_url) == expected(*kinds)
    # Run again, the other way: the same chunks, found written.
    again = tsapi_import(*where["direct" if how == "url" else "url"], "--chunk-size", "500", *names)
    assert again.returncode == 0, again.stderr
    assert (
        "(8 chunks, 3,300 readings, written by an earlier run: skipped); 0 written now"
        in again.stdout
    )
    assert count(tsapi.database_url) == 3300


def test_stdin_takes_its_format_from_the_option(api: httpx.Client, tsapi: Tsapi) -> None:
    body = "".join(json.dumps(row) + "\n" for row in readings(30)).encode()
    result = tsapi_import("--url", tsapi.base_url, "--format", "ndjson", "-", stdin=body)
    assert result.returncode == 0, result.stderr
    assert count(tsapi.database_url) == 30
    unnamed = tsapi_import("--url", tsapi.base_url, "-", stdin=body)
    assert unnamed.returncode == 1
    assert "-: cannot tell the format from the name; give --format" in unnamed.stderr


@pytest.mark.parametrize("kind", ["ndjson", "csv", "json"])
def test_a_bad_row_stops_the_import_naming_its_file_and_line(
    api: httpx.Client, tsapi: Tsapi, tmp_path: Path, kind: str
) -> None:
    rows = readings(2000)
    rows[1301]["value"] = "many"
    line = {"ndjson": 1302, "csv": 1303}.get(kind, 0)  # CSV: after its header
    if kind == "json":
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(rows, indent=1))
        # Where the row's object starts: the 1302nd line that opens one.
        starts = [n for n, text in enumerate(path.read_text().splitlines(), 1) if text == " {"]
        line = starts[1301]
    else:
        path = (write_ndjson if kind == "ndjson" else write_csv)(tmp_path / f"bad.{kind}", rows)
    result = tsapi_import("--url", tsapi.base_url, "--chunk-size", "500", str(path))
    assert result.returncode == 1
    assert f"{path}:{line}: value: 'many' is not a number" in result.stderr
    assert "run the same command again to resume" in result.stderr
    assert count(tsapi.database_url) == 1000  # the two chunks before it
    rows[1301]["value"] = 1301
    if kind == "json":
        path.write_text(json.dumps(rows, indent=1))
    else:
        (write_ndjson if kind == "ndjson" else write_csv)(path, rows)
    fixed = tsapi_import("--url", tsapi.base_url, "--chunk-size", "500", str(path))
    assert fixed.returncode == 0, fixed.stderr
    assert "(2 chunks, 1,000 readings, written by an earlier run: skipped)" in fixed.stdout
    assert count(tsapi.database_url) == 2000


def wait_for_rows(url: str, at_least: int, process: subprocess.Popen[str]) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = count(url)
        if found >= at_least:
            return found
        assert process.poll() is None, "the import ended before it could be interrupted"
        time.sleep(0.01)
    raise AssertionError("the import wrote nothing")


def test_an_import_resumes_after_the_server_was_killed_halfway(
    backend: str, make_database: Any, tmp_path: Path
) -> None:
    url = make_database(backend)
    server = start_tsapi(url, tmp_path / "tsapi.log")
    path = write_ndjson(tmp_path / "big.ndjson", readings(40_000))
    command = [
        sys.executable,
        "-m",
        "tsapi",
        "import",
        "--url",
        server.base_url,
        "--chunk-size",
        "200",
        "--retries",
        "0",
        str(path),
    ]
    try:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        wait_for_rows(url, 2000, process)
        server.process.kill()
        server.process.wait(30)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 1
        assert "did not answer" in stderr and "run the same command again to resume" in stderr
        assert 2000 <= count(url) < 40_000
        server = start_tsapi(url, tmp_path / "tsapi.log")
        command[command.index("--url") + 1] = server.base_url
        resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        assert "written by an earlier run: skipped" in resumed.stdout
        assert count(url) == 40_000
        assert sql(url, "SELECT count(DISTINCT ts) FROM readings")[0][0] == 40_000
    finally:
        server.stop()


def test_a_direct_import_killed_halfway_resumes_exactly(
    api: httpx.Client, tsapi: Tsapi, tmp_path: Path
) -> None:
    path = write_ndjson(tmp_path / "big.ndjson", readings(40_000))
    command = [
        sys.executable,
        "-m",
        "tsapi",
        "import",
        "--direct",
        "--database-url",
        tsapi.database_url,
        "--chunk-size",
        "200",
        str(path),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_rows(tsapi.database_url, 2000, process)
    finally:
        process.kill()
        process.communicate(timeout=60)
    assert count(tsapi.database_url) < 40_000
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert count(tsapi.database_url) == 40_000
    assert sql(tsapi.database_url, "SELECT count(DISTINCT ts) FROM readings")[0][0] == 40_000


def test_line_protocol_is_read_as_the_influx_write_route_reads_it(
    api: httpx.Client, tsapi: Tsapi, tmp_path: Path
) -> None:
    host = f"h{uuid.uuid4().hex[:8]}"  # new series each run: keys outlive emptied readings
    lines = [f"cpu,host={host} usage={i}.5,procs={i}i {1704067200 + i}" for i in range(300)]
    path = tmp_path / "cpu.lp"
    path.write_text("# a comment\n" + "\n".join(lines) + "\n")
    where = ["--url", tsapi.base_url, "--precision", "s", "--bucket", "telegraf"]
    result = tsapi_import(*where, "--chunk-size", "100", str(path))
    assert result.returncode == 0, result.stderr
    assert "300 readings in 3 chunks; 600 written now" in result.stdout  # two fields a line
    # What the InfluxDB route makes of the same lines: the same sensors and metadata.
    response = api.post(
        "/api/v2/write", params={"bucket": "telegraf", "precision": "s"}, content=lines[0]
    )
    assert response.status_code == 204
    rows = sql(
        tsapi.database_url,
        "SELECT sensor, metadata::text, count(*) AS n FROM readings"
        " WHERE ts = '2024-01-01T00:00:00Z' GROUP BY 1, 2 ORDER BY 2",
    )
    assert [row["n"] for row in rows] == [2, 2]  # the route's copy and the import's
    assert '"bucket": "telegraf"' in rows[0]["metadata"]
    again = tsapi_import(
        "--direct", "--database-url", tsapi.database_url, "--precision", "s",
        "--bucket", "telegraf", "--chunk-size", "100", str(path),
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "(3 chunks, 300 readings, written by an earlier run: skipped)" in again.stdout
    path.write_text(lines[0] + "\ncpu,host=a usage=x 1\n")
    bad = tsapi_import(*where, str(path))
    assert bad.returncode == 1
    assert f"{path}:2: usage: " in bad.stderr
