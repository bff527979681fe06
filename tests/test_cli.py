"""The ``tsapi`` command: its options, ``db upgrade``, and how it reports what stops it."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import click
import httpx
import pytest

from tests.conftest import free_port, sql, with_database
from tsapi.cli import cli
from tsapi.migrate import available
from tsapi.settings import Settings

ALL_MIGRATIONS = ", ".join(f"{m.version:04d}_{m.name}" for m in available())


def tsapi(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tsapi", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def applied_versions(url: str) -> list[int]:
    return [row["version"] for row in sql(url, "SELECT version FROM tsapi_migrations ORDER BY 1")]


def test_db_upgrade_applies_every_migration_once_and_then_none(
    clean_env: Path, backend: str, make_database: Any
) -> None:
    url = make_database(backend)
    first = tsapi("db", "upgrade", "--database-url", url)
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"applied migrations: {ALL_MIGRATIONS}\n"
    assert sql(url, "SELECT to_regclass('readings') IS NOT NULL")[0][0]

    second = tsapi("db", "upgrade", "--database-url", url)
    assert second.returncode == 0, second.stderr
    assert second.stdout == "applied migrations: none: already up to date\n"
    assert applied_versions(url) == [m.version for m in available()]


def test_concurrent_upgrades_apply_each_migration_exactly_once(
    clean_env: Path, backend: str, make_database: Any
) -> None:
    url = make_database(backend)
    command = [sys.executable, "-m", "tsapi", "db", "upgrade", "--database-url", url]
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0] * 4, outputs
    assert sorted(stdout for stdout, _ in outputs) == sorted(
        [f"applied migrations: {ALL_MIGRATIONS}\n"]
        + ["applied migrations: none: already up to date\n"] * 3
    )
    assert applied_versions(url) == [m.version for m in available()]


def test_the_database_url_comes_from_the_flag_then_the_environment_then_tsapi_toml(
    clean_env: Path, make_database: Any
) -> None:
    from_file, from_env, from_flag = (make_database("embedded") for _ in range(3))
    (clean_env / "tsapi.toml").write_text(f'database_url = "{from_file}"\n')

    assert tsapi("db", "upgrade").returncode == 0
    assert tsapi("db", "upgrade", TSAPI_DATABASE_URL=from_env).returncode == 0
    upgraded = tsapi("db", "upgrade", "--database-url", from_flag, TSAPI_DATABASE_URL=from_env)
    assert upgraded.returncode == 0
    assert upgraded.stdout == f"applied migrations: {ALL_MIGRATIONS}\n"
    for url in (from_file, from_env, from_flag):
        assert applied_versions(url) == [m.version for m in available()]


def test_serve_is_the_default_command(clean_env: Path, make_database: Any) -> None:
    port = free_port()
    url = make_database("embedded")
    process = subprocess.Popen(
        [sys.executable, "-m", "tsapi", "--database-url", url, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    try:
        while True:
            assert process.poll() is None and time.monotonic() < deadline, "tsapi did not start"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
    finally:
        process.terminate()
        assert process.wait(60) == 0


def test_bad_settings_are_reported_by_name_without_a_traceback(clean_env: Path) -> None:
    result = tsapi("serve", "--port", "99999", TSAPI_MAX_BODY_BYTES="lots")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "Error: invalid settings:",
        "port (from --port): Input should be less than or equal to 65535 (got 99999)",
        "max_body_bytes (from TSAPI_MAX_BODY_BYTES): Input should be a valid integer, unable to"
        " parse string as an integer (got 'lots')",
    ]


def test_a_database_that_cannot_be_reached_is_one_clear_error(
    clean_env: Path, make_database: Any
) -> None:
    url = with_database(make_database("embedded"), "absent")
    result = tsapi("db", "upgrade", "--database-url", url)
    assert result.returncode == 1
    assert [json.loads(line) for line in result.stderr.splitlines()][-1] == {
        "event": "tsapi db upgrade failed",
        "error": 'database "absent" does not exist',
        "level": "error",
        "logger": "tsapi.cli",
        "timestamp": ANY,
    }


@pytest.mark.parametrize("command", [("serve",), ("db", "upgrade")])
def test_every_option_of_serve_and_upgrade_sets_the_setting_of_its_name(
    command: tuple[str, ...],
) -> None:
    found: click.Command = cli
    for name in command:
        assert isinstance(found, click.Group)
        found = found.commands[name]
    names = {param.name for param in found.params if isinstance(param, click.Option)}
    assert {"database_url", "data_dir"} <= names
    assert names - {"config_file"} <= set(Settings.model_fields)
