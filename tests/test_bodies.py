"""Request bodies: gzip accepted for every format and decompressed as it arrives, every format's
size limit applied to the decompressed bytes (a decompression bomb is a 413), and a body that is
not what its headers say refused with a clear error, writing nothing."""

import gzip
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Tsapi, start_tsapi
from tests.test_ingest import SENSOR, count

GZIP = {"Content-Encoding": "gzip"}
FORMATS = {
    "json": ("/readings", "application/json", json.dumps([{"sensor": SENSOR, "value": 1}])),
    "ndjson": ("/readings", "application/x-ndjson", json.dumps({"sensor": SENSOR, "value": 1})),
    "csv": ("/readings", "text/csv", f"sensor,value\r\n{SENSOR},1\r\n"),
    "lineprotocol": ("/api/v2/write?bucket=b", "text/plain", "m,t=a f=1"),
}


@pytest.mark.parametrize("name", FORMATS)
def test_gzip_bodies_are_accepted_for_every_format(
    api: httpx.Client, db_url: str, name: str
) -> None:
    path, content_type, body = FORMATS[name]
    headers = {**GZIP, "Content-Type": content_type}
    response = api.post(path, content=gzip.compress(body.encode()), headers=headers)
    assert response.status_code in (200, 204), response.text
    assert count(db_url) == 1


def test_concatenated_gzip_members_are_one_body(api: httpx.Client, db_url: str) -> None:
    lines = [json.dumps({"sensor": SENSOR, "value": n}) + "\n" for n in range(3)]
    body = b"".join(gzip.compress(line.encode()) for line in lines)
    headers = {**GZIP, "Content-Type": "application/x-ndjson"}
    assert api.post("/readings", content=body, headers=headers).json() == 3


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"not gzip at all", "the body is not valid gzip"),
        (gzip.compress(b"[]")[:-6], "the gzip body is empty or truncated"),
        (b"", "the gzip body is empty or truncated"),
        (gzip.compress(b"[]") + b"junk", "the body is not valid gzip"),
    ],
)
def test_bodies_that_are_not_gzip_are_400(
    api: httpx.Client, db_url: str, body: bytes, reason: str
) -> None:
    response = api.post("/readings", content=body, headers=GZIP)
    assert response.status_code == 400
    assert response.json()["error"].startswith(reason)
    assert count(db_url) == 0


def test_a_json_decompression_bomb_is_413(api: httpx.Client, db_url: str) -> None:
    bomb = gzip.compress(b"[" + b" " * (17 * 1024 * 1024) + b"]")
    assert len(bomb) < 100_000
    response = api.post("/readings", content=bomb, headers=GZIP)
    assert response.status_code == 413
    assert response.json()["error"] == "the decompressed body is over the limit of 16777216 bytes"
    assert count(db_url) == 0


@pytest.mark.parametrize("encoding", ["br", "deflate, gzip", "compress"])
def test_other_encodings_are_415(api: httpx.Client, encoding: str) -> None:
    response = api.post("/readings", content=b"[]", headers={"Content-Encoding": encoding})
    assert response.status_code == 415
    assert "send gzip" in response.json()["error"]


@pytest.fixture(scope="module")
def small_limits(make_database: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tsapi]:
    """A tsapi whose streamed formats take at most 2,000 bytes."""
    server = start_tsapi(
        make_database("embedded"),
        tmp_path_factory.mktemp("small-limits") / "tsapi.log",
        TSAPI_MAX_BODY_BYTES_NDJSON="2000",
        TSAPI_MAX_BODY_BYTES_CSV="2000",
        TSAPI_MAX_BODY_BYTES_LINEPROTOCOL="2000",
    )
    yield server
    server.stop()


@pytest.mark.parametrize("name", ["ndjson", "csv", "lineprotocol"])
@pytest.mark.parametrize("compressed", [False, True])
def test_each_stream_format_has_its_own_limit_on_decompressed_bytes(
    small_limits: Tsapi, name: str, compressed: bool
) -> None:
    path, content_type, line = FORMATS[name]
    small = (line.splitlines()[-1] + "\n").encode() * 10
    big = (line.splitlines()[-1] + "\n").encode() * 300
    if name == "csv":
        small, big = b"sensor,value\n" + small, b"sensor,value\n" + big
    headers = {"Content-Type": content_type}
    with httpx.Client(base_url=small_limits.base_url) as client:
        assert client.post(path, content=small, headers=headers).status_code in (200, 204)
        if compressed:
            response = client.post(path, content=gzip.compress(big), headers={**headers, **GZIP})
            assert len(gzip.compress(big)) < 2000
        else:
            response = client.post(path, content=iter([big[:1000], big[1000:]]), headers=headers)
    assert response.status_code == 413
    what = "the decompressed body" if compressed else "the body"
    message = f"{what} is over the limit of 2000 bytes"
    if name == "lineprotocol":
        assert response.json() == {"code": "invalid", "message": message}
    else:
        assert response.json() == {"error": message}


def test_a_declared_length_over_the_limit_is_413_before_reading(small_limits: Tsapi) -> None:
    with httpx.Client(base_url=small_limits.base_url) as client:
        response = client.post("/write?db=d", content=b"m f=1\n" * 500)
    assert response.status_code == 413
    assert response.json()["message"] == "the body is 3000 bytes; the limit is 2000"
