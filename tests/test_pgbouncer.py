"""tsapi behind PgBouncer in transaction pooling mode (``database_pooler = "pgbouncer"``). Every
API test also runs this way (the ``pgbouncer`` backend of conftest.py); these add what only a
pooler shows: several hosts and workers multiplexed on a few server connections, no session
state left on them, and statement timeouts enforced by the client."""

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Tsapi, sql, start_tsapi
from tests.pgbouncer import SERVER_CONNECTIONS, PgBouncer
from tests.support import BATCH_ROWS, HeldLock, Writers, stored_batches, wait_until

POOLED = {"TSAPI_DATABASE_POOLER": "pgbouncer"}


@pytest.fixture
def database(make_database: Callable[[str], str]) -> str:
    return make_database("embedded")


@pytest.fixture
def hosts(database: str, pgbouncer: PgBouncer, tmp_path: Path) -> Iterator[list[Tsapi]]:
    """Two hosts through the same PgBouncer, one of them with two workers, the read cache on."""
    env = {**POOLED, "TSAPI_DIRECT_DATABASE_URL": database, "TSAPI_CACHE_TTL": "60"}
    url = pgbouncer.url(database)
    servers = [
        start_tsapi(url, tmp_path / "a.log", "--workers", "2", **env),
        start_tsapi(url, tmp_path / "b.log", **env),
    ]
    yield servers
    for server in servers:
        server.stop()


def test_hosts_and_workers_share_a_few_server_connections_and_lose_nothing(
    hosts: list[Tsapi], database: str, pgbouncer: PgBouncer
) -> None:
    a, b = hosts
    readers_failed: list[str] = []

    def read_your_writes(writer: Tsapi, reader: Tsapi) -> None:
        sensor = str(uuid.uuid4())
        for value in range(25):
            httpx.post(f"{writer.base_url}/readings", json={"sensor": sensor, "value": value})
            latest = httpx.get(f"{reader.base_url}/sensors/{sensor}/latest").json()
            if latest.get("value") != value:
                readers_failed.append(f"{value}: {latest}")

    readers = [
        threading.Thread(target=read_your_writes, args=pair) for pair in ((a, b), (b, a), (a, a))
    ]
    with Writers(a.base_url, count=3) as on_a, Writers(b.base_url, count=3) as on_b:
        for thread in readers:
            thread.start()
        for thread in readers:
            thread.join()
        wait_until(lambda: len(on_a.acknowledged) + len(on_b.acknowledged) >= 60, what="writes")
    assert readers_failed == []
    assert on_a.refused == on_b.refused == [] and on_a.broken == on_b.broken == []
    stored = stored_batches(database)
    assert set(stored) == set(on_a.acknowledged + on_b.acknowledged)
    assert set(stored.values()) == {BATCH_ROWS}
    # However many clients, PgBouncer used its few server connections, and none of them was
    # left holding a lock or a transaction.
    servers = pgbouncer.server_pids(database)
    assert 0 < len(servers) <= SERVER_CONNECTIONS
    left = sql(
        database,
        """SELECT a.state, (SELECT count(*) FROM pg_locks l
                            WHERE l.pid = a.pid AND l.locktype = 'advisory') AS locks
           FROM pg_stat_activity a WHERE a.pid = ANY($1::integer[])""",
        servers,
    )
    assert [(row["state"], row["locks"]) for row in left] == [("idle", 0)] * len(servers)


def test_a_query_over_statement_timeout_is_cancelled_through_pgbouncer(
    database: str, pgbouncer: PgBouncer, tmp_path: Path
) -> None:
    tsapi = start_tsapi(
        pgbouncer.url(database),
        tmp_path / "tsapi.log",
        TSAPI_DIRECT_DATABASE_URL=database,
        TSAPI_STATEMENT_TIMEOUT="1",
        **POOLED,
    )
    try:
        lock = HeldLock(database)
        try:
            slow = httpx.get(f"{tsapi.base_url}/readings", timeout=30)
        finally:
            lock.release()
        assert slow.status_code == 503
        assert slow.json()["error"].startswith("the query ran longer than the 1 s allowed")
        # The cancelled query left neither the pool nor the server connection unusable.
        for _ in range(2 * SERVER_CONNECTIONS):
            assert httpx.get(f"{tsapi.base_url}/readings").status_code == 200
        assert not sql(
            database,
            "SELECT FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'",
        )
    finally:
        tsapi.stop()


def test_pgbouncer_mode_needs_a_direct_url_for_what_needs_a_session(
    clean_env: Path, pgbouncer: PgBouncer, database: str
) -> None:
    with pytest.raises(RuntimeError, match="direct_database_url"):
        start_tsapi(pgbouncer.url(database), clean_env / "tsapi.log", **POOLED)
