"""``tsapi keys``: a key is printed once and stored only as a digest; listed without secrets;
revoked by id."""

from pathlib import Path
from typing import Any

import httpx

from tests.conftest import sql, start_tsapi
from tests.keyring import bearer
from tests.test_cli import tsapi

A = "6f3e43a4-d1c1-4cb6-b928-0ac0efaf84a5"
B = "d538f9fa-f6de-46e5-9fa2-d7ee9a0f0a68"


def test_create_prints_the_key_once_and_stores_only_its_digest(
    clean_env: Path, make_database: Any
) -> None:
    url = make_database("embedded")
    created = tsapi(
        "keys", "create", "--scope", "write", "--name", "gateway", "--database-url", url
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert created.stdout == f"{key}\n"  # the key alone, for KEY=$(tsapi keys create ...)
    key_id = key.split("_")[1]
    assert f"created key {key_id} (write)" in created.stderr
    [row] = sql(url, "SELECT id, name, scope, sensors, secret_sha256 FROM tsapi_api_keys")
    assert (row["id"], row["name"], row["scope"], row["sensors"]) == (
        key_id,
        "gateway",
        "write",
        None,
    )
    secret = key.split("_", 2)[2]
    assert secret.encode() not in bytes(row["secret_sha256"]) and len(row["secret_sha256"]) == 32
    again = tsapi("keys", "create", "--scope", "write", "--database-url", url)
    assert again.stdout.strip() != key


def test_list_shows_every_key_without_its_secret(clean_env: Path, make_database: Any) -> None:
    url = make_database("embedded")
    read = tsapi(
        "keys", "create", "--scope", "read", "--sensor", A, "--sensor", B, "--database-url", url
    )
    admin = tsapi("keys", "create", "--scope", "admin", "--name", "ops", "--database-url", url)
    listed = tsapi("keys", "list", "--database-url", url)
    assert listed.returncode == 0, listed.stderr
    header, *lines = listed.stdout.splitlines()
    assert header.split() == [
        "id",
        "name",
        "scope",
        "sensors",
        "created",
        "last",
        "used",
        "revoked",
    ]
    read_id, admin_id = (result.stdout.split("_")[1] for result in (read, admin))
    assert lines[0].split()[:4] == [read_id, "-", "read", f"{A},{B}"]
    assert lines[1].split()[:4] == [admin_id, "ops", "admin", "all"]
    for result in (read, admin):  # the secret part of each key appears nowhere
        assert result.stdout.strip().split("_", 2)[2] not in listed.stdout


def test_revoke_refuses_the_key_and_keeps_it_listed(
    clean_env: Path, make_database: Any, tmp_path: Path
) -> None:
    url = make_database("embedded")
    key = tsapi("keys", "create", "--scope", "read", "--database-url", url).stdout.strip()
    key_id = key.split("_")[1]
    server = start_tsapi(url, tmp_path / "tsapi.log", TSAPI_KEY_CACHE_SECONDS="0")
    try:
        assert httpx.get(f"{server.base_url}/readings", headers=bearer(key)).status_code == 200
        revoked = tsapi("keys", "revoke", key_id, "--database-url", url)
        assert revoked.returncode == 0, revoked.stderr
        assert revoked.stdout == f"revoked key {key_id}\n"
        assert httpx.get(f"{server.base_url}/readings", headers=bearer(key)).status_code == 401
    finally:
        server.stop()
    again = tsapi("keys", "revoke", key_id, "--database-url", url)
    assert again.returncode == 0 and again.stdout.startswith(f"key {key_id} was already revoked on")
    [line] = tsapi("keys", "list", "--database-url", url).stdout.splitlines()[1:]
    assert line.startswith(key_id) and not line.endswith("-")  # last used, revoked: both set


def test_bad_arguments_are_refused(clean_env: Path, make_database: Any) -> None:
    url = make_database("embedded")
    unknown = tsapi("keys", "revoke", "0123456789ab", "--database-url", url)
    assert unknown.returncode == 1
    assert unknown.stderr.splitlines()[-1] == "Error: there is no key 0123456789ab"
    scope = tsapi("keys", "create", "--scope", "root", "--database-url", url)
    assert scope.returncode == 2 and "'root' is not one of 'read', 'write', 'admin'" in scope.stderr
    sensor = tsapi(
        "keys", "create", "--scope", "read", "--sensor", "kitchen", "--database-url", url
    )
    assert sensor.returncode == 2 and "'kitchen' is not a valid UUID" in sensor.stderr
