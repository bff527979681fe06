"""dedupe = skip or replace: one reading per sensor and instant, on every backend; duplicates in a
batch collapse, the count answered is what was inserted or replaced, aggregates stay exact, and a
table that already holds duplicates is a clear error at startup."""

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Tsapi, _empty, free_port, sql, start_tsapi
from tests.test_aggregates import ALL, aggregate, expected, wait_for_rollups
from tsapi import db, dedupe
from tsapi.errors import ApiError
from tsapi.ingest import Batch
from tsapi.settings import Settings
from tsapi.storage import Storage

SENSOR = "6f3e43a4-d1c1-4cb6-b928-0ac0efaf84a5"
OTHER = "d538f9fa-f6de-46e5-9fa2-d7ee9a0f0a68"
T1, T2 = "2024-05-01T12:00:00Z", "2024-05-01T12:00:01Z"


@pytest.fixture(scope="module", params=["skip", "replace"])
def deduping(
    request: pytest.FixtureRequest,
    backend: str,
    make_database: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, Tsapi]]:
    mode: str = request.param
    log_path = tmp_path_factory.mktemp(f"dedupe-{mode}") / "tsapi.log"
    server = start_tsapi(
        make_database(backend),
        log_path,
        TSAPI_DEDUPE=mode,
        TSAPI_ROLLUP_REFRESH_INTERVAL="0.2",
    )
    yield mode, server
    server.stop()


@pytest.fixture
def client(deduping: tuple[str, Tsapi]) -> Iterator[httpx.Client]:
    asyncio.run(_empty(deduping[1].database_url))
    with httpx.Client(base_url=deduping[1].base_url, timeout=60) as client:
        yield client


def stored(url: str) -> list[tuple[str, str, str | None]]:
    rows = sql(
        url,
        "SELECT sensor::text, value::text, metadata::text FROM readings ORDER BY ts, sensor",
    )
    return [(row["sensor"], row["value"], row["metadata"]) for row in rows]


def test_a_stored_reading_is_skipped_or_replaced(
    client: httpx.Client, deduping: tuple[str, Tsapi]
) -> None:
    mode, server = deduping
    first = {"sensor": SENSOR, "value": 1, "ts": T1, "metadata": {"a": 1}}
    assert client.post("/readings", json=first).json() == 1
    again = [
        {"sensor": SENSOR, "value": "2.50", "ts": "2024-05-01T14:00:00+02:00", "metadata": None},
        {"sensor": SENSOR, "value": 5, "ts": T2},
    ]
    answered = client.post("/readings", json=again).json()
    if mode == "skip":
        assert answered == 1
        assert stored(server.database_url) == [(SENSOR, "1", '{"a": 1}'), (SENSOR, "5", None)]
    else:
        assert answered == 2  # one inserted, one replaced
        assert stored(server.database_url) == [(SENSOR, "2.50", None), (SENSOR, "5", None)]
    # The same again: skip inserts nothing; replace replaces both, and says so.
    assert client.post("/readings", json=again).json() == (0 if mode == "skip" else 2)
    assert len(stored(server.database_url)) == 2


def test_duplicates_within_a_batch_collapse_first_or_last_wins(
    client: httpx.Client, deduping: tuple[str, Tsapi]
) -> None:
    mode, server = deduping
    batch = [
        {"sensor": SENSOR, "value": 1, "ts": T1},
        {"sensor": OTHER, "value": 10, "ts": T1},
        {"sensor": SENSOR.upper(), "value": 2, "ts": T1},  # the same sensor, spelled otherwise
        {"sensor": SENSOR, "value": 3, "ts": "2024-05-01T12:00:00.000000+00:00"},
        {"sensor": SENSOR, "value": 7},  # untimed rows of one sensor share now()
        {"sensor": SENSOR, "value": 8},
    ]
    response = client.post("/readings", json=batch)
    assert (response.status_code, response.json()) == (200, 3)
    rows = sql(
        server.database_url,
        "SELECT sensor::text, value::text FROM readings ORDER BY ts, sensor",
    )
    kept = [(row["sensor"], row["value"]) for row in rows]
    if mode == "skip":
        assert kept == [(SENSOR, "1"), (OTHER, "10"), (SENSOR, "7")]
    else:
        assert kept == [(SENSOR, "3"), (OTHER, "10"), (SENSOR, "8")]


def test_aggregates_stay_exact_when_readings_are_replaced(
    client: httpx.Client, deduping: tuple[str, Tsapi]
) -> None:
    mode, server = deduping
    start = datetime(2024, 3, 30, tzinfo=UTC)
    readings = [
        {
            "sensor": sensor,
            "value": minute % 17,
            "ts": (start + timedelta(minutes=minute)).isoformat(),
        }
        for minute in range(0, 1440, 10)
        for sensor in (SENSOR, OTHER)
    ]
    assert client.post("/readings", json=readings).json() == len(readings)
    wait_for_rollups(server.database_url)
    changed = [{**reading, "value": 1000 + i} for i, reading in enumerate(readings[::7])]
    assert client.post("/readings", json=changed).json() == (0 if mode == "skip" else len(changed))
    truth = expected(server.database_url, "1 hour")
    assert Decimal(1000) in {row["max"] for row in truth} or mode == "skip"
    assert aggregate(client, bucket="1h", fn=ALL) == truth
    wait_for_rollups(server.database_url)
    assert aggregate(client, bucket="1h", fn=ALL) == truth


def test_existing_duplicates_stop_tsapi_with_how_to_find_them(
    clean_env: Path, backend: str, make_database: Any
) -> None:
    url = make_database(backend)
    command = [sys.executable, "-m", "tsapi"]
    assert subprocess.run([*command, "db", "upgrade", "--database-url", url]).returncode == 0
    sql(
        url,
        """DO $$ BEGIN
               IF EXISTS (SELECT FROM pg_partitioned_table
                          WHERE partrelid = 'readings'::regclass) THEN
                   PERFORM tsapi_ensure_partitions(ARRAY[timestamptz '2024-05-01'], '1 day');
               END IF;
           END $$""",
    )
    sql(
        url,
        "INSERT INTO readings VALUES ($1, $2, NULL, 1), ($1, $2, NULL, 2)",
        datetime(2024, 5, 1, 12, tzinfo=UTC),
        uuid.UUID(SENSOR),
    )
    env = {**os.environ, "TSAPI_DEDUPE": "skip"}
    refused = subprocess.run(
        [*command, "serve", "--port", str(free_port()), "--database-url", url],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert refused.returncode == 1
    assert "tsapi serve failed" in refused.stderr
    assert "readings already holds more than one reading for a sensor and instant" in refused.stderr
    assert dedupe.FIND_DUPLICATES in refused.stderr
    assert sql(url, "SELECT count(*) FROM readings")[0][0] == 2  # nothing changed

    sql(url, "DELETE FROM readings WHERE value = 2")
    upgraded = subprocess.run(
        [*command, "db", "upgrade", "--database-url", url], env=env, capture_output=True
    )
    assert upgraded.returncode == 0, upgraded.stderr
    assert sql(url, "SELECT to_regclass($1) IS NOT NULL", dedupe.INDEX)[0][0]

    # With dedupe off again, the index stays; a duplicate is a 409, not a 500.
    async def write_duplicate() -> None:
        conn = await db.connect(Settings(database_url=url))
        try:
            storage = await Storage.open(conn, timedelta(days=1))
            row = (datetime(2024, 5, 1, 12, tzinfo=UTC), uuid.UUID(SENSOR), None, Decimal(3))
            await storage.write(conn, Batch(timed=[row]))
        finally:
            await conn.close()

    with pytest.raises(ApiError) as refusal:
        asyncio.run(write_duplicate())
    assert refusal.value.status == 409
    assert sql(url, "SELECT value FROM readings")[0][0] == 1
