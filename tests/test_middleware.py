"""What every request goes through: its id and access log line, CORS, slow clients cut off,
rate limits, and the refusal to serve an open API beyond this machine."""

import json
import socket
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import Tsapi
from tests.keyring import bearer, eventually, make_key, serve
from tests.test_cli import tsapi
from tsapi.middleware import insecure_bind
from tsapi.settings import Settings


@pytest.fixture(scope="module")
def server(make_database: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A tsapi with an admin key (``.key``), CORS origins and short timeouts."""
    tsapi = serve(
        make_database,
        tmp_path_factory.mktemp("middleware"),
        TSAPI_LOG_FORMAT="json",
        TSAPI_CORS_ORIGINS="https://app.example, https://ops.example",
        TSAPI_BODY_TIMEOUT="0.5",
        TSAPI_BODY_MIN_RATE="200",
        TSAPI_KEEP_ALIVE_TIMEOUT="1",
    )
    tsapi.key = make_key(tsapi.database_url, "admin")  # type: ignore[attr-defined]
    eventually(lambda: httpx.get(f"{tsapi.base_url}/readings").status_code == 401)
    yield tsapi
    tsapi.stop()


def access_lines(server: Tsapi, request_id: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in server.log_path.read_text().splitlines() if "{" in line]
    return [line for line in lines if line.get("request_id") == request_id]


def raw(server: Tsapi, request: bytes, wait: float = 10.0) -> bytes:
    """What the server answers to ``request``, sent as is, until it closes the connection."""
    parts = urlsplit(server.base_url)
    with socket.create_connection((parts.hostname, parts.port or 80), timeout=wait) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_every_answer_has_a_request_id_and_one_access_line(server: Tsapi) -> None:
    url = f"{server.base_url}/readings?limit=2&from=2024-01-01"
    response = httpx.get(url, headers=bearer(server.key))  # type: ignore[attr-defined]
    request_id = response.headers["X-Request-ID"]
    assert len(request_id) == 32 and int(request_id, 16) >= 0
    eventually(lambda: len(access_lines(server, request_id)) == 1)
    [line] = access_lines(server, request_id)
    assert line["event"] == "request" and line["logger"] == "tsapi.access"
    assert (line["method"], line["path"], line["route"], line["status"]) == (
        "GET",
        "/readings",
        "/readings",
        200,
    )
    assert line["ms"] > 0 and line["client"] == "127.0.0.1"
    assert "2024" not in json.dumps(line)  # no query string: it may hold anything


def test_a_sane_incoming_request_id_is_kept_and_others_are_replaced(server: Tsapi) -> None:
    for sent, kept in (("abc-123.x:y/z", True), ("x" * 129, False), ("a b", False)):
        response = httpx.get(f"{server.base_url}/nowhere", headers={"X-Request-ID": sent})
        assert response.status_code == 401  # refused answers have one too
        assert (response.headers["X-Request-ID"] == sent) is kept


def test_keys_never_appear_in_the_logs(server: Tsapi) -> None:
    key: str = server.key  # type: ignore[attr-defined]
    response = httpx.get(f"{server.base_url}/readings", headers=bearer(key))
    request_id = response.headers["X-Request-ID"]
    eventually(lambda: len(access_lines(server, request_id)) == 1)
    [line] = access_lines(server, request_id)
    assert line["key"] == key.split("_")[1]
    assert key.split("_", 2)[2] not in server.log_path.read_text()


def test_cors_answers_preflights_without_a_key_for_the_origins_set_only(server: Tsapi) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    for origin, allowed in (("https://ops.example", True), ("https://evil.example", False)):
        headers = {"Origin": origin}
        answer = httpx.options(f"{server.base_url}/readings", headers={**headers, **preflight})
        assert answer.status_code == (200 if allowed else 400)
        for response in (answer, httpx.get(f"{server.base_url}/healthz", headers=headers)):
            assert response.headers.get("Access-Control-Allow-Origin") == (
                origin if allowed else None
            )


def test_cors_is_off_unless_origins_are_set(make_database: Any, tmp_path: Path) -> None:
    plain = serve(make_database, tmp_path)
    try:
        headers = {"Origin": "https://app.example"}
        response = httpx.get(f"{plain.base_url}/healthz", headers=headers)
        assert "Access-Control-Allow-Origin" not in response.headers
    finally:
        plain.stop()


def test_a_body_that_does_not_arrive_in_time_is_408_and_the_connection_closed(
    server: Tsapi,
) -> None:
    key = server.key.encode()  # type: ignore[attr-defined]
    request = b"POST /readings HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n"
    request += b"Authorization: Bearer " + key + b"\r\n\r\n"  # and not a byte of the body
    head, _, body = raw(server, request).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"connection: close" in head.lower()
    assert json.loads(body) == {
        "error": "the request body came too slowly: nothing of it arrived for 0.5 s"
    }


def sent_in_pieces(server: Tsapi, body: bytes, pieces: int, pause: float) -> bytes:
    """The answer to a POST /readings whose body is sent in ``pieces``, ``pause`` s apart."""
    key = server.key.encode()  # type: ignore[attr-defined]
    head = b"POST /readings HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
    head += b"Content-Length: %d\r\nAuthorization: Bearer %s\r\n\r\n" % (len(body), key)
    parts = urlsplit(server.base_url)
    with socket.create_connection((parts.hostname, parts.port or 80), timeout=10) as sock:
        sock.sendall(head)
        size = -(-len(body) // pieces)
        try:
            for start in range(0, len(body), size):
                time.sleep(pause)
                sock.sendall(body[start : start + size])
        except OSError:  # the server answered and closed before the whole body was sent
            pass
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_a_body_that_keeps_arriving_may_take_longer_than_body_timeout(server: Tsapi) -> None:
    readings = [{"sensor": str(uuid.uuid4()), "value": n} for n in range(6)]
    body = json.dumps(readings, indent=40).encode()  # about 1.5 KB: 1.2 s at 250 ms a piece
    answer = sent_in_pieces(server, body, pieces=6, pause=0.25)
    head, _, count = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert json.loads(count) == 6


def test_a_body_trickling_below_body_min_rate_is_408(server: Tsapi) -> None:
    sensor = str(uuid.uuid4())
    body = json.dumps([{"sensor": sensor, "value": 1}]).encode()
    answer = sent_in_pieces(server, body, pieces=len(body), pause=0.3)  # 3 bytes/s, never idle
    head, _, error = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert json.loads(error) == {
        "error": "the request body came too slowly: it arrived at less than 200 bytes/s on average"
    }
    key = server.key  # type: ignore[attr-defined]
    stored = httpx.get(f"{server.base_url}/readings?sensor={sensor}", headers=bearer(key))
    assert stored.json() == []


def test_an_idle_keep_alive_connection_is_closed(server: Tsapi) -> None:
    began = time.monotonic()
    answer = raw(server, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ")  # and then the server closed it, unasked
    assert time.monotonic() - began < 10


def test_rate_limits_apply_per_key_and_per_address(make_database: Any, tmp_path: Path) -> None:
    limited = serve(make_database, tmp_path, TSAPI_RATE_LIMIT="1/h", TSAPI_RATE_LIMIT_BURST="3")
    try:
        url = f"{limited.base_url}/readings"
        assert [httpx.get(url).status_code for _ in range(4)] == [200, 200, 200, 429]
        refused = httpx.get(url)
        assert 3000 < int(refused.headers["Retry-After"]) <= 3600
        assert refused.json()["error"].startswith("too many requests: retry in ")
        assert httpx.get(f"{limited.base_url}/healthz").status_code == 200  # probes: never
        first, second = (make_key(limited.database_url, "read") for _ in range(2))
        eventually(lambda: httpx.get(url).status_code == 401)
        codes = [httpx.get(url, headers=bearer(first)).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        assert httpx.get(url, headers=bearer(second)).status_code == 200
    finally:
        limited.stop()


def test_serving_beyond_this_machine_without_auth_is_refused(clean_env: Path) -> None:
    for host in ("0.0.0.0", "::", "192.0.2.1", "example.com"):
        result = tsapi("serve", "--host", host, "--database-url", "postgresql://nowhere/x")
        assert result.returncode == 1
        assert result.stderr == (
            f"Error: refusing to serve on {host} without requiring API keys: set auth = required"
            " (and create a key with `tsapi keys create`), or allow_insecure_bind = true to"
            " serve it open\n"
        )


@pytest.mark.parametrize(
    ("settings", "refused"),
    [
        ({"host": "127.0.0.1"}, False),
        ({"host": "127.0.0.7"}, False),
        ({"host": "::1"}, False),
        ({"host": "localhost"}, False),
        ({"host": "0.0.0.0"}, True),
        ({"host": "0.0.0.0", "auth": "auto"}, True),  # keys may exist, but nothing requires them
        ({"host": "0.0.0.0", "auth": "required"}, False),
        ({"host": "0.0.0.0", "auth": "off", "allow_insecure_bind": True}, False),
    ],
)
def test_which_hosts_need_auth_required(
    clean_env: Path, settings: dict[str, Any], refused: bool
) -> None:
    assert (insecure_bind(Settings(**settings)) is not None) is refused
