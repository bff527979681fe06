"""The read cache and conditional GETs: answers cached per normalised query, dropped by any write
through any tsapi process, never served while the listener is down; ETag and 304 on GET routes."""

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.conftest import Tsapi, sql, start_tsapi
from tests.support import wait_until
from tsapi.cache import Entry, ReadCache

CACHED = {"TSAPI_CACHE_TTL": "600"}


@pytest.fixture(scope="module")
def database(make_database: Callable[[str], str]) -> str:
    return make_database("embedded")


@pytest.fixture(scope="module")
def hosts(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Tsapi]]:
    """Two tsapi processes on one database, as two hosts would be."""
    logs = tmp_path_factory.mktemp("cache")
    servers = [start_tsapi(database, logs / f"{name}.log", **CACHED) for name in "ab"]
    yield servers
    for server in servers:
        server.stop()


def insert_behind_tsapis_back(url: str, sensor: str, value: int) -> None:
    """A row written without tsapi, which therefore announces nothing."""
    sql(url, "INSERT INTO readings (sensor, value) VALUES ($1, $2)", uuid.UUID(sensor), value)


def listener_connected(url: str) -> bool:
    rows = sql(
        url,
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'tsapi cache listener'",
    )
    return int(rows[0]["n"]) == 2


def test_a_write_through_one_host_is_read_at_once_through_the_other(hosts: list[Tsapi]) -> None:
    a, b = hosts
    sensor = str(uuid.uuid4())
    # The start of yesterday (UTC), so that all 30 minutes fall in one daily bucket at any hour.
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    with httpx.Client(base_url=a.base_url) as on_a, httpx.Client(base_url=b.base_url) as on_b:
        for value in range(30):
            ts = (day + timedelta(minutes=value)).isoformat()
            reading = {"sensor": sensor, "value": value, "ts": ts}
            assert on_a.post("/readings", json=reading).json() == 1
            assert (
                on_b.get("/readings", params={"sensor": sensor, "limit": 1}).json()[0]["value"]
                == value
            )
            assert on_b.get(f"/sensors/{sensor}").json()["count"] == value + 1
            assert on_b.get(f"/sensors/{sensor}/latest").json()["value"] == value
            aggregate = on_b.get(
                "/readings/aggregate",
                params={"sensor": sensor, "bucket": "1d", "fn": "count", "from": "-3d"},
            )
            assert aggregate.json()[0]["count"] == value + 1


def test_answers_are_cached_until_any_write_through_tsapi(
    hosts: list[Tsapi], database: str
) -> None:
    a, b = hosts
    sensor = str(uuid.uuid4())
    query = {"sensor": sensor, "order": "asc"}
    with httpx.Client(base_url=a.base_url) as on_a, httpx.Client(base_url=b.base_url) as on_b:
        on_a.post("/readings", json={"sensor": sensor, "value": 1})
        assert [r["value"] for r in on_b.get("/readings", params=query).json()] == [1]
        insert_behind_tsapis_back(database, sensor, 2)
        # Cached, and found again with the parameters in another order.
        assert [r["value"] for r in on_b.get(f"/readings?order=asc&sensor={sensor}").json()] == [1]
        # Another format is another answer.
        assert (
            on_b.get("/readings", params=query, headers={"Accept": "text/csv"}).text.count("\n")
            == 3
        )
        on_a.post("/readings", json={"sensor": str(uuid.uuid4()), "value": 3})  # any write
        assert [r["value"] for r in on_b.get("/readings", params=query).json()] == [1, 2]


def test_while_the_listener_is_down_nothing_is_served_from_cache(
    hosts: list[Tsapi], database: str
) -> None:
    _, b = hosts
    sensor = str(uuid.uuid4())
    path = f"/sensors/{sensor}"
    with httpx.Client(base_url=b.base_url) as on_b:
        insert_behind_tsapis_back(database, sensor, 1)
        assert on_b.get(path).json()["count"] == 1  # now cached
        sql(
            database,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'tsapi cache listener'",
        )
        insert_behind_tsapis_back(database, sensor, 2)
        assert on_b.get(path).json()["count"] == 2  # not the cached answer: it may be stale
        wait_until(lambda: listener_connected(database), what="the listeners reconnecting")
        assert on_b.get(path).json()["count"] == 2
        insert_behind_tsapis_back(database, sensor, 3)
        assert on_b.get(path).json()["count"] == 2  # cached again


@pytest.mark.parametrize(
    "path",
    [
        "/readings",
        "/readings?format=csv",
        "/readings/aggregate?bucket=1h",
        "/readings/latest",
        "/sensors",
        "/sensors/{sensor}",
        "/sensors/{sensor}/latest",
    ],
)
def test_get_routes_answer_etags_and_304_while_unchanged(hosts: list[Tsapi], path: str) -> None:
    a, _ = hosts
    sensor = str(uuid.uuid4())
    path = path.format(sensor=sensor)
    with httpx.Client(base_url=a.base_url) as client:
        client.post("/readings", json={"sensor": sensor, "value": 1})
        first = client.get(path)
        etag = first.headers["etag"]
        again = client.get(path, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == etag
        assert client.get(path, headers={"If-None-Match": f'"other", W/{etag}'}).status_code == 304
        client.post("/readings", json={"sensor": sensor, "value": 2})
        changed = client.get(path, headers={"If-None-Match": etag})
        assert changed.status_code == 200 and changed.headers["etag"] != etag


def test_exports_stream_uncached_and_without_an_etag(hosts: list[Tsapi], database: str) -> None:
    a, _ = hosts
    sensor = str(uuid.uuid4())
    with httpx.Client(base_url=a.base_url) as client:
        client.post("/readings", json={"sensor": sensor, "value": 1})
        first = client.get("/readings", params={"sensor": sensor, "limit": "all"})
        assert "etag" not in first.headers and len(first.json()) == 1
        insert_behind_tsapis_back(database, sensor, 2)
        assert len(client.get("/readings", params={"sensor": sensor, "limit": "all"}).json()) == 2


def test_without_cache_ttl_answers_are_fresh_and_there_is_no_listener(
    make_database: Callable[[str], str], tmp_path: Path
) -> None:
    url = make_database("embedded")
    tsapi = start_tsapi(url, tmp_path / "tsapi.log")
    sensor = str(uuid.uuid4())
    try:
        with httpx.Client(base_url=tsapi.base_url) as client:
            insert_behind_tsapis_back(url, sensor, 1)
            assert client.get(f"/sensors/{sensor}").json()["count"] == 1
            insert_behind_tsapis_back(url, sensor, 2)
            assert client.get(f"/sensors/{sensor}").json()["count"] == 2
            assert "etag" in client.get(f"/sensors/{sensor}").headers
        assert not sql(
            url,
            "SELECT FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'tsapi cache listener'",
        )
    finally:
        tsapi.stop()


def entry(body: bytes, generation: int, expires: float) -> Entry:
    return Entry(200, [], body, '"e"', generation, expires)


def test_the_cache_keeps_what_fits_drops_the_least_recently_used_and_the_expired() -> None:
    cache = ReadCache(ttl=60, max_bytes=100)
    cache.set_live(True)
    later = time.monotonic() + 60
    for key in (b"a", b"b", b"c"):
        cache.put(key, entry(b"x" * 40, cache.generation, later))
    assert cache.get(b"a") is None and cache.get(b"b") is not None  # a went first
    cache.put(b"d", entry(b"x" * 40, cache.generation, later))
    assert cache.get(b"c") is None and cache.get(b"b") is not None  # b was used since
    cache.put(b"huge", entry(b"x" * 200, cache.generation, later))
    assert cache.get(b"huge") is None
    cache.put(b"old", entry(b"", cache.generation, time.monotonic() - 1))
    assert cache.get(b"old") is None


def test_an_answer_computed_across_an_invalidation_is_not_kept() -> None:
    cache = ReadCache(ttl=60, max_bytes=1000)
    assert cache.ticket() is None  # not listening yet: nothing may be kept
    cache.set_live(True)
    ticket = cache.ticket()
    assert ticket is not None
    cache.invalidate()  # a write, heard while the query ran
    cache.put(b"k", entry(b"answer", ticket, time.monotonic() + 60))
    assert cache.get(b"k") is None
    cache.put(b"k", entry(b"answer", cache.generation, time.monotonic() + 60))
    cache.set_live(False)
    assert cache.get(b"k") is None
