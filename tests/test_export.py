"""``tsapi export``: the same bytes through a running tsapi and straight from the database, in
every format, filtered as GET /readings filters; a file appears only whole; and what it writes
imports back exactly."""

import csv
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Tsapi, sql

SENSOR = "6f3e43a4-d1c1-4cb6-b928-0ac0efaf84a5"
OTHER = "d538f9fa-f6de-46e5-9fa2-d7ee9a0f0a68"


def tsapi_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "tsapi", *args], capture_output=True, timeout=300)


def seed(api: httpx.Client) -> None:
    readings: list[dict[str, Any]] = [
        {
            "sensor": SENSOR if i % 2 else OTHER,
            "value": f"{i}.{i % 7}0",
            "ts": f"2024-02-{1 + i // 1440:02d}T{i // 60 % 24:02d}:{i % 60:02d}:00Z",
            "metadata": {"room": f"r{i % 3}", "note": 'a "quoted", comma'} if i % 4 else None,
        }
        for i in range(5000)
    ]
    readings.append({"sensor": SENSOR, "value": 1})  # now()
    assert api.post("/readings", json=readings).json() == 5001


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "json"])
def test_through_the_api_and_direct_the_export_is_what_the_api_answers(
    api: httpx.Client, tsapi: Tsapi, tmp_path: Path, fmt: str
) -> None:
    seed(api)
    through = tmp_path / f"through.{fmt}"
    direct = tmp_path / f"direct.{fmt}"
    args = ["--sensor", SENSOR, "--from", "2024-02-02T00:00:00Z", "--to", "now"]
    result = tsapi_cli("export", "--url", tsapi.base_url, *args, "-o", str(through))
    assert result.returncode == 0, result.stderr
    result = tsapi_cli(
        "export", "--direct", "--database-url", tsapi.database_url, *args, "-o", str(direct)
    )
    assert result.returncode == 0, result.stderr
    answered = api.get(
        "/readings",
        params={
            "limit": "all",
            "format": fmt,
            "order": "asc",
            "sensor": SENSOR,
            "from": "2024-02-02T00:00:00Z",
            "to": "now",
        },
    )
    assert through.read_bytes() == direct.read_bytes() == answered.content
    rows = sum(1 for _ in csv.reader(io.StringIO(answered.text))) - 1 if fmt == "csv" else None
    if rows is not None:  # odd i from 1440 (Feb 2) to 4999, and the untimed one, before now
        assert rows == len(range(1441, 5000, 2)) + 1
    assert not list(tmp_path.glob(".*.partial"))


def test_stdout_and_the_default_format(api: httpx.Client, tsapi: Tsapi) -> None:
    seed(api)
    result = tsapi_cli("export", "--url", tsapi.base_url, "--order", "desc")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "ts,sensor,value,metadata"
    assert len(lines) == 5002
    assert lines[1].split(",")[1:3] == [SENSOR, "1"]  # the newest first


@pytest.mark.parametrize("how", ["url", "direct"])
def test_a_bad_parameter_stops_it_before_anything_is_written(
    api: httpx.Client, tsapi: Tsapi, tmp_path: Path, how: str
) -> None:
    output = tmp_path / "out.csv"
    where = (
        ["--url", tsapi.base_url]
        if how == "url"
        else ["--direct", "--database-url", tsapi.database_url]
    )
    result = tsapi_cli("export", *where, "--from", "yesterday", "-o", str(output))
    assert result.returncode == 1
    assert b"'from' must be an RFC 3339 timestamp" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_server_leaves_no_file(tmp_path: Path) -> None:
    output = tmp_path / "out.ndjson"
    result = tsapi_cli("export", "--url", "http://127.0.0.1:1", "-o", str(output))
    assert result.returncode == 1
    assert b"the export from http://127.0.0.1:1 did not finish" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_export_imports_back_exactly(
    api: httpx.Client, tsapi: Tsapi, make_database: Any, backend: str, tmp_path: Path
) -> None:
    seed(api)
    exported = tmp_path / "all.csv"
    assert tsapi_cli("export", "--url", tsapi.base_url, "-o", str(exported)).returncode == 0
    other = make_database(backend)
    imported = tsapi_cli("import", "--direct", "--database-url", other, str(exported))
    assert imported.returncode == 0, imported.stderr
    assert sql(other, "SELECT count(*) FROM readings")[0][0] == 5001
    again = tmp_path / "again.csv"
    result = tsapi_cli("export", "--direct", "--database-url", other, "-o", str(again))
    assert result.returncode == 0, result.stderr
    assert again.read_bytes() == exported.read_bytes()


def test_an_output_closed_early_is_a_clear_error(api: httpx.Client, tsapi: Tsapi) -> None:
    seed(api)
    command = [sys.executable, "-m", "tsapi", "export", "--url", tsapi.base_url]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    assert process.stdout.readline() == b"ts,sensor,value,metadata\r\n"
    process.stdout.close()  # as `tsapi export | head -1` does
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert stderr == b"Error: the export was cut short: its output was closed\n"
