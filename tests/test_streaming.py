"""POST /readings with NDJSON or CSV bodies: chosen by Content-Type, judged as JSON readings are,
parsed and written as they arrive, in one transaction: a bad line anywhere, even after batches
were written, leaves nothing written and is named by its line number."""

import json
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Tsapi, sql, start_tsapi
from tests.test_ingest import OTHER, SENSOR, count, stored

NDJSON = {"Content-Type": "application/x-ndjson"}
CSV = {"Content-Type": "text/csv"}


def test_ndjson_is_a_reading_per_line(api: httpx.Client, db_url: str) -> None:
    body = (
        f'{{"sensor": "{SENSOR}", "value": 0.30, "ts": "2024-05-01T14:00:00+02:00"}}\n'
        "\n"
        f'{{"sensor": "{OTHER}", "value": "-7", "metadata": {{"room": "r1"}}}}\r\n'
    )
    response = api.post("/readings", content=body, headers=NDJSON)
    assert (response.status_code, response.text) == (200, "2")
    assert response.headers["content-type"] == "application/json"
    rows = stored(db_url)
    assert rows[0] == ("2024-05-01T12:00:00.000000", SENSOR, None, "0.30")
    assert rows[1][1:] == (OTHER, '{"room": "r1"}', "-7")


@pytest.mark.parametrize(
    "content_type", ["text/csv", "text/csv; charset=utf-8", "TEXT/CSV; header=present"]
)
def test_csv_has_a_header_naming_its_columns(
    api: httpx.Client, db_url: str, content_type: str
) -> None:
    body = (
        "value,ts,sensor,metadata\r\n"
        f'0.30,2024-05-01T12:00:00Z,{SENSOR},"{{""room"": ""r1""}}"\r\n'
        f"20.0,,{OTHER},\r\n"
    )
    response = api.post("/readings", content=body, headers={"Content-Type": content_type})
    assert (response.status_code, response.text) == (200, "2")
    rows = stored(db_url)
    assert rows[0] == ("2024-05-01T12:00:00.000000", SENSOR, '{"room": "r1"}', "0.30")
    assert rows[1][1:] == (OTHER, None, "20.0")


def test_readings_without_ts_share_the_databases_now(api: httpx.Client, db_url: str) -> None:
    body = "sensor,value\n" + "".join(f"{SENSOR},{n}\n" for n in range(3))
    assert api.post("/readings", content=body, headers=CSV).json() == 3
    rows = sql(
        db_url, "SELECT DISTINCT ts, now() - ts < interval '1 minute' AS recent FROM readings"
    )
    assert len(rows) == 1 and rows[0]["recent"]


def test_a_csv_export_posts_back_as_it_was(api: httpx.Client, db_url: str) -> None:
    readings = [
        {"sensor": SENSOR, "value": 1.50, "ts": "2024-05-01T12:00:00.5Z", "metadata": {"a": [1]}},
        {"sensor": OTHER, "value": "0.0000001", "ts": "2024-05-01T12:00:01Z"},
    ]
    api.post("/readings", json=readings)
    exported = api.get("/readings", params={"format": "csv", "order": "asc"}).text
    before = stored(db_url)
    sql(db_url, "TRUNCATE readings")
    assert api.post("/readings", content=exported, headers=CSV).json() == 2
    assert stored(db_url) == before


@pytest.mark.parametrize("content_type", ["text/csv; charset=latin-1", "text/csv;charset=utf-16"])
def test_csv_in_another_charset_is_415(api: httpx.Client, content_type: str) -> None:
    response = api.post(
        "/readings", content=f"sensor,value\n{SENSOR},1\n", headers={"Content-Type": content_type}
    )
    assert response.status_code == 415
    assert "UTF-8" in response.json()["error"]


def test_bad_lines_are_422_naming_each_line_and_nothing_is_written(
    api: httpx.Client, db_url: str
) -> None:
    body = (
        f'{{"sensor": "{SENSOR}", "value": 1}}\n'
        f'{{"sensor": "{SENSOR}"}}\n'
        "\n"
        "{not json\n"
        f'{{"sensor": "nope", "value": 1, "ts": "soon"}}\n'
    )
    response = api.post("/readings", content=body, headers=NDJSON)
    assert response.status_code == 422
    assert response.json()["error"] == "4 invalid line(s); nothing was written"
    assert [(e["line"], e["field"]) for e in response.json()["errors"]] == [
        (2, "value"),
        (4, None),
        (5, "sensor"),
        (5, "ts"),
    ]
    assert count(db_url) == 0


def test_a_bad_line_after_batches_were_written_rolls_them_back(
    api: httpx.Client, db_url: str
) -> None:
    # About 3 MB: a dozen batches are written before the last line is read.
    good = "".join(f"{SENSOR},{n}.25,2024-05-01T12:{n % 60:02d}:00Z\n" for n in range(40_000))
    body = "sensor,value,ts\n" + good + f"{SENSOR},oops,\n"

    def chunks() -> Iterator[bytes]:
        data = body.encode()
        for start in range(0, len(data), 65_536):
            yield data[start : start + 65_536]

    response = api.post("/readings", content=chunks(), headers=CSV)
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"line": 40_002, "field": "value", "reason": "'oops' is not a number"}
    ]
    assert count(db_url) == 0
    response = api.post("/readings", content="sensor,value,ts\n" + good, headers=CSV)
    assert (response.status_code, response.json()) == (200, 40_000)
    assert count(db_url) == 40_000


def test_a_body_that_makes_a_partition_holds_up_no_other_request_while_it_streams(
    api: httpx.Client, tsapi: Tsapi, db_url: str
) -> None:
    # Readings of a day with no partition yet, enough for two blocks of 512 KB and more: the
    # first two are written, and the first makes the partition, before the client pauses.
    day = datetime(1990, 1, 1, tzinfo=UTC) + timedelta(days=random.randrange(3000))
    stamps = (day + timedelta(seconds=n) for n in range(20_000))
    first = "sensor,value,ts\n" + "".join(
        f"{SENSOR},{n}.5,{ts.isoformat()}\n" for n, ts in enumerate(stamps)
    )
    more = threading.Event()

    def chunks() -> Iterator[bytes]:
        yield first.encode()
        more.wait(60)  # the client pauses mid-body, its first block written
        yield f"{SENSOR},1,{day.isoformat()}\n".encode()

    with ThreadPoolExecutor(1) as background:
        posted = background.submit(api.post, "/readings", content=chunks(), headers=CSV)
        try:
            deadline = time.monotonic() + 30
            while not sql(db_url, _WAITING_AFTER_COPY)[0][0]:
                assert time.monotonic() < deadline, "the first block was never written"
                time.sleep(0.05)
            with httpx.Client(base_url=tsapi.base_url, timeout=5) as other:
                assert other.get("/readings?limit=1").status_code == 200
                written = other.post("/readings", json=[{"sensor": OTHER, "value": 2}])
                assert (written.status_code, written.json()) == (200, 1)
        finally:
            more.set()
        response = posted.result(60)
    assert (response.status_code, response.json()) == (200, 20_001)
    assert count(db_url) == 20_002


# A connection whose transaction has written and waits: the stream's, for its client.
_WAITING_AFTER_COPY = """SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
    AND state = 'idle in transaction' AND backend_xid IS NOT NULL"""


def test_at_most_100_bad_lines_are_listed(api: httpx.Client, db_url: str) -> None:
    body = f'{{"sensor": "{SENSOR}"}}\n' * 250
    response = api.post("/readings", content=body, headers=NDJSON)
    assert response.status_code == 422
    assert response.json()["error"] == "100+ invalid line(s); nothing was written"
    assert [e["line"] for e in response.json()["errors"]] == list(range(1, 101))


def test_a_bad_csv_header_is_400(api: httpx.Client, db_url: str) -> None:
    response = api.post("/readings", content=f"sensor,amount\n{SENSOR},1\n", headers=CSV)
    assert response.status_code == 400
    assert "no 'value' column" in response.json()["error"]
    assert count(db_url) == 0


@pytest.mark.parametrize("headers", [NDJSON, CSV])
def test_an_empty_body_writes_nothing(api: httpx.Client, headers: dict[str, str]) -> None:
    response = api.post("/readings", content=b"", headers=headers)
    assert (response.status_code, response.text) == (200, "0")


def test_there_is_no_row_limit_on_streams(api: httpx.Client, db_url: str) -> None:
    # max_rows_per_request (100,000 by default) is for JSON; a stream is bounded by its size.
    line = json.dumps({"sensor": SENSOR, "value": 1, "ts": "2024-01-01T00:00:00Z"}) + "\n"
    response = api.post("/readings", content=line * 100_001, headers=NDJSON)
    assert (response.status_code, response.json()) == (200, 100_001)


def _rss(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(field)


@pytest.fixture(scope="module")
def lone_tsapi(make_database: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tsapi]:
    """A tsapi of its own, whose peak memory no other test has raised."""
    server = start_tsapi(make_database("embedded"), tmp_path_factory.mktemp("lone") / "tsapi.log")
    yield server
    server.stop()


def test_a_large_body_is_ingested_in_flat_memory(lone_tsapi: Tsapi) -> None:
    row = "2024-05-01T12:00:00.000000Z,6f3e43a4-d1c1-4cb6-b928-0ac0efaf84a5,{}.25,\n"

    def post(rows: int) -> int:
        """Post a CSV body of ``rows`` readings (about 85 bytes each); tsapi's peak memory."""

        def chunks() -> Iterator[bytes]:
            yield b"ts,sensor,value,metadata\n"
            for start in range(0, rows, 5_000):
                yield "".join(row.format(n % 1000) for n in range(start, start + 5_000)).encode()

        with httpx.Client(base_url=lone_tsapi.base_url, timeout=300) as client:
            response = client.post("/readings", content=chunks(), headers=CSV)
        assert (response.status_code, response.json()) == (200, rows)
        return _rss(lone_tsapi.process.pid, "VmHWM")

    small = post(100_000)  # 8.5 MB: the memory a body takes, whatever its size
    large = post(700_000)  # 60 MB: were the body held, its readings would take over 200 MB more
    assert sql(lone_tsapi.database_url, "SELECT count(*) FROM readings")[0][0] == 800_000
    assert large - small < 10 * 1024 * 1024, f"the peak grew by {(large - small) / 2**20:.0f} MiB"
