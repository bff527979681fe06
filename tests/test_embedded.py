"""``tsapi serve`` with no database configured: the embedded PostgreSQL's whole lifecycle, seen from
outside, as a user running tsapi in a terminal or under a supervisor sees it."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import Tsapi, start_tsapi
from tsapi.embedded import SYSTEM_USER, binary

STOP_DEADLINE = 60.0  # generous: only a server that never stops fails


def postgres_processes(data_dir: Path) -> list[int]:
    """Pids of the ``postgres -D <data_dir>/postgres`` processes running now."""
    pgdata = str((data_dir / "postgres").resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        words = [word.decode(errors="replace") for word in argv]
        if words[0].endswith("postgres") and "-D" in words and pgdata in words:
            found.append(int(entry.name))
    return found


def wait_until_gone(data_dir: Path) -> None:
    deadline = time.monotonic() + STOP_DEADLINE
    while postgres_processes(data_dir):
        assert time.monotonic() < deadline, f"postgres still runs: {postgres_processes(data_dir)}"
        time.sleep(0.1)


def serve(data_dir: Path, log_path: Path) -> Tsapi:
    return start_tsapi(None, log_path, "--data-dir", str(data_dir))


def post_readings(tsapi: Tsapi, count: int) -> list[str]:
    """Post ``count`` readings of new sensors; their sensors, once tsapi has acknowledged them."""
    sensors = [str(uuid.uuid4()) for _ in range(count)]
    response = httpx.post(
        f"{tsapi.base_url}/readings", json=[{"sensor": s, "value": 1.5} for s in sensors]
    )
    assert response.json() == count
    return sensors


def stored_sensors(tsapi: Tsapi) -> set[str]:
    readings = httpx.get(f"{tsapi.base_url}/readings", params={"limit": 10_000}).json()
    return {reading["sensor"] for reading in readings}


def test_serve_without_a_database_starts_an_embedded_one_and_says_where(
    clean_env: Path,
) -> None:
    data_dir = clean_env / "data"
    tsapi = serve(data_dir, clean_env / "tsapi.log")
    try:
        assert httpx.get(f"{tsapi.base_url}/readyz").json()["status"] == "ready"
        assert len(postgres_processes(data_dir)) == 1
        log = tsapi.log_path.read_text()
        assert tsapi.base_url in log
        assert str(data_dir / "postgres") in log
    finally:
        tsapi.stop()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_stops_postgres_too_and_a_restart_keeps_the_readings(
    clean_env: Path, stop_signal: signal.Signals
) -> None:
    data_dir = clean_env / "data"
    tsapi = serve(data_dir, clean_env / "tsapi.log")
    sensors = post_readings(tsapi, 5)

    tsapi.process.send_signal(stop_signal)
    assert tsapi.process.wait(STOP_DEADLINE) == 0
    # tsapi exits only once its PostgreSQL has, so none may remain at this point.
    assert postgres_processes(data_dir) == []

    again = serve(data_dir, clean_env / "tsapi.log")
    try:
        assert stored_sensors(again) == set(sensors)
    finally:
        again.stop()


def test_kill_9_leaves_no_postgres_behind_and_the_next_start_keeps_acknowledged_rows(
    clean_env: Path,
) -> None:
    data_dir = clean_env / "data"
    tsapi = serve(data_dir, clean_env / "tsapi.log")
    sensors = post_readings(tsapi, 3)

    tsapi.process.kill()
    tsapi.process.wait()
    wait_until_gone(data_dir)  # the parent-death signal stops it

    again = serve(data_dir, clean_env / "tsapi.log")
    try:
        assert stored_sensors(again) == set(sensors)
    finally:
        again.stop()


def test_a_restart_right_after_kill_9_takes_over_from_the_stopping_postgres(
    clean_env: Path,
) -> None:
    data_dir = clean_env / "data"
    tsapi = serve(data_dir, clean_env / "tsapi.log")
    sensors = post_readings(tsapi, 3)

    tsapi.process.kill()
    tsapi.process.wait()
    again = serve(data_dir, clean_env / "tsapi.log")  # no waiting for the old server
    try:
        assert stored_sensors(again) == set(sensors)
        assert len(postgres_processes(data_dir)) == 1
    finally:
        again.stop()


def test_a_second_tsapi_on_the_same_data_dir_refuses_while_the_first_runs(
    clean_env: Path,
) -> None:
    data_dir = clean_env / "data"
    first = serve(data_dir, clean_env / "first.log")
    try:
        second = subprocess.run(
            [sys.executable, "-m", "tsapi", "serve", "--data-dir", str(data_dir), "--port", "0"],
            capture_output=True,
            text=True,
            timeout=STOP_DEADLINE,
        )
        assert second.returncode == 1
        assert f"{data_dir} is in use by another tsapi (pid {first.process.pid})" in second.stderr
        assert "use another --data-dir" in second.stderr
        assert "Traceback" not in second.stderr
        assert httpx.get(f"{first.base_url}/readyz").status_code == 200
        assert len(postgres_processes(data_dir)) == 1
    finally:
        first.stop()


def test_a_postgres_left_running_on_the_data_dir_is_stopped_and_taken_over(
    clean_env: Path,
) -> None:
    data_dir = clean_env / "data"
    tsapi = serve(data_dir, clean_env / "tsapi.log")
    sensors = post_readings(tsapi, 2)
    tsapi.stop()

    # Someone starts the server by hand, with the embedded binaries, outside any tsapi.
    socket_dir = data_dir / "run"
    root = os.geteuid() == 0
    orphan = subprocess.Popen(
        [
            binary("postgres"),
            *("-D", str(data_dir / "postgres"), "-k", str(socket_dir), "-h", ""),
        ],
        # As root, as the system user tsapi runs it as (PostgreSQL refuses to run as root).
        user=SYSTEM_USER if root else None,
        group=SYSTEM_USER if root else None,
        extra_groups=[] if root else None,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        ready = [binary("pg_isready"), "-q", "-h", str(socket_dir)]
        deadline = time.monotonic() + STOP_DEADLINE
        while subprocess.run(ready, check=False).returncode != 0:
            assert orphan.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)

        again = serve(data_dir, clean_env / "tsapi.log")
        try:
            assert orphan.wait(STOP_DEADLINE) == 0  # stopped cleanly, by tsapi
            assert stored_sensors(again) == set(sensors)
            assert len(postgres_processes(data_dir)) == 1
            assert "stopping a PostgreSQL left running" in again.log_path.read_text()
        finally:
            again.stop()
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()
    assert postgres_processes(data_dir) == []
