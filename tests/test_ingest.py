"""POST /readings: what is accepted, exactly how it is stored, and how bad input is refused
without changing anything."""

import gzip
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import sql

SENSOR = "6f3e43a4-d1c1-4cb6-b928-0ac0efaf84a5"
OTHER = "d538f9fa-f6de-46e5-9fa2-d7ee9a0f0a68"


def count(db_url: str) -> int:
    total: int = sql(db_url, "SELECT count(*) FROM readings")[0][0]
    return total


def stored(db_url: str) -> list[tuple[str, str, str | None, str]]:
    rows = sql(
        db_url,
        "SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') AS ts,"
        " sensor::text, metadata::text, value::text FROM readings ORDER BY ts, value",
    )
    return [(r["ts"], r["sensor"], r["metadata"], r["value"]) for r in rows]


@pytest.mark.parametrize(
    "content_type",
    [None, "application/json", "application/x-www-form-urlencoded", "text/plain"],
)
def test_body_is_json_whatever_the_content_type(
    api: httpx.Client, db_url: str, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    body = json.dumps([{"sensor": SENSOR, "value": 1}, {"sensor": OTHER, "value": 2}])
    response = api.post("/readings", content=body, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.text == "2"
    assert count(db_url) == 2


def test_a_single_object_is_a_batch_of_one(api: httpx.Client, db_url: str) -> None:
    assert api.post("/readings", json={"sensor": SENSOR, "value": 5}).json() == 1
    assert count(db_url) == 1


def test_empty_array_inserts_nothing_and_answers_zero(api: httpx.Client, db_url: str) -> None:
    response = api.post("/readings", content=b"[]")
    assert (response.status_code, response.text) == (200, "0")
    assert count(db_url) == 0


@pytest.mark.parametrize(
    "raw, kept",
    [
        ("0.3", "0.3"),
        ("20.0", "20.0"),
        ("-0.000001", "-0.000001"),
        ("1e3", "1000"),
        ("123456789012345678901234567890.123456789", "123456789012345678901234567890.123456789"),
        ('"0.30"', "0.30"),
        ('"-7"', "-7"),
    ],
)
def test_values_are_stored_and_answered_exactly(
    api: httpx.Client, db_url: str, raw: str, kept: str
) -> None:
    body = f'[{{"sensor": "{SENSOR}", "value": {raw}}}]'
    assert api.post("/readings", content=body).json() == 1
    assert stored(db_url)[0][3] == kept
    answered = api.get("/readings", params={"limit": 1}).text
    assert f'"value":{kept}' in answered


@pytest.mark.parametrize(
    "ts, utc",
    [
        ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00.000000"),
        ("2024-05-01T12:00:00", "2024-05-01T12:00:00.000000"),
        ("2024-05-01T14:00:00.25+02:00", "2024-05-01T12:00:00.250000"),
        ("2024-05-01T07:30:00.123456-04:30", "2024-05-01T12:00:00.123456"),
        ("2024-05-01 12:00:00", "2024-05-01T12:00:00.000000"),
    ],
)
def test_timestamps_are_utc_unless_they_say_otherwise(
    api: httpx.Client, db_url: str, ts: str, utc: str
) -> None:
    assert api.post("/readings", json=[{"sensor": SENSOR, "value": 1, "ts": ts}]).json() == 1
    assert stored(db_url)[0][0] == utc
    assert api.get("/readings").json()[0]["ts"] == utc + "Z"


def test_missing_or_null_ts_is_the_database_now_shared_by_the_request(
    api: httpx.Client, db_url: str
) -> None:
    readings = [
        {"sensor": SENSOR, "value": 1},
        {"sensor": OTHER, "value": 2, "ts": None},
        {"sensor": OTHER, "value": 3, "ts": "2020-01-01T00:00:00Z"},
    ]
    assert api.post("/readings", json=readings).json() == 3
    rows = sql(
        db_url,
        "SELECT ts, now() - ts < interval '1 minute' AS recent FROM readings"
        " WHERE ts > '2021-01-01' ORDER BY value",
    )
    assert len(rows) == 2 and all(row["recent"] for row in rows)
    assert rows[0]["ts"] == rows[1]["ts"]


def test_metadata_objects_are_kept_and_unknown_keys_ignored(api: httpx.Client, db_url: str) -> None:
    readings = [
        {"sensor": SENSOR, "value": 1, "metadata": {"room": "r1", "n": [1, 2.50]}, "extra": 1},
        {"sensor": OTHER, "value": 2, "metadata": None},
    ]
    assert api.post("/readings", json=readings).json() == 2
    got = {row[1]: row[2] for row in stored(db_url)}
    assert json.loads(got[SENSOR] or "") == {"room": "r1", "n": [1, 2.5]}
    assert got[OTHER] is None
    answered = {r["sensor"]: r["metadata"] for r in api.get("/readings").json()}
    assert answered == {SENSOR: {"room": "r1", "n": [1, 2.5]}, OTHER: None}


def test_timestamps_far_in_the_past_and_future_are_stored(api: httpx.Client, db_url: str) -> None:
    readings = [
        {"sensor": SENSOR, "value": 1, "ts": "0001-01-01T00:00:00.000001Z"},
        {"sensor": SENSOR, "value": 2, "ts": "1969-12-31T23:59:59.999999Z"},
        {"sensor": SENSOR, "value": 3, "ts": "9999-12-31T23:59:59.999998Z"},
    ]
    assert api.post("/readings", json=readings).json() == 3
    assert [row[0] for row in stored(db_url)] == [
        "0001-01-01T00:00:00.000001",
        "1969-12-31T23:59:59.999999",
        "9999-12-31T23:59:59.999998",
    ]
    answered = [r["ts"] for r in api.get("/readings", params={"order": "asc"}).json()]
    assert answered == [
        "0001-01-01T00:00:00.000001Z",
        "1969-12-31T23:59:59.999999Z",
        "9999-12-31T23:59:59.999998Z",
    ]


@pytest.mark.parametrize(
    "ts",
    ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "0001-01-01T00:30:00+01:00"],
)
def test_the_first_and_last_representable_instants_are_refused(
    api: httpx.Client, db_url: str, ts: str
) -> None:
    response = api.post("/readings", json=[{"sensor": SENSOR, "value": 1, "ts": ts}])
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "ts"
    assert count(db_url) == 0


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b"", "invalid JSON"),
        (b"[{", "line 1, column 3"),
        (b'[\n{"sensor": "x",\n "value": }]', "line 3, column 11"),
        (b'[{"value": 1, "sensor": "\\ud800"}]', "\\ud800 is half of a UTF-16 surrogate pair"),
        (b'[{"value": 1, "sensor": "\\ud800"}]', "line 1, column 26"),
        (b"42", "not a JSON number"),
        (b'"readings"', "not a JSON string"),
        (b"null", "not a JSON null"),
    ],
)
def test_bodies_that_are_not_a_json_array_or_object_are_400(
    api: httpx.Client, db_url: str, body: bytes, fragment: str
) -> None:
    response = api.post("/readings", content=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert fragment in error
    assert "the body must be a JSON array of readings, or a single reading object" in error
    assert count(db_url) == 0


def test_one_bad_row_refuses_the_batch_and_names_every_problem(
    api: httpx.Client, db_url: str
) -> None:
    readings: list[object] = [
        {"sensor": SENSOR, "value": 1},
        {"sensor": "not-a-uuid", "value": 1},
        {"sensor": SENSOR},
        {"sensor": SENSOR, "value": True},
        {"sensor": SENSOR, "value": "NaN"},
        {"sensor": SENSOR, "value": "Infinity"},
        {"sensor": SENSOR, "value": "ten"},
        {"sensor": SENSOR, "value": 1, "ts": "yesterday"},
        {"sensor": SENSOR, "value": 1, "ts": 1714564800},
        {"sensor": SENSOR, "value": 1, "metadata": [1, 2]},
        {"sensor": 12, "value": 1e999999},
        "a string",
    ]
    response = api.post("/readings", content=json.dumps(readings).replace("Infinity", "1e999"))
    assert response.status_code == 422
    body = response.json()
    assert "nothing was written" in body["error"]
    problems = {(e["row"], e["field"]) for e in body["errors"]}
    assert problems == {
        (1, "sensor"),
        (2, "value"),
        (3, "value"),
        (4, "value"),
        (6, "value"),
        (7, "ts"),
        (8, "ts"),
        (9, "metadata"),
        (10, "sensor"),
        (11, None),
    }
    assert all(error["reason"] for error in body["errors"])
    assert count(db_url) == 0


def test_values_beyond_postgresql_numeric_are_refused_not_500(
    api: httpx.Client, db_url: str
) -> None:
    for raw in ("1e131072", "1e-16384"):
        body = f'[{{"sensor": "{SENSOR}", "value": {raw}}}]'
        response = api.post("/readings", content=body)
        assert response.status_code == 422, raw
        assert response.json()["errors"][0]["field"] == "value"
    assert count(db_url) == 0


def test_at_most_100_row_errors_are_listed(api: httpx.Client, db_url: str) -> None:
    response = api.post("/readings", json=[{"value": 1}] * 250)
    assert response.status_code == 422
    assert len(response.json()["errors"]) == 100


def test_too_many_rows_is_413(api: httpx.Client, db_url: str) -> None:
    response = api.post("/readings", json=[{"sensor": SENSOR, "value": 1}] * 100_001)
    assert response.status_code == 413
    assert "100000" in response.json()["error"]
    assert count(db_url) == 0


def test_a_body_over_the_size_limit_is_413(api: httpx.Client, db_url: str) -> None:
    big = b"[" + b" " * (16 * 1024 * 1024) + b"]"
    response = api.post("/readings", content=big)
    assert response.status_code == 413
    streamed = api.post("/readings", content=iter([big[:1024], big[1024:]]))
    assert streamed.status_code == 413
    assert count(db_url) == 0


def test_gzip_is_not_silently_misread(api: httpx.Client, db_url: str) -> None:
    body = gzip.compress(json.dumps([{"sensor": SENSOR, "value": 1}]).encode())
    response = api.post("/readings", content=body)
    assert response.status_code == 400
    assert count(db_url) == 0


def test_eight_concurrent_posters_give_exact_totals(api: httpx.Client, db_url: str) -> None:
    def post(client_number: int) -> int:
        total = 0
        for batch in range(20):
            readings = [
                {
                    "sensor": SENSOR,
                    "value": client_number * 1000 + batch,
                    "ts": f"2024-01-{1 + batch % 28:02d}T00:00:{client_number:02d}Z",
                }
                for _ in range(50)
            ] + [{"sensor": OTHER, "value": 1}] * 10
            answered: int = api.post("/readings", json=readings).json()
            total += answered
        return total

    with ThreadPoolExecutor(8) as pool:
        answered = sum(pool.map(post, range(8)))
    assert answered == 8 * 20 * 60
    assert count(db_url) == answered
    sums = sql(db_url, "SELECT sum(value) FROM readings WHERE sensor = $1::uuid", SENSOR)[0][0]
    assert sums == sum((c * 1000 + b) * 50 for c in range(8) for b in range(20))


@pytest.mark.parametrize(
    "metadata",
    ['{"note": "a\\u0000b"}', '{"big": 1e999999}', '{"\\u0000": 1}', '{"deep": [{"x": 1E-99999}]}'],
)
def test_metadata_jsonb_cannot_hold_is_refused_not_500(
    api: httpx.Client, db_url: str, metadata: str
) -> None:
    body = f'[{{"sensor": "{SENSOR}", "value": 1, "metadata": {metadata}}}]'
    response = api.post("/readings", content=body)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "metadata"
    assert count(db_url) == 0
