"""What the fault, shutdown and scale-out tests share: requests made slow by a lock held from
another connection, concurrent writers of distinct batches that record what was acknowledged,
and what the database holds of those batches; and a write landing between two statements."""

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from tests.conftest import sql

BATCH_ROWS = 6


def wait_until(condition: Callable[[], object], timeout: float = 60.0, what: str = "") -> None:
    """Poll until ``condition()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        time.sleep(0.05)


class WritesAfterFirstRead:
    """A real connection on which, right after the first statement that reads one row (what an
    answer is planned from), another client's write lands: before the answer's own statement."""

    def __init__(self, conn: asyncpg.Connection, write: Callable[[], None]) -> None:
        self.conn = conn
        self.write = write

    async def fetchrow(self, query: str, *args: object) -> asyncpg.Record | None:
        row = await self.conn.fetchrow(query, *args)
        self.write()
        self.write = lambda: None  # once
        return row

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


class HeldLock:
    """A transaction of another connection holding a lock on readings until released: requests
    that need the table wait on it, inside the database, for as long as the test wants."""

    def __init__(self, url: str, mode: str = "ACCESS EXCLUSIVE") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._conn: asyncpg.Connection = self._run(asyncpg.connect(url))
        self._run(self._conn.execute(f"BEGIN; LOCK TABLE readings IN {mode} MODE"))

    def _run(self, work: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(60)

    def release(self) -> None:
        if not self._conn.is_closed():
            self._run(self._conn.close())  # ends the transaction, and its lock
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


def waiting_on_locks(url: str) -> int:
    """How many of tsapi's queries are waiting for a lock."""
    rows = sql(
        url,
        """SELECT count(*) AS n FROM pg_stat_activity
           WHERE datname = current_database() AND application_name = 'tsapi'
             AND wait_event_type = 'Lock'""",
    )
    return int(rows[0]["n"])


def batch_body(batch: str, timed: bool) -> list[dict[str, Any]]:
    """BATCH_ROWS readings tagged with their batch; half of them timed when ``timed``, so that
    the write takes a transaction (timed and untimed rows, a logged late range)."""
    now = datetime.now(UTC)
    return [
        {
            "sensor": str(uuid.uuid4()),
            "value": index,
            "metadata": {"batch": batch},
            **({"ts": (now - timedelta(hours=index)).isoformat()} if timed and index % 2 else {}),
        }
        for index in range(BATCH_ROWS)
    ]


class Writers:
    """Threads posting distinct batches until stopped, each outcome recorded."""

    def __init__(self, base_url: str, count: int, timeout: float = 60.0) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.acknowledged: list[str] = []
        self.refused: list[tuple[str, httpx.Response]] = []
        self.broken: list[tuple[str, Exception]] = []  # no answer at all
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._write, args=(index,), daemon=True)
            for index in range(count)
        ]

    def __enter__(self) -> "Writers":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    @property
    def attempted(self) -> int:
        return len(self.acknowledged) + len(self.refused) + len(self.broken)

    def _write(self, index: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=self.timeout) as client:
            while not self._stop.is_set():
                batch = uuid.uuid4().hex
                try:
                    response = client.post("/readings", json=batch_body(batch, index % 2 == 0))
                except httpx.HTTPError as exc:
                    self.broken.append((batch, exc))
                    time.sleep(0.05)
                    continue
                if response.status_code == 200 and response.json() == BATCH_ROWS:
                    self.acknowledged.append(batch)
                else:
                    self.refused.append((batch, response))
                    time.sleep(0.05)


def stored_batches(url: str) -> dict[str, int]:
    """Rows per batch in readings."""
    rows = sql(
        url,
        """SELECT metadata->>'batch' AS batch, count(*) AS n FROM readings
           WHERE metadata ? 'batch' GROUP BY 1""",
    )
    return {row["batch"]: row["n"] for row in rows}


def assert_unavailable(response: httpx.Response) -> None:
    """A 503 as the database being unavailable is answered: JSON, with Retry-After."""
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/json"
    assert "error" in response.json()
    assert int(response.headers["retry-after"]) > 0
