"""API keys on a running tsapi: who gets in (401 otherwise), what each scope opens (403
otherwise), keys restricted to sensors see and write only those on every route, revocation."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Tsapi, sql
from tests.keyring import bearer, eventually, make_key, revoke, serve

A = "6f3e43a4-d1c1-4cb6-b928-0ac0efaf84a5"
B = "d538f9fa-f6de-46e5-9fa2-d7ee9a0f0a68"
UNKNOWN = "00000000-0000-4000-8000-000000000000"


class Secured:
    def __init__(self, server: Tsapi) -> None:
        self.server = server
        url = server.database_url
        self.admin, self.read, self.write = (make_key(url, s) for s in ("admin", "read", "write"))
        self.read_a, self.write_a = make_key(url, "read", A), make_key(url, "write", A)

    def get(self, path: str, key: str | None) -> httpx.Response:
        headers = {} if key is None else bearer(key)
        return httpx.get(self.server.base_url + path, headers=headers, timeout=60)

    def post(self, rows: Any, key: str | None) -> httpx.Response:
        headers = {} if key is None else bearer(key)
        return httpx.post(f"{self.server.base_url}/readings", json=rows, headers=headers)

    def count(self) -> int:
        return int(sql(self.server.database_url, "SELECT count(*) FROM readings")[0][0])


@pytest.fixture(scope="module")
def secured(
    backend: str, make_database: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Secured]:
    server = serve(make_database, tmp_path_factory.mktemp("auth"), backend)
    keyed = Secured(server)
    rows = [
        {"sensor": sensor, "value": n, "ts": f"2024-05-0{day}T{n:02d}:00:00Z"}
        for sensor in (A, B)
        for day in (1, 2)
        for n in range(5)
    ]
    eventually(lambda: keyed.post(rows, keyed.admin).status_code == 200)
    yield keyed
    server.stop()


def assert_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"]
    message: str = body["error"]
    return message


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer nonsense", "Bearer tsapi_0123456789ab_secret", "Basic dXNlcjpwdw=="],
)
def test_a_request_without_a_valid_key_is_401_and_changes_nothing(
    secured: Secured, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    before = secured.count()
    for response in (
        httpx.get(f"{secured.server.base_url}/readings", headers=headers),
        httpx.post(f"{secured.server.base_url}/readings", json=[], headers=headers),
        httpx.get(f"{secured.server.base_url}/nowhere", headers=headers),
    ):
        assert_error(response, 401)
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="tsapi"')
    assert secured.count() == before


def test_a_key_with_a_wrong_secret_is_401_and_says_nothing_about_the_key(secured: Secured) -> None:
    key_id = secured.admin.split("_")[1]
    for wrong in (secured.admin[:-1], f"tsapi_{key_id}_x", secured.admin + "x"):
        message = assert_error(secured.get("/readings", wrong), 401)
        assert key_id not in message and "admin" not in message


def test_keys_are_taken_as_bearer_or_as_influxdbs_token(secured: Secured) -> None:
    for scheme in ("Bearer", "bearer", "Token", "token"):
        response = httpx.get(
            f"{secured.server.base_url}/readings",
            headers={"Authorization": f"{scheme} {secured.read}"},
        )
        assert response.status_code == 200, scheme


@pytest.mark.parametrize(
    "path", ["/healthz", "/readyz", "/openapi.json", "/docs", "/docs/static/swagger-ui.css"]
)
def test_probes_and_docs_need_no_key(secured: Secured, path: str) -> None:
    assert secured.get(path, None).status_code == 200


READ_PATHS = [
    "/readings",
    "/readings?limit=all&format=csv",
    "/readings/aggregate?bucket=1d&fn=count",
    "/readings/latest",
    "/sensors",
    f"/sensors/{A}",
    f"/sensors/{A}/latest",
]


@pytest.mark.parametrize("path", READ_PATHS)
def test_read_keys_read_and_write_keys_do_not(secured: Secured, path: str) -> None:
    assert secured.get(path, secured.read).status_code == 200
    assert secured.get(path, secured.admin).status_code == 200
    message = assert_error(secured.get(path, secured.write), 403)
    assert message.startswith("this key's scope (write) does not allow GET")


def test_write_keys_write_and_read_keys_do_not(secured: Secured) -> None:
    row = {"sensor": A, "value": 1, "ts": "2023-01-01T00:00:00Z"}
    before = secured.count()
    assert_error(secured.post([row], secured.read), 403)
    assert secured.count() == before
    assert secured.post([row], secured.write).json() == 1
    assert secured.post([row], secured.admin).json() == 1
    assert secured.count() == before + 2


def test_metrics_need_a_read_or_admin_key_for_every_sensor(secured: Secured) -> None:
    assert secured.get("/metrics", secured.read).status_code == 200
    assert secured.get("/metrics", secured.admin).status_code == 200
    assert_error(secured.get("/metrics", secured.write), 403)
    assert_error(secured.get("/metrics", secured.read_a), 403)


def sensors_in(response: httpx.Response) -> set[str]:
    assert response.status_code == 200, response.text
    body = response.json()
    return {row["sensor"] for row in (body if isinstance(body, list) else [body])}


def test_a_key_restricted_to_sensors_reads_only_those_on_every_route(secured: Secured) -> None:
    key = secured.read_a
    assert sensors_in(secured.get("/readings", key)) == {A}
    lines = secured.get("/readings?limit=all&format=ndjson", key).text.splitlines()
    assert {json.loads(line)["sensor"] for line in lines} == {A}
    export = secured.get("/readings?limit=all&format=csv", key).text.splitlines()[1:]
    assert export and all(A in line for line in export)
    assert sensors_in(secured.get("/readings/aggregate?bucket=1d&fn=count", key)) == {A}
    assert sensors_in(secured.get("/readings/latest", key)) == {A}
    assert sensors_in(secured.get("/sensors", key)) == {A}
    assert sensors_in(secured.get(f"/sensors/{A}", key)) == {A}
    assert sensors_in(secured.get(f"/sensors/{A}/latest", key)) == {A}
    # Across sensors, only its sensors count.
    everything = "/readings/aggregate?bucket=1w&fn=count&group=none&from=2024-04-29&to=2024-05-06"
    mine = secured.get(everything, key).json()
    assert mine == secured.get(f"{everything}&sensor={A}", secured.admin).json()
    assert mine != secured.get(everything, secured.admin).json()


def test_pages_of_a_restricted_key_stay_within_its_sensors(secured: Secured) -> None:
    path, seen = "/readings?limit=3", set()
    while path:
        response = secured.get(path, secured.read_a)
        seen |= sensors_in(response)
        path = response.links.get("next", {}).get("url", "").removeprefix(secured.server.base_url)
    assert seen == {A}


@pytest.mark.parametrize(
    "path",
    [
        f"/readings?sensor={B}",
        f"/readings?sensor={A},{B}",
        f"/readings?sensor={A}&sensor={B}",
        f"/readings/aggregate?bucket=1h&sensor={B}",
        f"/readings/latest?sensor={B}",
        f"/sensors?sensor={B}",
        f"/sensors/{B}",
        f"/sensors/{B}/latest",
        f"/sensors/{UNKNOWN}",
    ],
)
def test_a_restricted_key_asking_for_another_sensor_is_403(secured: Secured, path: str) -> None:
    message = assert_error(secured.get(path, secured.read_a), 403)
    asked = UNKNOWN if UNKNOWN in path else B
    assert message == f"this key may not read sensor {asked}"  # nothing it did not send


def test_a_restricted_key_writes_only_its_sensors_all_or_none(secured: Secured) -> None:
    before = secured.count()
    rows = [{"sensor": A, "value": 1}, {"sensor": B, "value": 2}]
    assert assert_error(secured.post(rows, secured.write_a), 403) == (
        f"this key may not write sensor {B}"
    )
    assert secured.count() == before
    assert secured.post(rows[:1], secured.write_a).json() == 1


def test_a_restricted_key_writes_only_its_sensors_whatever_the_content_type(
    secured: Secured,
) -> None:
    before = secured.count()
    for content_type in ("application/json", "application/x-ndjson", "text/plain"):
        response = httpx.post(
            f"{secured.server.base_url}/readings",
            content=json.dumps({"sensor": B, "value": 1}).encode() + b"\n",
            headers={**bearer(secured.write_a), "Content-Type": content_type},
        )
        assert_error(response, 403)
    assert secured.count() == before


def test_a_revoked_key_is_refused_within_the_cache_time(secured: Secured) -> None:
    key = make_key(secured.server.database_url, "read")
    assert secured.get("/readings", key).status_code == 200
    revoke(secured.server.database_url, key)
    eventually(lambda: secured.get("/readings", key).status_code == 401, seconds=5)


def test_using_a_key_records_when(secured: Secured) -> None:
    key = make_key(secured.server.database_url, "read")
    key_id = key.split("_")[1]
    query = "SELECT last_used_at FROM tsapi_api_keys WHERE id = $1"
    assert sql(secured.server.database_url, query, key_id)[0][0] is None
    assert secured.get("/readings", key).status_code == 200
    assert sql(secured.server.database_url, query, key_id)[0][0] is not None


def test_auto_asks_for_keys_from_the_first_one_on(make_database: Any, tmp_path: Path) -> None:
    server = serve(make_database, tmp_path)
    try:
        url = f"{server.base_url}/readings"
        assert httpx.get(url).status_code == 200  # no key exists: open, as before keys
        key = make_key(server.database_url, "read")
        eventually(lambda: httpx.get(url).status_code == 401)
        assert httpx.get(url, headers=bearer(key)).status_code == 200
        revoke(server.database_url, key)  # revoking the last key does not open the API again
        eventually(lambda: httpx.get(url, headers=bearer(key)).status_code == 401)
        assert httpx.get(url).status_code == 401
    finally:
        server.stop()


def test_required_asks_for_keys_before_any_exists(make_database: Any, tmp_path: Path) -> None:
    server = serve(make_database, tmp_path, TSAPI_AUTH="required")
    try:
        assert_error(httpx.get(f"{server.base_url}/readings"), 401)
        assert httpx.get(f"{server.base_url}/healthz").status_code == 200
    finally:
        server.stop()


def test_off_asks_for_no_key_even_when_keys_exist(make_database: Any, tmp_path: Path) -> None:
    server = serve(make_database, tmp_path, TSAPI_AUTH="off")
    try:
        make_key(server.database_url, "read")
        assert httpx.post(f"{server.base_url}/readings", json=[]).status_code == 200
        assert httpx.get(f"{server.base_url}/metrics").status_code == 200
    finally:
        server.stop()
