"""InfluxDB's write routes: InfluxDB's own Python client writes through tsapi unchanged, and
what it writes is read back as readings of one sensor per series, found by their metadata."""

import gzip
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write.point import Point
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from tests.conftest import Tsapi, sql
from tests.keyring import make_key, serve
from tests.test_ingest import count
from tsapi.parsers.lineprotocol import SERIES_NAMESPACE

T0 = 1714564800123456789  # 2024-05-01T12:00:00.123456789Z


def sensor(measurement: str, tags: dict[str, str], field: str) -> str:
    key = json.dumps([measurement, sorted(map(list, tags.items())), field], separators=(",", ":"))
    return str(uuid.uuid5(SERIES_NAMESPACE, key))


def test_influxdb_client_writes_are_read_back(api: httpx.Client, tsapi: Tsapi) -> None:
    points = [
        Point("cpu")
        .tag("host", "a")
        .tag("region", "eu west")
        .field("idle", 98.5)
        .field("busy", 3)
        .field("up", True)
        .field("state", "ok")
        .time(T0, WritePrecision.NS),
        Point("cpu").tag("host", "b").field("idle", 12.25).time(T0 + 10**9, WritePrecision.NS),
    ]
    with InfluxDBClient(url=tsapi.base_url, token="anything", org="my-org") as client:
        client.write_api(write_options=SYNCHRONOUS).write(bucket="metrics", record=points)
    idle_a = sensor("cpu", {"host": "a", "region": "eu west"}, "idle")
    [reading] = api.get("/readings", params={"sensor": idle_a}).json()
    assert reading == {
        "ts": "2024-05-01T12:00:00.123456Z",
        "sensor": idle_a,
        "metadata": {
            "measurement": "cpu",
            "tags": {"host": "a", "region": "eu west"},
            "field": "idle",
            "bucket": "metrics",
        },
        "value": 98.5,
    }
    found = api.get(
        "/sensors", params={"metadata": json.dumps({"measurement": "cpu", "tags": {"host": "a"}})}
    ).json()
    assert {(s["metadata"]["field"], s["last_value"]) for s in found} == {
        ("idle", 98.5),
        ("busy", 3),
        ("up", 1),
    }
    assert {s["sensor"] for s in found} == {
        sensor("cpu", {"host": "a", "region": "eu west"}, field) for field in ("idle", "busy", "up")
    }
    assert len(api.get("/readings", params={"limit": 10}).json()) == 4


def test_influxdb_client_gzip_and_errors(api: httpx.Client, tsapi: Tsapi, db_url: str) -> None:
    with InfluxDBClient(url=tsapi.base_url, token="t", org="o", enable_gzip=True) as client:
        writer = client.write_api(write_options=SYNCHRONOUS)
        writer.write(bucket="b", record="m,t=1 f=1.5 1714564800000000000")
        assert count(db_url) == 1
        with pytest.raises(ApiException) as refused:
            writer.write(bucket="b", record=["m f=2", "m f=", "m g=3"])
    assert refused.value.status == 400
    error = json.loads(refused.value.body)
    assert (error["code"], error["line"]) == ("invalid", 2)
    assert "line 2: column 5: no value for field 'f'" in error["message"]
    assert count(db_url) == 1


def test_v1_write_with_a_raw_body(api: httpx.Client, db_url: str) -> None:
    body = (
        "# written by hand\n"
        "weather,station=Oslo temp=-3.5,humidity=81i 1714564800\n"
        "weather,station=Oslo temp=-3.25 1714564860\n"
        "\n"
        'weather,station=Bergen\\ Vest temp=7.5,note="rain, again" 1714564800\n'
    )
    response = api.post("/write", params={"db": "telegraf", "precision": "s"}, content=body)
    assert (response.status_code, response.content) == (204, b"")
    oslo = sensor("weather", {"station": "Oslo"}, "temp")
    readings = api.get("/readings", params={"sensor": oslo, "order": "asc"}).json()
    assert [(r["ts"], r["value"]) for r in readings] == [
        ("2024-05-01T12:00:00.000000Z", -3.5),
        ("2024-05-01T12:01:00.000000Z", -3.25),
    ]
    assert readings[0]["metadata"]["db"] == "telegraf"
    bergen = api.get(
        "/sensors", params={"metadata": json.dumps({"tags": {"station": "Bergen Vest"}})}
    ).json()
    assert [(s["metadata"]["field"], s["last_value"]) for s in bergen] == [("temp", 7.5)]
    assert count(db_url) == 4


def test_lines_without_a_timestamp_take_the_databases_now(api: httpx.Client, db_url: str) -> None:
    response = api.post("/api/v2/write", params={"bucket": "b"}, content="m a=1,b=2\nm c=3\n")
    assert response.status_code == 204
    rows = sql(
        db_url, "SELECT DISTINCT ts, now() - ts < interval '1 minute' AS recent FROM readings"
    )
    assert len(rows) == 1 and rows[0]["recent"]


def test_a_bad_line_anywhere_writes_nothing(api: httpx.Client, db_url: str) -> None:
    body = "".join(f"m,n={n} f={n} {T0 + n}\n" for n in range(30_000)) + "m f=1 x\n"
    response = api.post(
        "/api/v2/write",
        params={"bucket": "b"},
        content=gzip.compress(body.encode()),
        headers={"Content-Encoding": "gzip"},
    )
    assert response.status_code == 400
    assert response.json() == {
        "code": "invalid",
        "message": "1 invalid line(s); nothing was written; errors encountered on line(s):\n"
        "line 30001: column 7: invalid timestamp: it must be an integer",
        "line": 30_001,
    }
    assert count(db_url) == 0


@pytest.mark.parametrize(
    "path, params, message",
    [
        ("/api/v2/write", {"org": "o"}, "the bucket query parameter is required"),
        ("/write", {}, "the db query parameter is required"),
        (
            "/api/v2/write",
            {"bucket": "b", "precision": "h"},
            "precision must be one of ns, us, ms, s, not 'h'",
        ),
        (
            "/write",
            {"db": "d", "precision": "ps"},
            "precision must be one of ns, us, ms, s, n, u, m, h, not 'ps'",
        ),
    ],
)
def test_bad_parameters_are_400_in_influxdbs_form(
    api: httpx.Client, db_url: str, path: str, params: dict[str, str], message: str
) -> None:
    response = api.post(path, params=params, content="m f=1\n")
    assert response.status_code == 400
    assert response.json() == {"code": "invalid", "message": message}
    assert count(db_url) == 0


@pytest.mark.parametrize(
    ("precision", "stamp"), [("ms", "1714564800123"), ("us", "1714564800123456")]
)
def test_v2_precisions(api: httpx.Client, precision: str, stamp: str) -> None:
    response = api.post(
        "/api/v2/write", params={"bucket": "b", "precision": precision}, content=f"m f=1 {stamp}"
    )
    assert response.status_code == 204
    [reading] = api.get("/readings").json()
    expected = datetime.fromtimestamp(int(stamp[:10]), UTC).replace(
        microsecond=int(stamp[10:].ljust(6, "0"))
    )
    assert reading["ts"] == expected.isoformat(timespec="microseconds").replace("+00:00", "Z")


@pytest.fixture(scope="module")
def keyed(make_database: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tsapi]:
    server = serve(make_database, tmp_path_factory.mktemp("influx-keys"))
    yield server
    server.stop()


def test_write_keys_write_line_protocol_and_restricted_keys_only_their_series(
    keyed: Tsapi,
) -> None:
    allowed = sensor("m", {"t": "a"}, "f")
    writer = make_key(keyed.database_url, "write")
    restricted = make_key(keyed.database_url, "write", allowed)
    reader = make_key(keyed.database_url, "read")
    with InfluxDBClient(url=keyed.base_url, token=writer, org="o") as client:
        client.write_api(write_options=SYNCHRONOUS).write(bucket="b", record="m,t=a f=1")

    def write(key: str, body: str) -> httpx.Response:
        headers = {"Authorization": f"Token {key}"}
        return httpx.post(f"{keyed.base_url}/write?db=d", content=body, headers=headers)

    assert write(restricted, "m,t=a f=2\n").status_code == 204
    refused = write(restricted, "m,t=a f=3\nm,t=b f=4\n")
    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden"
    assert write(reader, "m,t=a f=5\n").status_code == 403
    assert write("tsapi_0123456789ab_nonsense", "m,t=a f=6\n").status_code == 401
    values = sql(keyed.database_url, "SELECT value FROM readings ORDER BY value")
    assert [row["value"] for row in values] == [1, 2]
