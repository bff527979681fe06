"""Partitions appear as rows arrive: across period boundaries, for concurrent first writers, far
from today, and around partitions made with another width. Rows never fail for want of one."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.conftest import sql
from tsapi import db, migrate
from tsapi.ingest import Batch
from tsapi.settings import Settings
from tsapi.storage import COPY_FROM_ROWS, Layout, Storage

SENSOR = uuid.UUID("6f3e43a4-d1c1-4cb6-b928-0ac0efaf84a5")


@pytest.fixture
def fresh_db(make_database: Any) -> Iterator[str]:
    """An empty database on the embedded server, migrated."""
    url: str = make_database("embedded")
    asyncio.run(_upgrade(url))
    yield url


async def _upgrade(url: str, width: timedelta = timedelta(days=1)) -> None:
    settings = Settings(database_url=url, partition_interval=width)
    conn = await db.connect(settings)
    try:
        await migrate.upgrade(conn, settings)
    finally:
        await conn.close()


def partitions(url: str) -> list[tuple[str, str]]:
    rows = sql(
        url,
        "SELECT to_char(lower AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') AS lower,"
        " to_char(upper AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') AS upper"
        " FROM tsapi_partitions ORDER BY tsapi_partitions.lower",
    )
    return [(row["lower"], row["upper"]) for row in rows]


def batch_at(*stamps: datetime) -> Batch:
    return Batch(timed=[(ts, SENSOR, None, Decimal(1)) for ts in stamps])


async def write(url: str, batch: Batch, width: timedelta = timedelta(days=1)) -> int:
    """Write through a Storage of its own, as a separate tsapi process would."""
    settings = Settings(database_url=url)
    conn = await db.connect(settings)
    try:
        storage = await Storage.open(conn, width)
        return await storage.write(conn, batch)
    finally:
        await conn.close()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_plain_postgresql_gets_a_partitioned_table(fresh_db: str) -> None:
    layout = sql(fresh_db, "SELECT count(*) FROM pg_partitioned_table")[0][0]
    assert layout == 1


def test_rows_spanning_period_boundaries_land_in_daily_partitions(fresh_db: str) -> None:
    stamps = [at("2020-02-28T23:59:59.999999"), at("2020-02-29T00:00:00"), at("2020-03-01T12:00")]
    assert asyncio.run(write(fresh_db, batch_at(*stamps))) == 3
    made = [p for p in partitions(fresh_db) if p[0].startswith("2020")]
    assert made == [
        ("2020-02-28 00:00", "2020-02-29 00:00"),
        ("2020-02-29 00:00", "2020-03-01 00:00"),
        ("2020-03-01 00:00", "2020-03-02 00:00"),
    ]
    per_partition = sql(
        fresh_db,
        "SELECT tableoid::regclass::text AS part, count(*) FROM readings GROUP BY 1 ORDER BY 1",
    )
    assert [row["count"] for row in per_partition] == [1, 1, 1]


def test_the_current_and_coming_periods_exist_before_their_first_row(fresh_db: str) -> None:
    async def open_storage() -> Layout:
        conn = await db.connect(Settings(database_url=fresh_db))
        try:
            return (await Storage.open(conn, timedelta(days=1))).layout
        finally:
            await conn.close()

    assert asyncio.run(open_storage()) is Layout.PARTITIONED
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d 00:00")
    assert tomorrow in [lower for lower, _ in partitions(fresh_db)]


def test_concurrent_first_writers_to_a_new_period_all_succeed(fresh_db: str) -> None:
    async def race() -> list[int]:
        batches = [
            batch_at(
                *(at("2031-07-04T00:00") + timedelta(minutes=writer * 7 + n) for n in range(50))
            )
            for writer in range(12)
        ]
        return await asyncio.gather(*(write(fresh_db, batch) for batch in batches))

    assert asyncio.run(race()) == [50] * 12
    assert sql(fresh_db, "SELECT count(*) FROM readings")[0][0] == 600
    assert [p for p in partitions(fresh_db) if p[0].startswith("2031")] == [
        ("2031-07-04 00:00", "2031-07-05 00:00")
    ]


def test_one_batch_over_many_periods_creates_them_all(fresh_db: str) -> None:
    stamps = [at("1990-01-01T06:00") + timedelta(days=day) for day in range(40)]
    assert asyncio.run(write(fresh_db, batch_at(*stamps))) == 40
    assert len([p for p in partitions(fresh_db) if p[0].startswith("1990")]) == 40


def test_a_new_width_fills_the_gaps_between_older_partitions(fresh_db: str) -> None:
    daily = [at("2022-01-01T12:00"), at("2022-01-03T12:00")]
    asyncio.run(write(fresh_db, batch_at(*daily)))
    # Weeks start on Thursdays, like the Unix epoch: 2021-12-30 to 2022-01-06 here.
    weekly = [at("2022-01-02T12:00"), at("2022-01-04T00:00")]
    assert asyncio.run(write(fresh_db, batch_at(*weekly), timedelta(weeks=1))) == 2
    made = [p for p in partitions(fresh_db) if p[0].startswith(("2021-12", "2022"))]
    assert made == [
        ("2022-01-01 00:00", "2022-01-02 00:00"),
        ("2022-01-02 00:00", "2022-01-03 00:00"),
        ("2022-01-03 00:00", "2022-01-04 00:00"),
        ("2022-01-04 00:00", "2022-01-06 00:00"),
    ]
    assert sql(fresh_db, "SELECT count(*) FROM readings")[0][0] == 4


def test_a_batch_is_all_or_nothing_when_the_database_refuses_part_of_it(
    fresh_db: str,
) -> None:
    # Rows without a ts use the column default; a mixed batch is still one transaction.
    sql(fresh_db, "ALTER TABLE readings ADD CONSTRAINT small CHECK (value < 100)")
    batch = Batch(
        timed=[(at("2024-01-01T00:00"), SENSOR, None, Decimal(1))],
        untimed=[(SENSOR, None, Decimal(500))],
    )
    with pytest.raises(Exception, match="small"):
        asyncio.run(write(fresh_db, batch))
    assert sql(fresh_db, "SELECT count(*) FROM readings")[0][0] == 0


def test_storage_is_reported_by_readyz(api: httpx.Client, backend: str) -> None:
    expected = "hypertable" if backend == "timescale" else "partitioned"
    assert api.get("/readyz").json()["storage"] == expected


async def write_stream(url: str, *batches: Batch, fail_after: int | None = None) -> int:
    """Write the batches with write_stream; the iterator raises after ``fail_after`` of them."""

    async def stream() -> AsyncIterator[Batch]:
        for index, batch in enumerate(batches):
            if index == fail_after:
                raise RuntimeError("a bad line, found after some batches were written")
            yield batch

    conn = await db.connect(Settings(database_url=url))
    try:
        storage = await Storage.open(conn, timedelta(days=1))
        return await storage.write_stream(conn, stream())
    finally:
        await conn.close()


def test_write_stream_writes_every_batch_in_one_transaction(fresh_db: str) -> None:
    batches = [batch_at(at(f"2019-0{month}-01T12:00")) for month in range(1, 6)]
    assert asyncio.run(write_stream(fresh_db, *batches)) == 5
    assert sql(fresh_db, "SELECT count(*) FROM readings")[0][0] == 5
    assert len([p for p in partitions(fresh_db) if p[0].startswith("2019")]) == 5
    assert asyncio.run(write_stream(fresh_db)) == 0
    assert asyncio.run(write_stream(fresh_db, batch_at(at("2019-01-01T13:00")))) == 1


@pytest.mark.parametrize("fail_after", [1, 2, 4])
def test_write_stream_writes_nothing_when_the_batches_fail_midway(
    fresh_db: str, fail_after: int
) -> None:
    batches = [batch_at(at(f"2018-0{month}-01T12:00")) for month in range(1, 6)]
    with pytest.raises(RuntimeError):
        asyncio.run(write_stream(fresh_db, *batches, fail_after=fail_after))
    assert sql(fresh_db, "SELECT count(*) FROM readings")[0][0] == 0
    # The same periods again, as a retry would: the partitions made and rolled back are made anew.
    assert asyncio.run(write_stream(fresh_db, *batches)) == 5


def test_write_stream_in_an_outer_transaction_is_undone_with_it(fresh_db: str) -> None:
    async def in_outer_transaction() -> int:
        conn = await db.connect(Settings(database_url=fresh_db))
        try:
            storage = await Storage.open(conn, timedelta(days=1))

            async def stream() -> AsyncIterator[Batch]:
                for day in range(1, 4):
                    yield batch_at(at(f"2017-01-0{day}T12:00"))

            transaction = conn.transaction()
            await transaction.start()
            written = await storage.write_stream(conn, stream())
            inside = await conn.fetchval("SELECT count(*) FROM readings")
            await transaction.rollback()
            assert inside == written
            return written
        finally:
            await conn.close()

    assert asyncio.run(in_outer_transaction()) == 3
    assert sql(fresh_db, "SELECT count(*) FROM readings")[0][0] == 0


# What PostgreSQL's numeric holds at its edges, in the spellings JSON allows.
EDGE_VALUES = ["0.3", "-0", "20.00", "1e5", "-12.5e-3", "1e-16383", "9.99e131071", "0e-16383"]


def test_small_and_large_batches_store_the_same_values_exactly(
    api: httpx.Client, db_url: str
) -> None:
    # Batches under COPY_FROM_ROWS are inserted with their values as text, larger ones copied
    # in binary: each way, every value is stored as sent, digits and scale.
    day = datetime(2024, 5, 1, tzinfo=UTC)
    stored = {}
    for rows in (len(EDGE_VALUES), COPY_FROM_ROWS):
        sensor = uuid.uuid4()
        values = EDGE_VALUES + ["1"] * (rows - len(EDGE_VALUES))
        stamps = [(day + timedelta(seconds=n)).isoformat() for n in range(rows)]
        body = ",".join(
            f'{{"sensor": "{sensor}", "value": {value}, "ts": "{ts}"}}'
            for ts, value in zip(stamps, values, strict=True)
        )
        assert api.post("/readings", content=f"[{body}]").json() == rows
        found = sql(
            db_url,
            "SELECT value::text AS value FROM readings WHERE sensor = $1 ORDER BY ts",
            sensor,
        )
        stored[rows] = [row["value"] for row in found][: len(EDGE_VALUES)]
    small, large = stored.values()
    assert small == large
    assert list(map(Decimal, small)) == list(map(Decimal, EDGE_VALUES))
    assert small[2] == "20.00"
