"""Idempotency-Key on POST /readings (JSON, NDJSON, CSV) and the InfluxDB write routes: a retry
answers the first answer and writes nothing again, also when it races the first attempt, and after
tsapi was killed between commit and answer; the same key with another request is refused."""

import asyncio
import gzip
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests import keyring
from tests.conftest import free_port, sql, start_tsapi
from tsapi import idempotency

SENSOR = "6f3e43a4-d1c1-4cb6-b928-0ac0efaf84a5"
BODY = [{"sensor": SENSOR, "value": n} for n in (1, 2, 3)]  # untimed: now()'s partition exists


def count(db_url: str) -> int:
    total: int = sql(db_url, "SELECT count(*) FROM readings")[0][0]
    return total


def new_key() -> str:
    return f"test-{uuid.uuid4()}"  # the server's keys outlive each test's emptied readings


def post(client: httpx.Client, key: str, body: object = BODY, path: str = "/readings") -> Any:
    return client.post(path, json=body, headers={"Idempotency-Key": key})


@dataclass(frozen=True)
class Form:
    """A way to write readings: where, as what, and what a write of ``n`` readings answers."""

    path: str
    content_type: str
    render: Callable[[Sequence[int]], str]  # a body of one reading per value
    bad_line: str
    status: int

    def answer(self, n: int) -> tuple[int, str]:
        return (self.status, str(n) if self.status == 200 else "")

    def body(self, values: Sequence[int] = (1, 2, 3)) -> bytes:
        return self.render(values).encode()


def _ndjson(values: Sequence[int]) -> str:
    return "".join(json.dumps({"sensor": SENSOR, "value": v}) + "\n" for v in values)


def _lines(values: Sequence[int]) -> str:
    return "".join(f"m v={v}\n" for v in values)  # untimed, as BODY's readings are


STREAMED = {
    "ndjson": Form("/readings", "application/x-ndjson", _ndjson, '{"value": 1}\n', 200),
    "csv": Form(
        "/readings",
        "text/csv",
        lambda values: "sensor,value\n" + "".join(f"{SENSOR},{v}\n" for v in values),
        f"{SENSOR},many\n",
        200,
    ),
    "line protocol v2": Form("/api/v2/write?bucket=b", "text/plain", _lines, "m v=\n", 204),
    "line protocol v1": Form("/write?db=d", "text/plain", _lines, "m v=1 soon\n", 204),
}
FORMS = {
    "json": Form(
        "/readings",
        "application/json",
        lambda values: json.dumps([{"sensor": SENSOR, "value": v} for v in values]),
        "]",
        200,
    ),
    **STREAMED,
}
streamed = pytest.mark.parametrize("form", STREAMED.values(), ids=STREAMED)
every_form = pytest.mark.parametrize("form", FORMS.values(), ids=FORMS)


def send(
    client: httpx.Client, key: str, form: Form, body: bytes | None = None, **headers: str
) -> httpx.Response:
    headers = {"Content-Type": form.content_type, "Idempotency-Key": key, **headers}
    return client.post(form.path, content=form.body() if body is None else body, headers=headers)


def replayed(response: httpx.Response) -> bool:
    return bool(response.headers.get("idempotent-replayed") == "true")


def test_a_retry_answers_the_first_answer_and_writes_nothing(
    api: httpx.Client, db_url: str
) -> None:
    key = new_key()
    first = post(api, key)
    assert (first.status_code, first.text) == (200, "3")
    assert "idempotent-replayed" not in first.headers
    for _ in range(2):
        retry = post(api, key)
        assert (retry.status_code, retry.text) == (200, "3")
        assert retry.headers["content-type"] == "application/json"
        assert retry.headers["idempotent-replayed"] == "true"
    assert count(db_url) == 3
    # Without a key, or with another one, the same body is a new request.
    assert api.post("/readings", json=BODY).text == "3"
    assert post(api, new_key()).text == "3"
    assert count(db_url) == 9


@pytest.mark.parametrize(
    ("body", "path"),
    [([{"sensor": SENSOR, "value": 4}], "/readings"), (BODY, "/readings?again=1")],
)
def test_the_same_key_for_another_request_is_a_422_that_changes_nothing(
    api: httpx.Client, db_url: str, body: object, path: str
) -> None:
    key = new_key()
    assert post(api, key).text == "3"
    refused = post(api, key, body, path)
    assert refused.status_code == 422
    assert refused.json() == {
        "error": "this Idempotency-Key was already used for a different request; use a new key"
        " for a new request, and the same key only to retry the same request",
        "header": "Idempotency-Key",
    }
    assert count(db_url) == 3
    assert post(api, key).headers["idempotent-replayed"] == "true"  # the first one stays


def test_a_refused_request_leaves_its_key_unused(api: httpx.Client, db_url: str) -> None:
    key = new_key()
    bad = post(api, key, [{"sensor": SENSOR, "value": "many"}])
    assert bad.status_code == 422
    fixed = post(api, key)
    assert (fixed.status_code, fixed.text) == (200, "3")
    assert "idempotent-replayed" not in fixed.headers
    assert count(db_url) == 3


@every_form
@pytest.mark.parametrize("key", ["", "k" * 256, "two\twords"])
def test_a_malformed_key_is_a_400(api: httpx.Client, db_url: str, key: str, form: Form) -> None:
    response = send(api, key, form)
    assert response.status_code == 400
    assert "Idempotency-Key must be 1 to 255 printable ASCII characters" in response.text
    if form.path == "/readings":
        assert response.json()["header"] == "Idempotency-Key"
    assert count(db_url) == 0


def test_an_expired_key_is_a_new_request_and_is_purged(api: httpx.Client, db_url: str) -> None:
    key, old = new_key(), new_key()
    assert post(api, key).text == "3"
    assert post(api, old).text == "3"
    sql(
        db_url,
        "UPDATE tsapi_idempotency SET created_at = created_at - interval '25 hours'"
        " WHERE key = ANY($1::text[])",
        [key, old],
    )
    again = post(api, key)  # the default retention is 24 hours
    assert (again.text, again.headers.get("idempotent-replayed")) == ("3", None)
    assert count(db_url) == 9

    async def purge() -> int:
        conn = await asyncpg.connect(db_url)
        try:
            return await idempotency.purge(conn, timedelta(hours=24))
        finally:
            await conn.close()

    assert asyncio.run(purge()) >= 1
    kept = sql(db_url, "SELECT key FROM tsapi_idempotency WHERE key = ANY($1::text[])", [key, old])
    assert [row["key"] for row in kept] == [key]


def test_keys_are_scoped_per_identity(db_url: str) -> None:
    async def run() -> list[tuple[idempotency.Answer, bool]]:
        conn = await asyncpg.connect(db_url)
        key, digest = new_key(), idempotency.digest("POST", "/readings", "", "", b"x")
        results = []
        try:
            for identity in ("key-a", "key-b", "key-a"):
                answer = idempotency.Answer(200, "text/plain", identity.encode())

                async def work(answer: idempotency.Answer = answer) -> idempotency.Answer:
                    return answer

                results.append(
                    await idempotency.once(conn, identity, key, digest, timedelta(days=1), work)
                )
        finally:
            await conn.close()
        return results

    answers = asyncio.run(run())
    assert [(answer.body, replayed) for answer, replayed in answers] == [
        (b"key-a", False),
        (b"key-b", False),
        (b"key-a", True),
    ]


@every_form
def test_every_format_is_written_once_per_key(api: httpx.Client, db_url: str, form: Form) -> None:
    key = new_key()
    first = send(api, key, form)
    assert ((first.status_code, first.text), replayed(first)) == (form.answer(3), False)
    for _ in range(2):
        retry = send(api, key, form)
        assert ((retry.status_code, retry.text), replayed(retry)) == (form.answer(3), True)
        assert retry.headers.get("content-type") == first.headers.get("content-type")
    assert count(db_url) == 3


@every_form
def test_the_same_key_for_another_body_query_or_content_type_is_a_422(
    api: httpx.Client, db_url: str, form: Form
) -> None:
    key = new_key()
    assert send(api, key, form).status_code == form.status
    others = [
        (
            form.path,
            form.body() + b"\n",
            form.content_type,
        ),  # the same readings, not the same bytes
        (f"{form.path}{'&' if '?' in form.path else '?'}again=1", form.body(), form.content_type),
        (form.path, form.body(), f"{form.content_type}; charset=utf-8"),
    ]
    for path, body, content_type in others:
        headers = {"Idempotency-Key": key, "Content-Type": content_type}
        refused = api.post(path, content=body, headers=headers)
        assert refused.status_code == 422
        assert "was already used for a different request" in refused.text
    assert count(db_url) == 3
    assert replayed(send(api, key, form))  # the first one stays


@streamed
def test_a_streamed_attempt_that_fails_after_writing_leaves_its_key_free(
    api: httpx.Client, db_url: str, form: Form
) -> None:
    key, good = new_key(), form.body(range(60_000))  # several blocks, the first written first
    bad = send(api, key, form, good + form.bad_line.encode())
    assert bad.status_code == (400 if form.status == 204 else 422)
    assert count(db_url) == 0
    fixed = send(api, key, form, good)
    assert ((fixed.status_code, fixed.text), replayed(fixed)) == (form.answer(60_000), False)
    assert count(db_url) == 60_000


@streamed
def test_a_long_streamed_retry_is_read_to_its_end_and_compared(
    api: httpx.Client, db_url: str, form: Form
) -> None:
    key, values = new_key(), list(range(60_000))

    def chunks(body: bytes) -> Iterator[bytes]:
        for start in range(0, len(body), 65_536):
            yield body[start : start + 65_536]

    assert send(api, key, form, form.body(values)).status_code == form.status
    retry = api.post(
        form.path,
        content=chunks(form.body(values)),
        headers={"Content-Type": form.content_type, "Idempotency-Key": key},
    )
    assert ((retry.status_code, retry.text), replayed(retry)) == (form.answer(60_000), True)
    changed_at_the_end = send(api, key, form, form.body([*values[:-1], 7]))
    assert changed_at_the_end.status_code == 422
    assert count(db_url) == 60_000


@pytest.mark.parametrize("form", [STREAMED["ndjson"], STREAMED["line protocol v2"]])
def test_a_gzipped_body_is_the_same_request_as_its_plain_one(
    api: httpx.Client, db_url: str, form: Form
) -> None:
    key, zipped = new_key(), {"Content-Encoding": "gzip"}
    first = send(api, key, form, gzip.compress(form.body()), **zipped)
    assert ((first.status_code, first.text), replayed(first)) == (form.answer(3), False)
    again = send(api, key, form, gzip.compress(form.body()), **zipped)
    assert ((again.status_code, again.text), replayed(again)) == (form.answer(3), True)
    # The body digested is the one decoded: compressed otherwise, or not, it is the same.
    plain = send(api, key, form)
    assert ((plain.status_code, plain.text), replayed(plain)) == (form.answer(3), True)
    other = send(api, key, form, gzip.compress(form.body([4])), **zipped)
    assert other.status_code == 422
    assert count(db_url) == 3


@pytest.fixture
def readings_locked(db_url: str) -> Iterator[Callable[[], None]]:
    """Writes to readings wait until the function given is called (or the test ends)."""
    ready, release, done = threading.Event(), threading.Event(), threading.Event()

    async def hold() -> None:
        conn = await asyncpg.connect(db_url)
        try:
            async with conn.transaction():
                await conn.execute("LOCK TABLE readings IN SHARE MODE")
                ready.set()
                while not release.is_set():
                    await asyncio.sleep(0.01)
        finally:
            await conn.close()
            done.set()

    thread = threading.Thread(target=asyncio.run, args=(hold(),))
    thread.start()
    assert ready.wait(30)
    yield release.set
    release.set()
    thread.join(30)


def waiting_backends(db_url: str, count: int) -> list[asyncpg.Record]:
    """tsapi's backends waiting for a lock, once there are ``count`` of them."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = sql(
            db_url,
            "SELECT pid, wait_event FROM pg_stat_activity WHERE application_name = 'tsapi'"
            " AND wait_event_type = 'Lock' AND datname = current_database()",
        )
        if len(rows) == count:
            return rows
        time.sleep(0.02)
    raise AssertionError(f"{count} requests never waited together")


@every_form
def test_a_retry_racing_the_first_attempt_waits_and_answers_its_result(
    api: httpx.Client, db_url: str, readings_locked: Callable[[], None], form: Form
) -> None:
    key = new_key()
    with ThreadPoolExecutor(2) as pool:
        attempts = [pool.submit(send, api, key, form) for _ in range(2)]
        # One waits to write into readings, the other for the first one's key.
        waits = waiting_backends(db_url, 2)
        assert sorted(row["wait_event"] for row in waits) == ["relation", "transactionid"]
        readings_locked()
        responses = [attempt.result(60) for attempt in attempts]
    assert [(r.status_code, r.text) for r in responses] == [form.answer(3)] * 2
    assert sorted(replayed(r) for r in responses) == [False, True]
    assert count(db_url) == 3


@every_form
def test_a_retry_racing_a_first_attempt_that_fails_does_the_work_itself(
    api: httpx.Client, db_url: str, readings_locked: Callable[[], None], form: Form
) -> None:
    key = new_key()
    with ThreadPoolExecutor(2) as pool:
        attempts = [pool.submit(send, api, key, form) for _ in range(2)]
        waits = waiting_backends(db_url, 2)
        first = next(row["pid"] for row in waits if row["wait_event"] == "relation")
        sql(db_url, "SELECT pg_terminate_backend($1)", first)
        waiting_backends(db_url, 1)  # the retry now waits to write, having taken the key
        readings_locked()
        responses = sorted(
            (attempt.result(60) for attempt in attempts), key=lambda r: r.status_code
        )
    assert ((responses[0].status_code, responses[0].text), replayed(responses[0])) == (
        form.answer(3),
        False,
    )
    assert responses[1].status_code == 503
    assert count(db_url) == 3


def forward(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass


def test_a_retry_after_tsapi_was_killed_between_commit_and_answer_answers_the_first_answer(
    backend: str, make_database: Any, tmp_path: Path
) -> None:
    url = make_database(backend)
    log_path = tmp_path / "tsapi.log"
    server = start_tsapi(url, log_path)
    key = new_key()
    # A proxy that passes the request on, and kills tsapi -9 as its answer starts to arrive:
    # after the commit, before the client has any of the answer.
    listener = socket.create_server(("127.0.0.1", free_port()))
    port = server.base_url.rsplit(":", 1)[1]

    def cut() -> None:
        client, _ = listener.accept()
        upstream = socket.create_connection(("127.0.0.1", int(port)))
        threading.Thread(target=forward, args=(client, upstream), daemon=True).start()
        upstream.recv(1)  # the first byte of the answer
        server.process.kill()
        server.process.wait(30)
        client.close()
        upstream.close()

    proxy = threading.Thread(target=cut)
    proxy.start()
    try:
        with pytest.raises(httpx.TransportError):
            post(httpx.Client(base_url=f"http://127.0.0.1:{listener.getsockname()[1]}"), key)
        proxy.join(30)
        assert count(url) == 3  # committed, but never answered
        server = start_tsapi(url, log_path)
        with httpx.Client(base_url=server.base_url) as client:
            retry = post(client, key)
        assert (retry.status_code, retry.text) == (200, "3")
        assert retry.headers["idempotent-replayed"] == "true"
        assert count(url) == 3
    finally:
        listener.close()
        server.stop()


def test_with_api_keys_each_key_has_its_own_idempotency_keys(
    make_database: Any, tmp_path: Path
) -> None:
    server = keyring.serve(make_database, tmp_path)
    try:
        one, two = (keyring.make_key(server.database_url, "write") for _ in range(2))
        key = new_key()
        with httpx.Client(base_url=server.base_url) as client:

            def send(api_key: str, body: object) -> httpx.Response:
                headers = {**keyring.bearer(api_key), "Idempotency-Key": key}
                return client.post("/readings", json=body, headers=headers)

            first = send(one, BODY)
            other = send(two, [{"sensor": SENSOR, "value": 9}])  # the same key, another client
            again = send(one, BODY)
        assert (first.text, other.text, again.text) == ("3", "1", "3")
        assert "idempotent-replayed" not in other.headers
        assert again.headers["idempotent-replayed"] == "true"
        assert count(server.database_url) == 4
        identities = sql(server.database_url, "SELECT identity FROM tsapi_idempotency")
        assert sorted(row["identity"] for row in identities) == sorted(
            k.split("_")[1] for k in (one, two)
        )
    finally:
        server.stop()
