"""Retention: whole partitions or chunks of old readings dropped, rollups kept until their own
retention (and never where readings remain), the per-sensor summaries recomputed to match the
readings left; readings older than the retention refused; ``tsapi db status``."""

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import sql, start_tsapi
from tests.support import wait_until
from tests.test_aggregates import wait_for_rollups
from tsapi import db, migrate, retention
from tsapi.durations import parse_duration
from tsapi.errors import ApiError
from tsapi.ingest import Batch
from tsapi.settings import Settings
from tsapi.storage import Layout, Storage, detect_layout

DAYS = 10
KEEP = timedelta(days=4)


def on_connection(url: str, work: Callable[[asyncpg.Connection], Any]) -> Any:
    async def run() -> Any:
        conn = await asyncpg.connect(url)
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(run())


def seed(api: httpx.Client) -> dict[str, str]:
    """Three sensors: one with only old readings, one across the whole range, one recent; a
    reading every 6 hours over DAYS days."""
    sensors = {name: str(uuid.uuid4()) for name in ("old", "across", "recent")}
    # Older than the current hour, so that every reading is materialized in every rollup.
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(minutes=1)
    readings = []
    for step in range(DAYS * 4):
        ts = now - timedelta(hours=6 * step)
        age = now - ts
        for name, sensor in sensors.items():
            if (name == "old" and age < KEEP + timedelta(days=2)) or (
                name == "recent" and age > timedelta(days=2)
            ):
                continue
            readings.append({"sensor": sensor, "ts": ts.isoformat(), "value": step})
    assert api.post("/readings", json=readings).json() == len(readings)
    return sensors


def truth(url: str) -> dict[str, dict[str, Any]]:
    rows = sql(
        url,
        "SELECT sensor, count(*) AS count, min(ts) AS first, max(ts) AS last"
        " FROM readings GROUP BY sensor",
    )
    return {str(row["sensor"]): dict(row) for row in rows}


def drop(url: str, keep: timedelta) -> retention.Dropped | None:
    async def work(conn: asyncpg.Connection) -> retention.Dropped | None:
        return await retention.drop_expired(conn, await detect_layout(conn), keep)

    result: retention.Dropped | None = on_connection(url, work)
    return result


def test_old_partitions_are_dropped_whole_and_summaries_match_what_is_left(
    api: httpx.Client, db_url: str
) -> None:
    sensors = seed(api)
    wait_for_rollups(db_url)
    hourly_before = api.get(
        "/readings/aggregate", params={"bucket": "1h", "fn": "count", "from": f"-{DAYS + 1}d"}
    ).json()
    before = truth(db_url)

    dropped = drop(db_url, KEEP)
    assert dropped is not None and dropped.names
    assert dropped.boundary <= datetime.now(UTC) - KEEP
    after = truth(db_url)
    oldest = sql(db_url, "SELECT min(ts) AS ts FROM readings")[0]["ts"]
    assert oldest >= dropped.boundary
    # Only whole partitions went: every reading newer than the boundary is still there.
    for sensor, was in before.items():
        if sensor in after:
            assert after[sensor]["last"] == was["last"]
    assert sensors["old"] not in after and sensors["recent"] in after

    for sensor, now in after.items():
        summary = api.get(f"/sensors/{sensor}").json()
        assert summary["count"] == now["count"]
        assert summary["first_ts"].startswith(now["first"].strftime("%Y-%m-%dT%H:%M:%S"))
    assert api.get(f"/sensors/{sensors['old']}").status_code == 404
    assert api.get("/readings/latest", params={"sensor": sensors["old"]}).json() == []
    listed = {row["sensor"] for row in api.get("/sensors").json()}
    assert listed == set(after)
    wait_for_rollups(db_url)  # and once the refresher has been round again, still so
    assert {r["sensor"]: r["count"] for r in api.get("/sensors").json()} == {
        sensor: now["count"] for sensor, now in after.items()
    }
    # The hourly rollups are kept: aggregates over the dropped days still answer them.
    hourly_after = api.get(
        "/readings/aggregate", params={"bucket": "1h", "fn": "count", "from": f"-{DAYS + 1}d"}
    ).json()
    assert hourly_after == hourly_before
    assert drop(db_url, KEEP) is None  # nothing more to drop


def seeded_then_dropped(api: httpx.Client, db_url: str) -> retention.Dropped:
    """What retention drops of the seeded readings once their rollups are materialized."""
    seed(api)
    wait_for_rollups(db_url)
    dropped = drop(db_url, KEEP)
    assert dropped is not None
    return dropped


def test_rebuilding_rollups_leaves_those_of_dropped_readings_alone(
    api: httpx.Client, db_url: str
) -> None:
    dropped = seeded_then_dropped(api, db_url)
    params = {"bucket": "1h", "fn": "count", "from": f"-{DAYS + 1}d"}
    before = api.get("/readings/aggregate", params=params).json()
    start = f"{datetime.now(UTC) - timedelta(days=DAYS + 1):%Y-%m-%d}"
    end = f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%S}"
    command = ["rollups", "rebuild", "--database-url", db_url, "--from", start, "--to", end]
    rebuild = subprocess.run(
        [sys.executable, "-m", "tsapi", *command],
        capture_output=True,
        text=True,
        check=False,
    )
    assert rebuild.returncode == 0, rebuild.stderr
    boundary = f"{dropped.boundary:%Y-%m-%d %H:%M:%S}"
    assert f"rollups before {boundary} UTC were left as they are" in rebuild.stdout
    assert f"rebuilt rollups from {boundary} to " in rebuild.stdout
    # The hourly counts of the dropped days are still the rollups' (the readings are gone).
    assert api.get("/readings/aggregate", params=params).json() == before


def test_rollups_go_after_their_own_retention_never_where_readings_remain(
    api: httpx.Client, db_url: str
) -> None:
    dropped = seeded_then_dropped(api, db_url)

    async def work(conn: asyncpg.Connection) -> int:
        layout = await detect_layout(conn)
        # Asked to keep less than the readings kept: rollups stay wherever readings are.
        return await retention.drop_old_rollups(conn, layout, timedelta(days=1))

    assert on_connection(db_url, work) > 0
    oldest = sql(
        db_url,
        "SELECT (SELECT min(bucket) FROM tsapi_rollup) AS rollup,"
        " (SELECT min(bucket) FROM tsapi_rollup_all) AS rollup_all",
    )[0]
    assert oldest["rollup"] >= dropped.boundary and oldest["rollup_all"] >= dropped.boundary
    # Aggregates from rollups and from readings agree again over everything that is left.
    for bucket in ("1h", "7m"):
        answer = api.get(
            "/readings/aggregate",
            params={"bucket": bucket, "fn": "count", "group": "none", "from": f"-{DAYS + 1}d"},
        ).json()
        assert sum(row["count"] for row in answer) == sum(
            r["count"] for r in truth(db_url).values()
        )


def test_readings_older_than_the_retention_are_refused_by_name(
    make_database: Callable[[str], str], tmp_path: Path
) -> None:
    url = make_database("embedded")
    tsapi = start_tsapi(url, tmp_path / "tsapi.log", TSAPI_RETENTION="2d")
    try:
        now = datetime.now(UTC)
        body = [
            {"sensor": str(uuid.uuid4()), "value": 1},
            {"sensor": str(uuid.uuid4()), "value": 2, "ts": (now - timedelta(days=3)).isoformat()},
            {"sensor": str(uuid.uuid4()), "value": 3, "ts": (now - timedelta(days=1)).isoformat()},
            {"sensor": str(uuid.uuid4()), "value": 4, "ts": "2001-01-01T00:00:00"},
        ]
        refused = httpx.post(f"{tsapi.base_url}/readings", json=body)
        assert refused.status_code == 422
        assert [(e["row"], e["field"]) for e in refused.json()["errors"]] == [(1, "ts"), (3, "ts")]
        assert "retention period (2d)" in refused.json()["errors"][0]["reason"]
        assert sql(url, "SELECT count(*) AS n FROM readings")[0]["n"] == 0
        assert httpx.post(f"{tsapi.base_url}/readings", json=body[2]).json() == 1
    finally:
        tsapi.stop()


def test_every_way_of_writing_refuses_readings_older_than_the_retention(
    make_database: Callable[[str], str],
) -> None:
    """Storage itself refuses them, so that streamed bodies and imports do as JSON bodies do."""
    url = make_database("embedded")
    settings = Settings(database_url=url)
    now = datetime.now(UTC)
    batch = Batch(
        timed=[
            (now - timedelta(hours=1), uuid.uuid4(), None, Decimal(1)),
            (now - timedelta(days=3), uuid.uuid4(), None, Decimal(2)),
        ]
    )

    async def write() -> None:
        conn = await db.connect(settings)
        try:
            await migrate.upgrade(conn, settings)
            storage = await Storage.open(conn, timedelta(days=1), retention=timedelta(days=2))
            await storage.write(conn, batch)
        finally:
            await conn.close()

    with pytest.raises(ApiError) as refused:
        asyncio.run(write())
    assert refused.value.status == 422 and "1 reading(s) older" in refused.value.message
    assert sql(url, "SELECT count(*) AS n FROM readings")[0]["n"] == 0


@pytest.mark.parametrize("partition_interval", ["1h", "90s"])
def test_tsapi_applies_retention_on_its_schedule(
    make_database: Callable[[str], str], tmp_path: Path, partition_interval: str
) -> None:
    """End to end, including partitions whose bounds do not fall on rollup buckets (90 s
    partitions, 1 minute buckets): a bucket straddling the boundary is recomputed."""
    url = make_database("embedded")
    env = {"TSAPI_ROLLUP_REFRESH_INTERVAL": "0.2", "TSAPI_PARTITION_INTERVAL": partition_interval}
    writer = start_tsapi(url, tmp_path / "writer.log", **env)
    # Three hours of readings, up to an hour before the current one (so all are materialized).
    # The cutoff below must fall amid them: not in the next hour, which would drop them all.
    now = datetime.now(UTC)
    if now.minute >= 58:
        time.sleep((now.replace(minute=59, second=59) - now).total_seconds() + 2)
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=4)
    sensor = str(uuid.uuid4())
    readings = [
        {"sensor": sensor, "value": step, "ts": (start + timedelta(seconds=20 * step)).isoformat()}
        for step in range(9 * 60)
    ]
    try:
        assert httpx.post(f"{writer.base_url}/readings", json=readings).json() == len(readings)
        wait_for_rollups(url)
    finally:
        writer.stop()
    keep = "2h"  # the cutoff falls amid the readings
    tsapi = start_tsapi(
        url,
        tmp_path / "tsapi.log",
        TSAPI_RETENTION=keep,
        TSAPI_MAINTENANCE_INTERVAL="0.2",
        **env,
    )
    try:
        width = parse_duration(partition_interval)
        cutoff = datetime.now(UTC) - timedelta(hours=2)
        wait_until(
            lambda: sql(url, "SELECT min(ts) AS ts FROM readings")[0]["ts"] > cutoff - 2 * width,
            what="the old partitions dropped",
        )
        wait_for_rollups(url)
        left = sql(url, "SELECT count(*) AS n, min(ts) AS first FROM readings")[0]
        summary = httpx.get(f"{tsapi.base_url}/sensors/{sensor}").json()
        assert summary["count"] == left["n"]
        per_minute = httpx.get(
            f"{tsapi.base_url}/readings/aggregate",
            params={"bucket": "1m", "fn": "count", "sensor": sensor, "from": "-6h"},
        ).json()
        raw = httpx.get(
            f"{tsapi.base_url}/readings/aggregate",
            params={"bucket": "20s", "fn": "count", "sensor": sensor, "from": "-6h"},
        ).json()
        # Where readings are left, the per-minute rollups count exactly them.
        assert sum(r["count"] for r in per_minute if r["bucket"] >= _iso(left["first"])) == sum(
            r["count"] for r in raw
        )
    finally:
        tsapi.stop()


def _iso(ts: datetime) -> str:
    minute = ts.replace(second=0, microsecond=0)
    return minute.isoformat().replace("+00:00", ".000000Z")


def test_db_status_shows_partitions_rollups_and_policies(
    make_database: Callable[[str], str], backend: str, tmp_path: Path
) -> None:
    url = make_database(backend)
    tsapi = start_tsapi(url, tmp_path / "tsapi.log", TSAPI_ROLLUP_REFRESH_INTERVAL="0.2")
    try:
        now = datetime.now(UTC) - timedelta(hours=2)  # materialized by every rollup
        httpx.post(
            f"{tsapi.base_url}/readings",
            json=[{"sensor": str(uuid.uuid4()), "value": 1, "ts": now.isoformat()}],
        )
        wait_for_rollups(url)
    finally:
        tsapi.stop()
    shown = subprocess.run(
        [sys.executable, "-m", "tsapi", "db", "status", "--database-url", url],
        capture_output=True,
        text=True,
        env={**os.environ, "TSAPI_RETENTION": "30d"},
        timeout=120,
        check=True,
    ).stdout
    layout = on_connection(url, detect_layout)
    assert f"storage: {layout.value}" in shown
    kind = "chunks" if layout is Layout.HYPERTABLE else "partitions"
    assert f"{kind}: " in shown and "rows" in shown and "B" in shown
    day = now.strftime("%Y-%m-%d")
    assert f"[{day}T00:00:00.000000Z" in shown  # a daily partition's lower bound
    assert "1m: materialized up to" in shown and "1h: materialized up to" in shown
    assert "retention: drop readings older than 30d" in shown
    assert "rollup retention: kept" in shown
    compression = "compression: off" if kind == "chunks" else "not available (needs TimescaleDB)"
    assert compression in shown
