"""GET /readings as JSON, NDJSON or CSV, chosen by Accept or format=; and limit=all, which streams
every row in constant memory."""

import asyncio
import csv
import io
import json
import time
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import Tsapi, sql
from tests.test_query import OTHER, SENSOR, THIRD, exact, tricky_rows, walk_links

NDJSON = "application/x-ndjson"
CSV = "text/csv; charset=utf-8"

# Values that a float would not keep, and metadata that needs CSV quoting.
AWKWARD: list[dict[str, Any]] = [
    {"sensor": SENSOR, "value": "0.0000001", "ts": "2024-05-01T00:00:05Z", "metadata": None},
    {"sensor": SENSOR, "value": "1.50", "ts": "2024-05-01T00:00:04Z", "metadata": {"a": "x,y"}},
    {
        "sensor": OTHER,
        "value": "12345678901234567890.123456789",
        "ts": "2024-05-01T00:00:03.123456Z",
        "metadata": {"quote": 'say "hi"', "line": "one\ntwo", "é": "ü"},
    },
    {"sensor": THIRD, "value": "-2.5", "ts": "2024-05-01T00:00:02Z", "metadata": {}},
    {"sensor": THIRD, "value": "1E+3", "ts": "2024-05-01T00:00:01Z", "metadata": {"n": 1.0}},
]


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def parse_ndjson(text: str) -> list[Any]:
    assert text.endswith("\n")
    return [json.loads(line, parse_float=Decimal, parse_int=Decimal) for line in text.splitlines()]


@pytest.mark.parametrize(
    "accept, content_type",
    [
        ("application/x-ndjson", NDJSON),
        ("application/ndjson", NDJSON),
        ("text/csv", CSV),
        ("application/json", "application/json"),
        ("*/*", "application/json"),
        ("text/html", "application/json"),  # none that tsapi writes: JSON
        ("text/csv;q=0.5, application/x-ndjson", NDJSON),
        ("application/x-ndjson;q=0.2, text/csv;q=0.9", CSV),
        ("text/csv;q=0, */*;q=0.1", "application/json"),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "application/json"),
    ],
)
def test_accept_chooses_the_format(api: httpx.Client, accept: str, content_type: str) -> None:
    api.post("/readings", json=AWKWARD)
    response = api.get("/readings", headers={"Accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.headers["vary"] == "Accept"


@pytest.mark.parametrize(
    "name, content_type", [("json", "application/json"), ("ndjson", NDJSON), ("csv", CSV)]
)
def test_format_parameter_wins_over_accept(api: httpx.Client, name: str, content_type: str) -> None:
    api.post("/readings", json=AWKWARD)
    response = api.get("/readings", params={"format": name}, headers={"Accept": "text/csv"})
    assert response.headers["content-type"] == content_type


def test_csv_reads_back_with_the_exact_values(api: httpx.Client) -> None:
    api.post("/readings", json=AWKWARD)
    response = api.get("/readings", params={"format": "csv"})
    assert response.text.startswith("ts,sensor,value,metadata\r\n")
    rows = parse_csv(response.text)
    assert [row["value"] for row in rows] == [
        "0.0000001",
        "1.50",
        "12345678901234567890.123456789",
        "-2.5",
        "1000",
    ]
    assert rows[0] == {
        "ts": "2024-05-01T00:00:05.000000Z",
        "sensor": SENSOR,
        "value": "0.0000001",
        "metadata": "",
    }
    assert rows[2]["ts"] == "2024-05-01T00:00:03.123456Z"
    assert [json.loads(row["metadata"]) if row["metadata"] else None for row in rows] == [
        reading["metadata"] for reading in AWKWARD
    ]


def test_ndjson_is_one_reading_per_line_as_in_json(api: httpx.Client) -> None:
    api.post("/readings", json=AWKWARD)
    lines = parse_ndjson(api.get("/readings", headers={"Accept": NDJSON}).text)
    assert lines == exact(api.get("/readings"))
    assert [str(line["value"]) for line in lines] == [
        "1E-7",  # Decimal's spelling of 0.0000001
        "1.50",
        "12345678901234567890.123456789",
        "-2.5",
        "1000",
    ]


def test_json_numbers_carry_every_stored_digit(api: httpx.Client) -> None:
    api.post("/readings", json=AWKWARD)
    text = api.get("/readings").text
    for digits in ('"value":0.0000001', '"value":1.50', '"value":12345678901234567890.123456789'):
        assert digits in text


def test_values_written_around_tsapi_that_json_has_no_number_for(
    api: httpx.Client, db_url: str
) -> None:
    # tsapi refuses NaN and infinities, but psql may write them (a reading posted first makes the
    # partition they go to). A table tsapi adopted may also hold readings without a sensor.
    api.post("/readings", json=[{"sensor": SENSOR, "value": 1, "ts": "2024-05-01T00:00:00Z"}])
    sql(db_url, "DELETE FROM readings")
    sql(
        db_url,
        "INSERT INTO readings (ts, sensor, metadata, value) SELECT"
        " timestamptz '2024-05-01T00:00:00Z' + n * interval '1 second', s, m, v FROM unnest("
        " ARRAY[1, 2, 3, 4], ARRAY[$1::uuid, $1, $1, $1],"
        " ARRAY['{\"a\": [1, \"b\"]}'::jsonb, NULL, '{}', NULL],"
        " ARRAY['NaN', 'Infinity', '-Infinity', '-0.000']::numeric[]) AS t(n, s, m, v)",
        SENSOR,
    )
    assert api.get("/readings", params={"order": "asc"}).json() == [
        {"ts": "2024-05-01T00:00:01.000000Z", "sensor": SENSOR, "metadata": {"a": [1, "b"]}}
        | {"value": None},
        {"ts": "2024-05-01T00:00:02.000000Z", "sensor": SENSOR, "metadata": None, "value": None},
        {"ts": "2024-05-01T00:00:03.000000Z", "sensor": SENSOR, "metadata": {}, "value": None},
        {"ts": "2024-05-01T00:00:04.000000Z", "sensor": SENSOR, "metadata": None, "value": 0},
    ]
    assert '"value":0.000}' in api.get("/readings", params={"limit": 1}).text
    assert parse_csv(api.get("/readings", params={"order": "asc", "format": "csv"}).text) == [
        {"ts": "2024-05-01T00:00:01.000000Z", "sensor": SENSOR, "value": "NaN"}
        | {"metadata": '{"a": [1, "b"]}'},
        {"ts": "2024-05-01T00:00:02.000000Z", "sensor": SENSOR, "value": "Infinity"}
        | {"metadata": ""},
        {"ts": "2024-05-01T00:00:03.000000Z", "sensor": SENSOR, "value": "-Infinity"}
        | {"metadata": "{}"},
        {"ts": "2024-05-01T00:00:04.000000Z", "sensor": SENSOR, "value": "0.000", "metadata": ""},
    ]


@pytest.mark.parametrize("name", ["ndjson", "csv"])
def test_ndjson_and_csv_pages_link_to_the_next(api: httpx.Client, name: str) -> None:
    rows = tricky_rows()
    api.post("/readings", json=rows)
    parse = parse_ndjson if name == "ndjson" else parse_csv
    pages: list[Any] = []
    url = f"/readings?limit=11&format={name}"
    while url:
        response = api.get(url)
        page = parse(response.text)
        assert len(page) <= 11
        pages += page
        url = response.links.get("next", {}).get("url", "")
    assert len(pages) == len(rows)
    assert parse(api.get(f"/readings?limit=all&format={name}").text) == pages


def test_a_filtered_walk_is_the_same_in_every_format(api: httpx.Client) -> None:
    api.post("/readings", json=tricky_rows())
    query = f"sensor={OTHER}&metadata=%7B%22a%22%3A1%7D&order=asc&from=2024-05-01T00:00:01Z"
    as_json = walk_links(api, f"/readings?limit=3&{query}")
    as_csv = parse_csv(api.get(f"/readings?limit=all&format=csv&{query}").text)
    assert len(as_json) == len(as_csv) > 3
    assert [(r["ts"], str(r["value"])) for r in as_json] == [(r["ts"], r["value"]) for r in as_csv]


def test_limit_all_streams_every_row_in_every_format(api: httpx.Client) -> None:
    # More rows than one batch from the database, in several groups of identical rows.
    rows = tricky_rows() * 12
    assert api.post("/readings", json=rows).json() == len(rows)
    whole = exact(api.get("/readings?limit=all"))
    assert len(whole) == len(rows)
    assert parse_ndjson(api.get("/readings?limit=all&format=ndjson").text) == whole
    assert len(parse_csv(api.get("/readings?limit=all&format=csv").text)) == len(rows)
    envelope = exact(api.get("/readings?limit=all&envelope=true"))
    assert envelope == {"readings": whole, "next": None}


def test_an_empty_result_in_every_format(api: httpx.Client) -> None:
    empty = {"sensor": SENSOR}
    for limit in ("10", "all"):
        assert api.get("/readings", params={**empty, "limit": limit}).json() == []
        enveloped = api.get("/readings", params={**empty, "limit": limit, "envelope": "true"})
        assert enveloped.json() == {"readings": [], "next": None}
        assert api.get("/readings", params={**empty, "limit": limit, "format": "ndjson"}).text == ""
        as_csv = api.get("/readings", params={**empty, "limit": limit, "format": "csv"})
        assert as_csv.text == "ts,sensor,value,metadata\r\n"


@pytest.mark.parametrize(
    "params, parameter",
    [
        ({"format": "xml"}, "format"),
        ({"format": "CSV "}, "format"),
        ({"envelope": "yes"}, "envelope"),
        ({"envelope": "true", "format": "csv"}, "envelope"),
        ({"envelope": "true", "format": "ndjson"}, "envelope"),
    ],
)
def test_bad_format_parameters_are_400(
    api: httpx.Client, params: dict[str, str], parameter: str
) -> None:
    response = api.get("/readings", params=params)
    assert response.status_code == 400
    assert response.json()["parameter"] == parameter


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_large_export_streams_in_flat_memory(api: httpx.Client, tsapi: Tsapi) -> None:
    total = 200_000
    # One reading through the API makes that day's partition; the rest go straight in.
    api.post("/readings", json=[{"sensor": SENSOR, "value": 0, "ts": "2024-05-01T00:00:00Z"}])
    sql(
        tsapi.database_url,
        """INSERT INTO readings (ts, sensor, metadata, value)
           SELECT '2024-05-01'::timestamptz + i * interval '100 ms', gen_random_uuid(),
                  jsonb_build_object('room', 'r' || i % 7, 'note', 'a, "b"'), i / 8.0
           FROM generate_series(1, $1) AS i""",
        total - 1,
    )
    pid = tsapi.process.pid
    # A first, small export warms up what any request allocates once (statement cache, buffers).
    assert api.get("/readings?limit=all&format=csv&to=2024-05-01T00:10:00Z").status_code == 200
    for name in ("csv", "ndjson"):
        before = peak = rss_kib(pid)
        received = lines = 0
        with api.stream("GET", f"/readings?limit=all&format={name}") as response:
            assert response.status_code == 200
            for chunk in response.iter_bytes():
                received += len(chunk)
                lines += chunk.count(b"\n")
                peak = max(peak, rss_kib(pid))
        assert lines == total + (name == "csv")
        # Holding the answer, or the rows, would take more than the answer's own size.
        assert received > 20_000_000
        assert (peak - before) * 1024 < received / 4, (name, before, peak, received)


def test_a_client_leaving_mid_export_frees_its_connection(api: httpx.Client, tsapi: Tsapi) -> None:
    api.post("/readings", json=tricky_rows() * 30)
    for _ in range(12):  # more than the pool's 10 connections
        with api.stream("GET", "/readings?limit=all&format=csv") as response:
            next(response.iter_bytes())
    assert api.get("/readings?limit=1").status_code == 200

    async def busy_exports() -> int:
        conn = await asyncpg.connect(tsapi.database_url)
        try:
            count: int = await conn.fetchval(
                """SELECT count(*) FROM pg_stat_activity
                   WHERE application_name = 'tsapi' AND state <> 'idle'
                     AND query LIKE 'SELECT ts, sensor, metadata, value FROM readings%'"""
            )
            return count
        finally:
            await conn.close()

    deadline = time.monotonic() + 30
    while asyncio.run(busy_exports()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert asyncio.run(busy_exports()) == 0
