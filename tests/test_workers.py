"""``tsapi serve --workers N``: N processes sharing only the database, the parent owning the
embedded PostgreSQL and applying the migrations once before they start."""

import json
import os
import signal
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import Tsapi, sql, start_tsapi
from tests.support import wait_until
from tests.test_embedded import postgres_processes, wait_until_gone
from tsapi.migrate import available

WORKERS = 3


def workers_of(tsapi: Tsapi) -> list[int]:
    """The pids of tsapi's worker processes (its children other than PostgreSQL)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == tsapi.process.pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def socket_url(data_dir: Path) -> str:
    return f"postgresql://postgres@/postgres?host={data_dir.resolve() / 'run'}"


def listeners(url: str) -> int:
    rows = sql(
        url,
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'tsapi cache listener'",
    )
    return int(rows[0]["n"])


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def served(data_dir: Path, tmp_path: Path) -> Tsapi:
    return start_tsapi(
        None,
        tmp_path / "tsapi.log",
        "--data-dir",
        str(data_dir),
        "--workers",
        str(WORKERS),
        TSAPI_CACHE_TTL="30",
    )


def test_workers_are_separate_processes_on_one_database_migrated_once(
    served: Tsapi, data_dir: Path
) -> None:
    try:
        wait_until(lambda: len(workers_of(served)) == WORKERS, what="the workers")
        # Each has its own app: its own pool, cache and listening connection.
        wait_until(lambda: listeners(socket_url(data_dir)) == WORKERS, what="their listeners")
        events = [json.loads(line) for line in served.log_path.read_text().splitlines()]
        applied = [event["version"] for event in events if event["event"] == "applied migration"]
        assert applied == [migration.version for migration in available()]
        assert len(postgres_processes(data_dir)) == 1
        sensor = str(uuid.uuid4())
        with httpx.Client(base_url=served.base_url) as client:
            assert client.post("/readings", json={"sensor": sensor, "value": 1}).json() == 1
            assert client.get(f"/sensors/{sensor}/latest").json()["value"] == 1
    finally:
        served.stop()


def test_every_worker_reads_the_writes_made_through_any_other(served: Tsapi) -> None:
    sensor = str(uuid.uuid4())
    try:
        for value in range(40):
            # A connection each: each request may reach any worker.
            posted = httpx.post(
                f"{served.base_url}/readings", json={"sensor": sensor, "value": value}
            )
            assert posted.json() == 1
            latest = httpx.get(f"{served.base_url}/readings/latest", params={"sensor": sensor})
            assert latest.json()[0]["value"] == value
            listed = httpx.get(f"{served.base_url}/sensors/{sensor}")
            assert listed.json()["count"] == value + 1
    finally:
        served.stop()


def test_a_worker_that_dies_is_replaced(served: Tsapi) -> None:
    try:
        wait_until(lambda: len(workers_of(served)) == WORKERS, what="the workers")
        victim = workers_of(served)[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: len(workers_of(served)) == WORKERS and victim not in workers_of(served),
            what="a new worker",
        )
        for _ in range(10):
            assert httpx.get(f"{served.base_url}/readings").status_code == 200
    finally:
        served.stop()


def test_sigterm_stops_every_worker_then_postgres(served: Tsapi, data_dir: Path) -> None:
    wait_until(lambda: len(workers_of(served)) == WORKERS, what="the workers")
    workers = workers_of(served)
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(60) == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert postgres_processes(data_dir) == []
    assert "tsapi stopped" in served.log_path.read_text()


def test_kill_9_of_the_parent_takes_the_workers_and_postgres_with_it(
    served: Tsapi, data_dir: Path, tmp_path: Path
) -> None:
    wait_until(lambda: len(workers_of(served)) == WORKERS, what="the workers")
    workers = workers_of(served)
    served.process.kill()
    served.process.wait()
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), what="exits")
    wait_until_gone(data_dir)
    again = start_tsapi(None, tmp_path / "again.log", "--data-dir", str(data_dir))
    again.stop()
