"""Migrations meeting a database the tutorial already used: its readings table is adopted with its
rows, or refused with a message saying why."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import BACKENDS, sql, start_tsapi

TUTORIAL_TABLE = """CREATE TABLE readings(
    ts timestamptz default now() not null, sensor uuid, metadata jsonb, value numeric not null)"""
TUTORIAL_ROWS = """INSERT INTO readings (ts, sensor, metadata, value) VALUES
    ('2024-05-01 12:00:00+00', '6f3e43a4-d1c1-4cb6-b928-0ac0efaf84a5', NULL, 0.3),
    ('2024-05-01 12:00:01+00', '50f91cdc-fd19-40d2-b2b0-c90db3394981', '{"color": "blue"}', 10.3),
    ('2024-05-01 12:00:02+00', NULL, NULL, 20.0)"""
TUTORIAL_READINGS = [
    {
        "ts": "2024-05-01T12:00:00.000000Z",
        "sensor": "6f3e43a4-d1c1-4cb6-b928-0ac0efaf84a5",
        "metadata": None,
        "value": 0.3,
    },
    {
        "ts": "2024-05-01T12:00:01.000000Z",
        "sensor": "50f91cdc-fd19-40d2-b2b0-c90db3394981",
        "metadata": {"color": "blue"},
        "value": 10.3,
    },
    {"ts": "2024-05-01T12:00:02.000000Z", "sensor": None, "metadata": None, "value": 20.0},
]


def assert_adopted_and_served(url: str, log: Path, layout: str) -> None:
    tsapi = start_tsapi(url, log)
    try:
        assert httpx.get(f"{tsapi.base_url}/readyz").json()["storage"] == layout
        readings = httpx.get(f"{tsapi.base_url}/readings", params={"order": "asc"}).json()
        assert readings == TUTORIAL_READINGS
        new = {"sensor": "03307bae-d5b8-42ad-8f17-1c810e0fbe63", "value": 1}
        assert httpx.post(f"{tsapi.base_url}/readings", json=[new]).json() == 1
        assert sql(url, "SELECT count(*) FROM readings")[0][0] == 4
    finally:
        tsapi.stop()


def test_the_tutorials_plain_table_is_adopted_with_its_rows(
    backend: str, make_database: Any, tmp_path: Path
) -> None:
    url = make_database(backend)
    sql(url, TUTORIAL_TABLE)
    sql(url, TUTORIAL_ROWS)
    assert_adopted_and_served(url, tmp_path / "tsapi.log", "plain")


def test_an_adopted_tables_infinite_instants_are_answered_and_walked(
    backend: str, make_database: Any, tmp_path: Path
) -> None:
    # Only a table without partitions can hold them (tsapi refuses to write them). Python has
    # no such instants: they are answered as the extreme ones, which asyncpg takes for them.
    url = make_database(backend)
    sql(url, TUTORIAL_TABLE)
    sql(
        url,
        "INSERT INTO readings (ts, sensor, value) VALUES ('infinity', $1, 1),"
        " ('-infinity', $1, 2), ('2024-05-01 12:00:00+00', $1, 3)",
        "6f3e43a4-d1c1-4cb6-b928-0ac0efaf84a5",
    )
    tsapi = start_tsapi(url, tmp_path / "tsapi.log")
    try:
        with httpx.Client(base_url=tsapi.base_url) as api:
            whole = api.get("/readings", params={"order": "asc"}).json()
            assert [(r["ts"], r["value"]) for r in whole] == [
                ("0001-01-01T00:00:00.000000Z", 2),
                ("2024-05-01T12:00:00.000000Z", 3),
                ("9999-12-31T23:59:59.999999Z", 1),
            ]
            for order in ("asc", "desc"):
                walked, link = [], f"/readings?limit=1&order={order}"
                while link:
                    response = api.get(link)
                    assert response.status_code == 200, response.text
                    walked += response.json()
                    link = response.links.get("next", {}).get("url", "")
                assert walked == (whole if order == "asc" else whole[::-1])
    finally:
        tsapi.stop()


# Only where a TimescaleDB server is given (TSAPI_TEST_TIMESCALE_URL): defined there, not skipped
# elsewhere.
if "timescale" in BACKENDS:

    @pytest.mark.parametrize("backend", [b for b in BACKENDS if b == "timescale"], indirect=True)
    def test_the_tutorials_hypertable_is_adopted_with_its_rows(
        backend: str, make_database: Any, tmp_path: Path
    ) -> None:
        url = make_database(backend)
        sql(url, "CREATE EXTENSION IF NOT EXISTS timescaledb")
        sql(url, TUTORIAL_TABLE)
        sql(url, "SELECT create_hypertable('readings', 'ts')")
        sql(url, TUTORIAL_ROWS)
        assert_adopted_and_served(url, tmp_path / "tsapi.log", "hypertable")


@pytest.mark.parametrize(
    ("table", "reason"),
    [
        (
            "CREATE TABLE readings (ts timestamptz NOT NULL, sensor text, value double precision)",
            "column sensor is text, not uuid; column value is double precision, not numeric",
        ),
        ("CREATE TABLE readings (id integer)", "column ts is missing; column value is missing"),
    ],
)
@pytest.mark.parametrize("command", ["serve", "db upgrade"])
def test_an_incompatible_table_is_refused_with_the_reason_and_left_as_it_was(
    make_database: Any, clean_env: Path, table: str, reason: str, command: str
) -> None:
    url = make_database("embedded")
    sql(url, table)
    port = ["--port", "0"] if command == "serve" else []
    result = subprocess.run(
        [sys.executable, "-m", "tsapi", *command.split(), "--database-url", url, *port],
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=120,
    )
    assert result.returncode == 1
    error = json.loads(result.stderr.splitlines()[-1])
    assert error["event"] == f"tsapi {command} failed"
    assert error["error"] == (
        f"migration 0001_readings failed: the existing readings table cannot be adopted: {reason}"
        " (Rename that table, or point tsapi at another database.)"
    )
    columns = sql(
        url, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'readings'"
    )
    assert columns[0][0] == len(table.split(","))  # nothing was added
