"""tsapi's whole HTTP surface fuzzed with Schemathesis against the OpenAPI description it serves:
no request is answered with a 500, and every answer is one the description documents (status
code, content type, body schema, headers), for requests the description allows and for requests
it does not. Each operation is its own test, ``test_fuzz[GET /readings]`` and so on, run once on
an open tsapi (auth = auto, no key yet) and once with an admin key. Examples are bounded and drawn
derandomized: the module takes well under a minute, and a failure reproduces."""

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.conftest import BACKENDS, Tsapi, start_tsapi
from tests.keyring import bearer, make_key
from tsapi.openapi import SPEC

MAX_EXAMPLES = 25
TUTORIAL_SENSOR = "6f3e43a4-d1c1-4cb6-b928-0ac0efaf84a5"  # the path parameter's example

# Operations that refuse some requests their description allows, rightly: their parameters and
# bodies have rules OpenAPI 3.0 cannot state (a range across two parameters, a limit set in
# tsapi's settings, a cursor only tsapi makes, a body's encoding). Every other check runs on them.
NOT_ALL_VALID_ACCEPTED = {
    "POST /readings": "values must be finite and fit numeric, ts within years 1 to 9999, and a "
    "Content-Encoding: gzip body gzip; NDJSON and CSV bodies are free text to a schema",
    "GET /readings": "from must be before to, limit at most max_limit, a cursor one tsapi made",
    "GET /readings/aggregate": "from before to, at most max_points buckets between them, bucket "
    "at most 1000000w, tz an IANA zone",
    "GET /sensors": "limit at most max_limit",
    "POST /api/v2/write": "the body must be line protocol, gzip if Content-Encoding says so",
    "POST /write": "the body must be line protocol, gzip if Content-Encoding says so",
}

# NDJSON bodies are text, sent as they are.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")

schema = schemathesis.openapi.from_dict(json.loads(json.dumps(SPEC)))
# tsapi, like InfluxDB, ignores query parameters it does not know (InfluxDB's clients send some
# tsapi has no use for): an undocumented parameter makes no request invalid.
schema.config.generation.update(allow_extra_parameters=False)


def _seed(server: Tsapi, headers: dict[str, str]) -> None:
    """A few readings for the read routes to find, the path parameter's example sensor's too."""
    rows = [
        {"sensor": TUTORIAL_SENSOR, "value": 0.3, "ts": "2024-05-01T12:00:00Z"},
        {"sensor": TUTORIAL_SENSOR, "value": "18.80", "metadata": {"room": "r1"}},
        {"sensor": "d538f9fa-f6de-46e5-9fa2-d7ee9a0f0a68", "value": -1, "ts": "2024-05-01T13:00Z"},
    ]
    response = httpx.post(f"{server.base_url}/readings", json=rows, headers=headers)
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module", params=["open", "admin key"])
def fuzzed(
    request: pytest.FixtureRequest, make_database: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Tsapi, dict[str, str]]]:
    """A tsapi on a database of its own (the real test server's if one is given), and the
    headers every fuzzed request carries."""
    database = make_database("postgres" if "postgres" in BACKENDS else "embedded")
    log_path = tmp_path_factory.mktemp("fuzz") / "tsapi.log"
    server = start_tsapi(database, log_path, TSAPI_ROLLUP_REFRESH_INTERVAL="0.2")
    try:
        headers = bearer(make_key(database, "admin")) if request.param == "admin key" else {}
        _seed(server, headers)
        yield server, headers
    finally:
        server.stop()


def test_the_fuzzed_description_is_the_one_served(
    fuzzed: tuple[Tsapi, dict[str, str]],
) -> None:
    server, _ = fuzzed
    assert httpx.get(f"{server.base_url}/openapi.json").json() == schema.raw_schema


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None)
def test_fuzz(case: Any, fuzzed: tuple[Tsapi, dict[str, str]]) -> None:
    server, headers = fuzzed
    excluded = [positive_data_acceptance] if case.operation.label in NOT_ALL_VALID_ACCEPTED else []
    try:
        response = case.call_and_validate(
            base_url=server.base_url, headers=headers, excluded_checks=excluded
        )
    except Exception:
        print(server.log_path.read_text()[-20_000:])  # where a 500's traceback is
        raise
    # No key exists, or the request carries the admin key: nothing is refused for its key.
    assert response.status_code not in (401, 403), response.text


_DEEP_JSON = b"[" * 100_000 + b"]" * 100_000
_DEEP_METADATA = (
    b'{"sensor": "%s", "value": 1, "metadata": ' % TUTORIAL_SENSOR.encode()
    + b'{"a": ' * 5_000
    + b"1"
    + b"}" * 5_000
    + b"}\n"
)
_AGGREGATE = "/readings/aggregate?bucket="


# What fuzzing found: each was a 500 but the last of the aggregates, a query that never ended
# (to= the instant asyncpg sends as infinity). Kept as plain requests, which the derandomized
# examples need not draw again: method, path, body, status, and the parameter the error names.
FOUND = [
    pytest.param(
        "GET", f"{_AGGREGATE}99999999999999999999w", None, 400, "bucket", id="huge bucket"
    ),
    pytest.param("GET", f"{_AGGREGATE}99999999w&fill=null", None, 400, "bucket", id="wide bucket"),
    pytest.param("GET", f"{_AGGREGATE}1h&group=", None, 400, "group", id="empty group"),
    pytest.param("GET", f"{_AGGREGATE}1h&fill=", None, 400, "fill", id="empty fill"),
    pytest.param("GET", f"{_AGGREGATE}1h&fn=", None, 200, None, id="empty fn"),
    pytest.param(
        "GET",
        f"{_AGGREGATE}1w&from=0001-01-01T00:00:00.000001Z&to=0001-01-10T00:00:00Z"
        "&tz=Asia/Tokyo&fill=null",
        None,
        400,
        "tz",
        id="local buckets before year 1",
    ),
    pytest.param(
        "GET",
        f"{_AGGREGATE}1h&from=9999-12-30T00:00:00Z&to=9999-12-31T23:00:00Z&tz=Asia/Tokyo",
        None,
        200,
        None,
        id="local time after year 9999",
    ),
    pytest.param(
        "GET",
        f"{_AGGREGATE}1h&from=9999-12-31T23:00:00Z&to=9999-12-31T23:59:59.999999Z&fill=null",
        None,
        400,
        "to",
        id="to infinity",
    ),
    pytest.param("GET", "/sensors?limit=%C2%B2", None, 400, "limit", id="superscript limit"),
    pytest.param("POST", "/readings", _DEEP_JSON, 400, None, id="deep JSON"),
    pytest.param("POST", "/readings", _DEEP_METADATA, 400, None, id="deep metadata"),
    pytest.param("POST", "/readings?ndjson", _DEEP_METADATA, 422, None, id="deep NDJSON"),
    pytest.param("POST", "/write?db=%00", b"m f=1\n", 400, None, id="NUL db"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "parameter"), FOUND)
def test_what_fuzzing_found(
    fuzzed: tuple[Tsapi, dict[str, str]],
    method: str,
    path: str,
    body: bytes | None,
    status: int,
    parameter: str | None,
) -> None:
    server, headers = fuzzed
    if path.endswith("?ndjson"):
        path, headers = "/readings", {**headers, "Content-Type": "application/x-ndjson"}
    response = httpx.request(
        method, server.base_url + path, content=body, headers=headers, timeout=60
    )
    assert response.status_code == status, response.text
    if parameter is not None:
        assert response.json()["parameter"] == parameter


def test_a_405_allows_every_method_of_the_path(fuzzed: tuple[Tsapi, dict[str, str]]) -> None:
    server, headers = fuzzed
    response = httpx.put(f"{server.base_url}/readings", headers=headers)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, POST"
