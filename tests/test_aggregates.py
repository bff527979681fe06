"""GET /readings/aggregate: answers equal those computed from the raw rows, whether they come
from rollups, from readings not rolled up yet, or from rows written late; gap filling; time
zones; and every bad parameter refused up front."""

import asyncio
import subprocess
import sys
import time
from decimal import Decimal
from typing import Any, cast

import httpx
import pytest
from starlette.datastructures import QueryParams

from tests.conftest import sql
from tests.support import WritesAfterFirstRead
from tsapi import db
from tsapi.aggregate_params import parse_aggregate_query
from tsapi.aggregates import run_aggregate
from tsapi.db import Connection
from tsapi.formats import format_ts
from tsapi.settings import Settings

SENSORS = [
    "6f3e43a4-d1c1-4cb6-b928-0ac0efaf84a5",
    "d538f9fa-f6de-46e5-9fa2-d7ee9a0f0a68",
    "5cb674a0-460d-4c80-8113-28927f658f5f",
]
ALL = "avg,min,max,sum,count,first,last"
EXPECTED_SQL = """
SELECT sensor::text,
       date_bin($1::text::interval, ts, timestamptz '0001-01-01 00:00:00+00') AS bucket,
       avg(value), min(value), max(value), sum(value), count(*),
       (array_agg(value ORDER BY ts, value))[1] AS first,
       (array_agg(value ORDER BY ts DESC, value DESC))[1] AS last
FROM readings GROUP BY 1, 2 ORDER BY 1, 2"""


def seed(api: httpx.Client) -> int:
    """Three sensors every 10 minutes over two days of 2024, two readings sharing each ts."""
    readings = [
        {
            "sensor": sensor,
            "value": f"{(minute * 7 + index * 13) % 101}.{minute % 7}",
            "ts": f"2024-03-{30 + minute // 1440:02d}"
            f"T{minute // 60 % 24:02d}:{minute % 60:02d}:00Z",
        }
        for minute in range(0, 2 * 1440, 10)
        for index, sensor in enumerate(SENSORS)
        for _ in range(2)
    ]
    readings.append({"sensor": SENSORS[0], "value": "-5", "ts": "2024-03-30T05:00:00Z"})
    answered: int = api.post("/readings", json=readings).json()
    return answered


def wait_for_rollups(db_url: str) -> None:
    """Until everything written is materialized (the test server refreshes every 0.2 s)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = sql(
            db_url,
            "SELECT (SELECT count(*) FROM tsapi_rollup_log) AS pending,"
            " (SELECT min(materialized) FROM tsapi_rollup_state) AS materialized,"
            " (SELECT max(ts) FROM readings) AS newest",
        )[0]
        if state["pending"] == 0 and state["materialized"] > state["newest"]:
            return
        time.sleep(0.1)
    raise AssertionError("rollups were not refreshed in 30 s")


def expected(db_url: str, bucket: str) -> list[dict[str, Any]]:
    rows = sql(db_url, EXPECTED_SQL, bucket)
    return [
        {
            "sensor": row["sensor"],
            "bucket": row["bucket"].strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            **{fn: row[fn] for fn in ("avg", "min", "max", "sum", "count", "first", "last")},
        }
        for row in rows
    ]


def aggregate(api: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = api.get("/readings/aggregate", params=params)
    assert response.status_code == 200, response.text
    # Exact numbers: parse JSON numbers as Decimal, as the database computed them.
    rows: list[dict[str, Any]] = response.json(parse_float=Decimal, parse_int=Decimal)
    for row in rows:
        if "count" in row:
            row["count"] = int(row["count"])
    return rows


@pytest.mark.parametrize("bucket", ["1h", "1d", "30m", "7m"])
def test_aggregates_equal_the_raw_computation_before_and_after_rollup(
    api: httpx.Client, db_url: str, bucket: str
) -> None:
    seed(api)
    interval = {"1h": "1 hour", "1d": "1 day", "30m": "30 minutes", "7m": "7 minutes"}[bucket]
    truth = expected(db_url, interval)
    assert aggregate(api, bucket=bucket, fn=ALL) == truth
    wait_for_rollups(db_url)
    assert aggregate(api, bucket=bucket, fn=ALL) == truth


@pytest.mark.parametrize("bucket", ["1h", "7m"])
def test_aggregates_across_sensors_equal_the_raw_computation_before_and_after_rollup(
    api: httpx.Client, db_url: str, bucket: str
) -> None:
    seed(api)  # readings of several sensors share each instant: first and last break ties
    rows = sql(
        db_url,
        "SELECT date_bin($1::text::interval, ts, timestamptz '0001-01-01 00:00:00+00') AS bucket,"
        " avg(value), min(value), max(value), sum(value), count(*),"
        " (array_agg(value ORDER BY ts, value))[1] AS first,"
        " (array_agg(value ORDER BY ts DESC, value DESC))[1] AS last"
        " FROM readings GROUP BY 1 ORDER BY 1",
        {"1h": "1 hour", "7m": "7 minutes"}[bucket],
    )
    truth = [{**row, "bucket": row["bucket"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")} for row in rows]
    assert aggregate(api, bucket=bucket, fn=ALL, group="none") == truth
    wait_for_rollups(db_url)
    assert aggregate(api, bucket=bucket, fn=ALL, group="none") == truth


def test_rollups_answer_and_rebuild_brings_them_back_to_the_readings(
    api: httpx.Client, db_url: str
) -> None:
    seed(api)
    wait_for_rollups(db_url)
    window = {"from": "2024-03-30T00:00:00Z", "to": "2024-04-01T00:00:00Z"}
    truth = aggregate(api, bucket="1h", fn=ALL, sensor=SENSORS[1], **window)
    # A change behind tsapi's back is not seen by the rollups that answer...
    sql(db_url, "UPDATE readings SET value = value + 1000 WHERE sensor = $1::uuid", SENSORS[1])
    assert aggregate(api, bucket="1h", fn=ALL, sensor=SENSORS[1], **window) == truth
    # ...until the range is rebuilt.
    rebuild = subprocess.run(
        [
            sys.executable,
            "-m",
            "tsapi",
            "rollups",
            "rebuild",
            "--database-url",
            db_url,
            "--from",
            "2024-03-01",
            "--to",
            "2024-05-01",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert rebuild.returncode == 0, rebuild.stderr
    # From the first partition or chunk on, where readings begin: not before.
    assert "rebuilt rollups from 2024-03-" in rebuild.stdout
    assert " to 2024-05-01 00:00:00 UTC" in rebuild.stdout
    rebuilt = aggregate(api, bucket="1h", fn=ALL, sensor=SENSORS[1], **window)
    assert rebuilt == [r for r in expected(db_url, "1 hour") if r["sensor"] == SENSORS[1]]
    assert rebuilt[0]["min"] == truth[0]["min"] + 1000


def test_late_rows_count_at_once_and_after_refresh(api: httpx.Client, db_url: str) -> None:
    seed(api)
    wait_for_rollups(db_url)
    late = [
        {"sensor": SENSORS[2], "value": 1000, "ts": "2024-03-30T12:34:56.789Z"},
        {"sensor": SENSORS[2], "value": -1000, "ts": "2024-03-31T00:00:00Z"},
        {"sensor": SENSORS[0], "value": 3, "ts": "2024-03-31T23:59:59.999999Z"},
    ]
    assert api.post("/readings", json=late).json() == 3
    truth = expected(db_url, "1 hour")
    assert aggregate(api, bucket="1h", fn=ALL) == truth
    wait_for_rollups(db_url)
    assert aggregate(api, bucket="1h", fn=ALL) == truth


def test_group_none_and_filters(api: httpx.Client, db_url: str) -> None:
    seed(api)
    rows = sql(
        db_url,
        "SELECT date_bin('6 hours', ts, '0001-01-01') AS bucket, avg(value), count(*)"
        " FROM readings WHERE sensor = ANY($1::uuid[])"
        " AND ts >= '2024-03-30T06:00:00Z' AND ts < '2024-03-31T06:00:00Z' GROUP BY 1 ORDER BY 1",
        SENSORS[:2],
    )
    truth = [
        {
            "bucket": r["bucket"].strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "avg": r["avg"],
            "count": r["count"],
        }
        for r in rows
    ]
    params = {
        "bucket": "6h",
        "fn": "avg,count",
        "group": "none",
        "sensor": ",".join(SENSORS[:2]),
        "from": "2024-03-30T06:00:00Z",
        "to": "2024-03-31T06:00:00Z",
    }
    assert aggregate(api, **params) == truth
    wait_for_rollups(db_url)
    assert aggregate(api, **params) == truth


def test_days_align_to_the_requested_time_zone_across_dst(api: httpx.Client, db_url: str) -> None:
    seed(api)  # 2024-03-31 is when Paris moves its clocks forward
    rows = sql(
        db_url,
        "SELECT (date_bin('1 day', ts AT TIME ZONE 'Europe/Paris', '0001-01-01')"
        " AT TIME ZONE 'Europe/Paris') AS bucket, max(value), count(*)"
        " FROM readings GROUP BY 1 ORDER BY 1",
    )
    truth = [
        {
            "bucket": r["bucket"].strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "max": r["max"],
            "count": r["count"],
        }
        for r in rows
    ]
    assert [t["bucket"] for t in truth] == [
        "2024-03-29T23:00:00.000000Z",
        "2024-03-30T23:00:00.000000Z",
        "2024-03-31T22:00:00.000000Z",
    ]
    params = {"bucket": "1d", "fn": "max,count", "group": "none", "tz": "Europe/Paris"}
    assert aggregate(api, **params) == truth
    wait_for_rollups(db_url)
    assert aggregate(api, **params) == truth


def test_weeks_start_on_mondays(api: httpx.Client) -> None:
    api.post("/readings", json=[{"sensor": SENSORS[0], "value": 1, "ts": "2024-05-01T12:00:00Z"}])
    (row,) = aggregate(api, bucket="1w", fn="count")
    assert row["bucket"] == "2024-04-29T00:00:00.000000Z"  # the Monday before


def test_gap_filling_gives_one_point_per_bucket(api: httpx.Client) -> None:
    sensor = SENSORS[0]
    readings = [
        {"sensor": sensor, "value": 10, "ts": "2024-05-01T01:30:00Z"},
        {"sensor": sensor, "value": 40, "ts": "2024-05-01T04:10:00Z"},
    ]
    api.post("/readings", json=readings)
    window = {
        "bucket": "1h",
        "sensor": sensor,
        "from": "2024-05-01T00:00:00Z",
        "to": "2024-05-01T06:00:00Z",
    }
    hours = [f"2024-05-01T0{h}:00:00.000000Z" for h in range(6)]

    nulls = aggregate(api, fn="avg,count", fill="null", **window)
    assert [r["bucket"] for r in nulls] == hours
    assert [r["avg"] for r in nulls] == [None, 10, None, None, 40, None]
    assert [r["count"] for r in nulls] == [0, 1, 0, 0, 1, 0]

    previous = aggregate(api, fn="avg", fill="previous", **window)
    assert [r["avg"] for r in previous] == [None, 10, 10, 10, 40, 40]

    linear = aggregate(api, fn="avg", fill="linear", **window)
    assert [r["avg"] for r in linear] == [None, 10, 20, 30, 40, None]

    plain = aggregate(api, fn="avg", **window)
    assert [r["bucket"] for r in plain] == [hours[1], hours[4]]


def test_an_empty_range_answers_an_empty_array(api: httpx.Client) -> None:
    assert aggregate(api, bucket="1h") == []


@pytest.mark.parametrize("sensor", [None, SENSORS[1]])
def test_a_range_open_on_one_side_ends_where_the_readings_do(
    api: httpx.Client, sensor: str | None
) -> None:
    seed(api)  # 2024-03-30T00:00 to 2024-03-31T23:50
    chosen = {} if sensor is None else {"sensor": sensor}
    whole = aggregate(api, bucket="1h", fn=ALL, **chosen)
    middle = "2024-03-31T00:00:00.000000Z"
    since = aggregate(api, bucket="1h", fn=ALL, **{"from": middle}, **chosen)
    assert since == [row for row in whole if row["bucket"] >= middle]
    until = aggregate(api, bucket="1h", fn=ALL, to=middle, **chosen)
    assert until == [row for row in whole if row["bucket"] < middle]
    filled = aggregate(api, bucket="1h", fn="count", group="none", fill="null", **{"from": middle})
    buckets = [row["bucket"] for row in filled]  # one a hour, up to the last reading's
    assert (len(buckets), buckets[0], buckets[-1]) == (24, middle, "2024-03-31T23:00:00.000000Z")
    assert aggregate(api, bucket="1h", **{"from": "2024-04-01T00:00:00Z"}, **chosen) == []
    assert aggregate(api, bucket="1h", to="2024-03-30T00:00:00Z", **chosen) == []


def test_relative_bounds_near_and_far_resolve_against_the_databases_now(
    api: httpx.Client,
) -> None:
    total = seed(api)  # on 2024-03-30 and 31, years before the tests run

    def counted(**window: str) -> int:
        rows = aggregate(api, bucket="10000w", fn="count", group="none", **window)
        return sum(row["count"] for row in rows)

    # Resolved within the aggregate's own statement, and, beyond a thousand years, apart.
    for since in ("-5000d", "-100000w"):
        assert counted(**{"from": since}) == total
        assert counted(**{"from": since}, to="now") == total
    assert counted(**{"from": "-1d"}) == 0
    assert counted(to="-5000d") == 0
    far = api.get("/readings/aggregate", params={"bucket": "1h", "from": "-1000000w"})
    assert far.status_code == 400, far.text
    assert far.json()["parameter"] == "from"


@pytest.mark.parametrize(
    "written, window",
    [
        # Late, into hours the rollups have materialized: half seen, the rollup would miss it.
        ("2024-03-30T05:30:00Z", {"from": "2024-03-30T00:00:00Z", "to": "2024-04-01T00:00:00Z"}),
        # After the newest reading, with the range open: it is where the range now ends.
        ("2024-03-31T23:55:00Z", {"from": "2024-03-30T00:00:00Z"}),
    ],
)
def test_a_write_between_an_aggregates_plan_and_its_rows_is_seen_whole(
    api: httpx.Client, db_url: str, written: str, window: dict[str, str]
) -> None:
    """The plan (the rollups' state, where readings end) and the rows are read in two statements;
    an answer still holds the readings of one moment: here, all those written."""
    seed(api)
    wait_for_rollups(db_url)
    late = [{"sensor": SENSORS[1], "value": "1000", "ts": written}]

    def write() -> None:
        assert api.post("/readings", json=late).json() == 1

    async def ask() -> list[dict[str, Any]]:
        settings = Settings(database_url=db_url)
        conn = await db.connect(settings)
        try:
            query = parse_aggregate_query(
                QueryParams({"bucket": "1h", "fn": ALL, "sensor": SENSORS[1], **window}), 1000
            )
            racing = cast(Connection, WritesAfterFirstRead(conn, write))
            return await run_aggregate(racing, query, settings.rollup_widths, 1000)
        finally:
            await conn.close()

    answer = [
        {**row, "sensor": str(row["sensor"]), "bucket": format_ts(row["bucket"])}
        for row in asyncio.run(ask())
    ]
    truth = [row for row in expected(db_url, "1 hour") if row["sensor"] == SENSORS[1]]
    assert answer == truth
    assert any(row["max"] == 1000 for row in answer)


@pytest.mark.parametrize(
    "params, parameter",
    [
        ({}, "bucket"),
        ({"bucket": "soon"}, "bucket"),
        ({"bucket": "0s"}, "bucket"),
        ({"bucket": "1h", "fn": "median"}, "fn"),
        ({"bucket": "1h", "group": "room"}, "group"),
        ({"bucket": "1h", "fill": "zero"}, "fill"),
        ({"bucket": "1h", "tz": "Mars/Olympus"}, "tz"),
        ({"bucket": "1h", "metadata": "[1]"}, "metadata"),
        ({"bucket": "1s", "from": "2024-01-01T00:00:00Z", "to": "2024-02-01T00:00:00Z"}, "bucket"),
        ({"bucket": "1h", "from": "2024-02-01T00:00:00Z", "to": "2024-01-01T00:00:00Z"}, "from"),
        ({"bucket": "1h", "sensor": "nope"}, "sensor"),
    ],
)
def test_bad_parameters_are_refused_up_front(
    api: httpx.Client, params: dict[str, str], parameter: str
) -> None:
    response = api.get("/readings/aggregate", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["parameter"] == parameter


def test_a_query_over_its_time_budget_is_cancelled_and_the_pool_recovers(
    make_database: Any, tmp_path: Any
) -> None:
    from tests.conftest import start_tsapi

    server = start_tsapi(
        make_database("embedded"),
        tmp_path / "tsapi.log",
        TSAPI_STATEMENT_TIMEOUT="0.05",
        TSAPI_POOL_MIN_SIZE="1",
        TSAPI_POOL_MAX_SIZE="1",
    )
    try:
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            sql(
                server.database_url,
                "SELECT tsapi_ensure_partitions(ARRAY(SELECT generate_series("
                "'2024-01-01'::timestamptz, '2024-01-05', '1 day')), '1 day')",
            )
            sql(
                server.database_url,
                "INSERT INTO readings (ts, sensor, value) SELECT"
                " '2024-01-01'::timestamptz + n * interval '1 second', gen_random_uuid(), n"
                " FROM generate_series(1, 300000) AS n",
            )
            # 7 s buckets: no rollup tiles them, so every row is read.
            slow = client.get("/readings/aggregate", params={"bucket": "7s", "fn": "first,last"})
            assert slow.status_code == 503
            assert "longer than the 0.05 s allowed" in slow.json()["error"]
            assert client.get("/readings", params={"limit": 1}).status_code == 200
    finally:
        server.stop()


def test_aggregates_in_ndjson_and_csv(api: httpx.Client) -> None:
    import csv
    import io
    import json

    seed(api)
    params = {"bucket": "1d", "fn": "count,max", "group": "none"}
    as_json = aggregate(api, **params)
    ndjson = api.get("/readings/aggregate", params={**params, "format": "ndjson"})
    assert ndjson.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line, parse_float=Decimal) for line in ndjson.text.splitlines()]
    assert lines == [{**row, "count": int(row["count"])} for row in as_json]
    by_accept = api.get("/readings/aggregate", params=params, headers={"Accept": "text/csv"})
    table = list(csv.reader(io.StringIO(by_accept.text)))
    assert table[0] == ["bucket", "count", "max"]
    assert [[r["bucket"], str(r["count"]), str(r["max"])] for r in as_json] == table[1:]
