"""The database failing under a running tsapi: stopped and started again, a connection killed in
the middle of a query or a COPY, every pool connection busy. Requests get a 503 with Retry-After
and a JSON body within a bounded time, tsapi recovers by itself, and exactly the acknowledged
writes are stored."""

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Tsapi, sql, start_tsapi
from tests.support import (
    BATCH_ROWS,
    HeldLock,
    Writers,
    assert_unavailable,
    batch_body,
    stored_batches,
    wait_until,
    waiting_on_locks,
)
from tsapi.embedded import EmbeddedPostgres

# Each answer must come within this: pool_timeout and connect_timeout are 2 s here, so only a
# request that hangs exceeds it.
ANSWER_WITHIN = 20.0
QUICK = {"TSAPI_POOL_TIMEOUT": "2", "TSAPI_CONNECT_TIMEOUT": "2", "TSAPI_SHUTDOWN_TIMEOUT": "5"}


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of this test's own, which it may stop and start."""
    server = EmbeddedPostgres(tmp_path / "postgres")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def served(own_postgres: EmbeddedPostgres, tmp_path: Path) -> Iterator[Tsapi]:
    tsapi = start_tsapi(
        own_postgres.url, tmp_path / "tsapi.log", TSAPI_ROLLUP_REFRESH_INTERVAL="0.2", **QUICK
    )
    yield tsapi
    tsapi.stop()


def client(tsapi: Tsapi) -> httpx.Client:
    return httpx.Client(base_url=tsapi.base_url, timeout=ANSWER_WITHIN)


def test_a_restarted_database_gets_503s_meanwhile_and_exactly_the_acknowledged_writes(
    own_postgres: EmbeddedPostgres, served: Tsapi
) -> None:
    with Writers(served.base_url, count=4, timeout=ANSWER_WITHIN) as writers, client(served) as c:
        wait_until(lambda: len(writers.acknowledged) >= 20, what="writes before the outage")
        own_postgres.stop()
        acknowledged_before = len(writers.acknowledged)
        for path in ("/readings", "/readings/aggregate?bucket=1h", "/sensors", "/readings/latest"):
            assert_unavailable(c.get(path))
        assert_unavailable(c.post("/readings", json=batch_body("during", timed=True)))
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
        wait_until(lambda: len(writers.refused) >= 8, what="writers refused during the outage")

        own_postgres.start()  # the same data, at the same address
        wait_until(lambda: c.get("/readyz").status_code == 200, what="readiness after restart")
        wait_until(
            lambda: len(writers.acknowledged) >= acknowledged_before + 20,
            what="writes after the outage",
        )
        assert c.get("/readings", params={"limit": 1}).status_code == 200
    for _, response in writers.refused:
        assert_unavailable(response)
    assert writers.broken == []
    stored = stored_batches(own_postgres.url)
    assert set(stored) == set(writers.acknowledged)
    assert set(stored.values()) == {BATCH_ROWS}
    assert "during" not in stored


def test_connections_killed_mid_query_and_mid_copy_answer_503_and_write_nothing(
    own_postgres: EmbeddedPostgres, served: Tsapi
) -> None:
    lock = HeldLock(own_postgres.url)
    answers: dict[str, httpx.Response] = {}

    def request(name: str, method: str, path: str, **kwargs: object) -> threading.Thread:
        def run() -> None:
            with client(served) as c:
                answers[name] = c.request(method, path, **kwargs)  # type: ignore[arg-type]

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    try:
        threads = [
            request("copy", "POST", "/readings", json=batch_body("killed", timed=False)),
            request("transaction", "POST", "/readings", json=batch_body("killed2", timed=True)),
            request("query", "GET", "/readings"),
        ]
        wait_until(lambda: waiting_on_locks(own_postgres.url) == 3, what="blocked requests")
        sql(
            own_postgres.url,
            """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
               WHERE datname = current_database() AND application_name = 'tsapi'
                 AND wait_event_type = 'Lock'""",
        )
        for thread in threads:
            thread.join()
    finally:
        lock.release()
    for response in answers.values():
        assert_unavailable(response)
    assert stored_batches(own_postgres.url) == {}
    with client(served) as c:  # the pool replaced the connections it lost
        assert c.post("/readings", json=batch_body("after", timed=True)).json() == BATCH_ROWS
        assert len(c.get("/readings").json()) == BATCH_ROWS


def test_a_database_stopped_under_running_requests_answers_them_503(
    own_postgres: EmbeddedPostgres, served: Tsapi
) -> None:
    lock = HeldLock(own_postgres.url)
    answers: list[httpx.Response] = []

    def post() -> None:
        with client(served) as c:
            answers.append(c.post("/readings", json=batch_body("stopped", timed=True)))

    threads = [threading.Thread(target=post) for _ in range(2)]
    for thread in threads:
        thread.start()
    wait_until(lambda: waiting_on_locks(own_postgres.url) == 2, what="blocked writes")
    own_postgres.stop()  # a fast shutdown: every session is terminated, the lock with them
    for thread in threads:
        thread.join()
    lock.release()
    assert len(answers) == 2
    for response in answers:
        assert_unavailable(response)
    own_postgres.start()
    assert stored_batches(own_postgres.url) == {}
    with client(served) as c:
        wait_until(lambda: c.get("/readyz").status_code == 200, what="readiness")


def test_an_exhausted_pool_queues_then_answers_503_and_never_deadlocks(
    make_database: Callable[[str], str], tmp_path: Path
) -> None:
    url = make_database("embedded")
    tsapi = start_tsapi(
        url,
        tmp_path / "tsapi.log",
        TSAPI_POOL_MIN_SIZE="1",
        TSAPI_POOL_MAX_SIZE="1",
        TSAPI_POOL_TIMEOUT="1",
    )
    try:
        with client(tsapi) as c:
            assert c.post("/readings", json=batch_body("first", timed=True)).status_code == 200
            lock = HeldLock(url)
            slow: list[httpx.Response] = []

            def hold_the_connection() -> None:
                with client(tsapi) as own:
                    slow.append(own.get("/readings"))

            holder = threading.Thread(target=hold_the_connection)
            try:
                holder.start()
                wait_until(lambda: waiting_on_locks(url) == 1, what="the only connection busy")
                # Each waits pool_timeout for the busy connection, then gives up.
                assert_unavailable(c.get("/sensors"))
                assert_unavailable(c.post("/readings", json=batch_body("queued", timed=False)))
            finally:
                lock.release()
            holder.join()
            assert slow[0].status_code == 200 and len(slow[0].json()) == BATCH_ROWS

            # Many concurrent requests on one connection: they queue for it, and each is
            # answered (within pool_timeout, 200; else 503, having written nothing).
            posted: dict[str, int] = {}
            read: list[int] = []

            def one(index: int) -> None:
                with client(tsapi) as own:
                    if index % 2:
                        batch = f"many{index}"
                        response = own.post("/readings", json=batch_body(batch, timed=True))
                        posted[batch] = response.status_code
                    else:
                        read.append(own.get("/readings/aggregate?bucket=1h").status_code)

            threads = [threading.Thread(target=one, args=(index,)) for index in range(12)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert set(posted.values()) | set(read) <= {200, 503}
            assert c.get("/readyz").status_code == 200
        stored = stored_batches(url)
        assert set(stored) == {"first"} | {
            batch for batch, status in posted.items() if status == 200
        }
    finally:
        tsapi.stop()
