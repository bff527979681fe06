"""Sensors and latest readings: exact whether they come from the maintained summary, from the
newest readings, or from rows written late; unknown sensors are 404s, malformed ids 400s."""

import asyncio
from typing import Any, cast

import asyncpg
import httpx
import pytest

from tests.conftest import sql
from tests.support import WritesAfterFirstRead
from tests.test_aggregates import wait_for_rollups
from tsapi import db, sensors
from tsapi.db import Connection
from tsapi.sensors import SensorFilter
from tsapi.settings import Settings

A = "6f3e43a4-d1c1-4cb6-b928-0ac0efaf84a5"
B = "d538f9fa-f6de-46e5-9fa2-d7ee9a0f0a68"
C = "5cb674a0-460d-4c80-8113-28927f658f5f"
TRUTH_SQL = """
SELECT sensor::text, count(*), min(ts) AS first_ts, max(ts) AS last_ts,
       (array_agg(value ORDER BY ts DESC, value DESC))[1] AS last_value
FROM readings GROUP BY sensor ORDER BY sensor"""


def seed(api: httpx.Client) -> None:
    readings = [
        {
            "sensor": sensor,
            "value": n * (i + 1),
            "ts": f"2024-05-01T{n:02d}:00:00Z",
            "metadata": {"room": f"r{i}", "n": n},
        }
        for n in range(12)
        for i, sensor in enumerate((A, B, C))
    ]
    assert api.post("/readings", json=readings).json() == 36


def truth(db_url: str) -> list[dict[str, Any]]:
    return [
        {
            "sensor": row["sensor"],
            "count": row["count"],
            "first_ts": row["first_ts"].strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "last_ts": row["last_ts"].strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "last_value": float(row["last_value"]),
        }
        for row in sql(db_url, TRUTH_SQL)
    ]


def listed(api: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = api.get("/sensors", params=params)
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()
    return rows


def without_metadata(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "metadata"} for row in rows]


def test_sensors_are_exact_before_and_after_the_summary_catches_up(
    api: httpx.Client, db_url: str
) -> None:
    seed(api)
    assert without_metadata(listed(api)) == truth(db_url)
    wait_for_rollups(db_url)
    assert without_metadata(listed(api)) == truth(db_url)
    late = [
        {"sensor": A, "value": 99, "ts": "2024-05-01T03:30:00Z"},
        {"sensor": B, "value": 7, "ts": "2024-05-02T00:00:00Z", "metadata": {"room": "moved"}},
        {"sensor": B, "value": 8, "ts": "2024-05-02T00:00:00Z", "metadata": {"room": "moved"}},
    ]
    api.post("/readings", json=late)
    assert without_metadata(listed(api)) == truth(db_url)
    wait_for_rollups(db_url)
    sensors = listed(api)
    assert without_metadata(sensors) == truth(db_url)
    assert {s["sensor"]: s["metadata"] for s in sensors}[B] == {"room": "moved"}


def test_a_write_between_reading_the_rollup_state_and_the_summaries_is_counted(
    api: httpx.Client, db_url: str
) -> None:
    """The rollup state the summaries rest on and the summaries are read in two statements: a
    late reading written in between is counted once, as the readings hold it."""
    seed(api)
    wait_for_rollups(db_url)
    late = [{"sensor": A, "value": 99, "ts": "2024-05-01T03:30:00Z"}]

    def write() -> None:
        assert api.post("/readings", json=late).json() == 1

    async def ask() -> list[asyncpg.Record]:
        conn = await db.connect(Settings(database_url=db_url))
        try:
            racing = cast(Connection, WritesAfterFirstRead(conn, write))
            return await sensors.summaries(racing, SensorFilter())
        finally:
            await conn.close()

    counted = {str(row["sensor"]): row["count"] for row in asyncio.run(ask())}
    assert counted == {row["sensor"]: row["count"] for row in truth(db_url)}
    assert counted[A] == 13


def test_sensors_filter_by_metadata_and_paginate(api: httpx.Client, db_url: str) -> None:
    seed(api)
    wait_for_rollups(db_url)
    assert [s["sensor"] for s in listed(api, metadata='{"room": "r1"}')] == [B]
    first = api.get("/sensors", params={"limit": 2, "metadata": "{}"})  # {}: every sensor
    assert [s["sensor"] for s in first.json()] == sorted([A, B, C])[:2]
    following = first.links["next"]["url"]
    # Relative to this server, as the readings' links are; the filter kept, the page moved on.
    assert following.startswith("/sensors?")
    url = httpx.URL(following)
    assert (url.params["metadata"], url.params["limit"]) == ("{}", "2")
    assert url.params["after"] == sorted([A, B, C])[1]
    rest = api.get(following)
    assert [s["sensor"] for s in rest.json()] == sorted([A, B, C])[2:]
    assert "link" not in rest.headers


def test_one_sensor_and_its_latest_reading(api: httpx.Client, db_url: str) -> None:
    seed(api)
    summary = api.get(f"/sensors/{B}").json()
    assert summary["count"] == 12 and summary["last_value"] == 22
    assert summary["metadata"] == {"room": "r1", "n": 11}
    latest = api.get(f"/sensors/{B}/latest").json()
    assert latest == {
        "ts": "2024-05-01T11:00:00.000000Z",
        "sensor": B,
        "metadata": {"room": "r1", "n": 11},
        "value": 22,
    }


def test_latest_of_many_sensors_in_one_call(api: httpx.Client, db_url: str) -> None:
    seed(api)
    wait_for_rollups(db_url)
    api.post(
        "/readings",
        json=[{"sensor": C, "value": -1, "ts": "2024-05-01T11:00:00Z"}, {"sensor": A, "value": 5}],
    )
    rows = api.get("/readings/latest", params={"sensor": f"{A},{C}"}).json()
    assert [(r["sensor"], r["value"]) for r in rows] == sorted([(A, 5), (C, 33)])
    everything = api.get("/readings/latest").json()
    assert {r["sensor"] for r in everything} == {A, B, C}


@pytest.mark.parametrize("path", ["/sensors/{id}", "/sensors/{id}/latest"])
def test_unknown_sensors_are_404_and_malformed_ids_400(api: httpx.Client, path: str) -> None:
    missing = api.get(path.format(id="00000000-0000-0000-0000-000000000000"))
    assert missing.status_code == 404
    assert "no readings" in missing.json()["error"]
    malformed = api.get(path.format(id="not-a-uuid"))
    assert malformed.status_code == 400
    assert malformed.json()["parameter"] == "sensor"


def test_sensors_bad_parameters(api: httpx.Client) -> None:
    for params, parameter in (
        ({"limit": "0"}, "limit"),
        ({"after": "x"}, "after"),
        ({"metadata": "{"}, "metadata"),
        ({"sensor": "x"}, "sensor"),
    ):
        response = api.get("/sensors", params=params)
        assert response.status_code == 400
        assert response.json()["parameter"] == parameter
