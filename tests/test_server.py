"""Stopping tsapi: a stop signal lets in-flight requests finish (for up to shutdown_timeout) while
new connections are refused, then closes the pool and stops an embedded PostgreSQL; a ``kill -9``
in the middle of many writes loses no acknowledged batch and leaves none in part."""

import signal
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import Tsapi, start_tsapi
from tests.support import (
    BATCH_ROWS,
    HeldLock,
    Writers,
    batch_body,
    stored_batches,
    wait_until,
    waiting_on_locks,
)
from tests.test_embedded import postgres_processes, wait_until_gone

STOP_WITHIN = 60.0


class InFlight:
    """Requests sent from threads, each answer (or the error of getting none) kept."""

    def __init__(self, tsapi: Tsapi) -> None:
        self.tsapi = tsapi
        self.answers: dict[str, httpx.Response | Exception] = {}
        self.threads: list[threading.Thread] = []

    def send(self, name: str, method: str, path: str, body: object = None) -> None:
        def run() -> None:
            try:
                with httpx.Client(base_url=self.tsapi.base_url, timeout=STOP_WITHIN) as client:
                    self.answers[name] = client.request(method, path, json=body)
            except httpx.HTTPError as exc:
                self.answers[name] = exc

        thread = threading.Thread(target=run)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        for thread in self.threads:
            thread.join()


def refuses_connections(tsapi: Tsapi) -> Callable[[], bool]:
    def check() -> bool:
        try:
            httpx.get(f"{tsapi.base_url}/healthz", timeout=5)
        except httpx.TransportError:  # refused, or reset as the listening socket closed
            return True
        return False

    return check


@pytest.fixture
def database(make_database: Callable[[str], str]) -> str:
    return make_database("embedded")


def test_sigterm_finishes_in_flight_requests_and_refuses_new_ones(
    database: str, tmp_path: Path
) -> None:
    tsapi = start_tsapi(database, tmp_path / "tsapi.log", TSAPI_SHUTDOWN_TIMEOUT="60")
    lock = HeldLock(database)
    requests = InFlight(tsapi)
    try:
        for index in range(2):
            requests.send(f"post{index}", "POST", "/readings", batch_body(f"b{index}", True))
            requests.send(f"get{index}", "GET", "/readings")
        wait_until(lambda: waiting_on_locks(database) == 4, what="requests in the database")
        tsapi.process.send_signal(signal.SIGTERM)
        wait_until(refuses_connections(tsapi), what="new connections refused")
        assert tsapi.process.poll() is None  # still finishing what it began
    finally:
        lock.release()
    requests.join()
    assert tsapi.process.wait(STOP_WITHIN) == 0
    for name, answer in requests.answers.items():
        assert isinstance(answer, httpx.Response) and answer.status_code == 200, name
    assert requests.answers["post0"].json() == BATCH_ROWS  # type: ignore[union-attr]
    assert stored_batches(database) == {"b0": BATCH_ROWS, "b1": BATCH_ROWS}


def test_requests_still_running_after_shutdown_timeout_are_cut_and_write_nothing(
    database: str, tmp_path: Path
) -> None:
    tsapi = start_tsapi(database, tmp_path / "tsapi.log", TSAPI_SHUTDOWN_TIMEOUT="1")
    lock = HeldLock(database)
    requests = InFlight(tsapi)
    try:
        requests.send("post", "POST", "/readings", batch_body("cut", True))
        requests.send("get", "GET", "/readings")
        wait_until(lambda: waiting_on_locks(database) == 2, what="requests in the database")
        tsapi.process.send_signal(signal.SIGTERM)
        # The lock outlasts shutdown_timeout: tsapi gives up on them and exits anyway.
        assert tsapi.process.wait(STOP_WITHIN) == 0
        requests.join()
    finally:
        lock.release()
    for answer in requests.answers.values():
        assert not (isinstance(answer, httpx.Response) and answer.status_code == 200)
    assert stored_batches(database) == {}
    assert "timeout graceful shutdown exceeded" in tsapi.log_path.read_text()


def test_sigterm_with_embedded_postgres_finishes_requests_then_stops_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    tsapi = start_tsapi(None, tmp_path / "tsapi.log", "--data-dir", str(data_dir))
    url = f"postgresql://postgres@/postgres?host={data_dir.resolve() / 'run'}"
    lock = HeldLock(url)
    requests = InFlight(tsapi)
    try:
        requests.send("post", "POST", "/readings", batch_body("embedded", True))
        wait_until(lambda: waiting_on_locks(url) == 1, what="the write in the database")
        tsapi.process.send_signal(signal.SIGTERM)
        wait_until(refuses_connections(tsapi), what="new connections refused")
    finally:
        lock.release()
    requests.join()
    assert tsapi.process.wait(STOP_WITHIN) == 0
    assert postgres_processes(data_dir) == []
    answer = requests.answers["post"]
    assert isinstance(answer, httpx.Response) and answer.json() == BATCH_ROWS


def test_kill_9_mid_ingest_keeps_every_acknowledged_batch_whole_and_no_batch_in_part(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    tsapi = start_tsapi(None, tmp_path / "tsapi.log", "--data-dir", str(data_dir))
    with Writers(tsapi.base_url, count=8) as writers:
        wait_until(lambda: len(writers.acknowledged) >= 100, what="acknowledged writes")
        tsapi.process.kill()
        tsapi.process.wait()
        wait_until(lambda: len(writers.broken) >= 8, what="writers finding tsapi gone")
    wait_until_gone(data_dir)

    again = start_tsapi(None, tmp_path / "tsapi.log", "--data-dir", str(data_dir))
    try:
        url = f"postgresql://postgres@/postgres?host={data_dir.resolve() / 'run'}"
        stored = stored_batches(url)
    finally:
        again.stop()
    assert set(writers.acknowledged) <= set(stored)
    assert set(stored.values()) == {BATCH_ROWS}  # each batch whole, or not there at all
    unanswered = {batch for batch, _ in writers.broken}
    assert set(stored) - set(writers.acknowledged) <= unanswered
