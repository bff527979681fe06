"""GET /readings: newest first by default, filtered by sensor, time (absolute or relative) and
metadata, walked page by page with cursors, every bad parameter a 400 that names it."""

import json
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.conftest import Tsapi, sql
from tsapi import cursors
from tsapi.cursors import Position
from tsapi.query import parse_readings_query

SENSOR = "6f3e43a4-d1c1-4cb6-b928-0ac0efaf84a5"
OTHER = "d538f9fa-f6de-46e5-9fa2-d7ee9a0f0a68"
THIRD = "5cb674a0-460d-4c80-8113-28927f658f5f"


def seed(api: httpx.Client) -> None:
    readings = [
        {"sensor": sensor, "value": hour, "ts": f"2024-05-01T{hour:02d}:00:00Z"}
        for hour in range(24)
        for sensor in (SENSOR, OTHER, THIRD)
    ]
    assert api.post("/readings", json=readings).json() == 72


def get(api: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = api.get("/readings", params=params)
    assert response.status_code == 200, response.text
    readings: list[dict[str, Any]] = response.json()
    return readings


def test_limit_answers_the_newest_readings_first(api: httpx.Client) -> None:
    seed(api)
    readings = get(api, limit=4)
    assert [r["ts"] for r in readings] == ["2024-05-01T23:00:00.000000Z"] * 3 + [
        "2024-05-01T22:00:00.000000Z"
    ]
    assert readings[0] == {
        "ts": "2024-05-01T23:00:00.000000Z",
        "sensor": readings[0]["sensor"],
        "metadata": None,
        "value": 23,
    }


def test_default_limit_is_100(api: httpx.Client) -> None:
    readings = [
        {"sensor": SENSOR, "value": n, "ts": f"2024-05-01T00:{n // 60:02d}:{n % 60:02d}Z"}
        for n in range(150)
    ]
    api.post("/readings", json=readings)
    assert len(get(api)) == 100


def test_filters_by_sensor_repeated_or_comma_separated(api: httpx.Client) -> None:
    seed(api)
    assert {r["sensor"] for r in get(api, limit=1000, sensor=SENSOR)} == {SENSOR}
    repeated = api.get("/readings", params=[("sensor", SENSOR), ("sensor", OTHER), ("limit", 1000)])
    assert {r["sensor"] for r in repeated.json()} == {SENSOR, OTHER}
    assert len(repeated.json()) == 48
    comma = get(api, limit=1000, sensor=f"{SENSOR},{THIRD}")
    assert {r["sensor"] for r in comma} == {SENSOR, THIRD}


def test_from_is_inclusive_and_to_exclusive(api: httpx.Client) -> None:
    seed(api)
    window = get(
        api, sensor=SENSOR, **{"from": "2024-05-01T10:00:00Z", "to": "2024-05-01T12:00:00Z"}
    )
    assert [r["value"] for r in window] == [11, 10]


def test_from_and_to_accept_offsets_even_unescaped(api: httpx.Client) -> None:
    seed(api)
    # A literal "+" in a query string means a space; tsapi reads it back as the offset meant.
    response = api.get(
        f"/readings?sensor={SENSOR}&from=2024-05-01T12:00:00+02:00&to=2024-05-01T12:00:00"
    )
    assert [r["value"] for r in response.json()] == [11, 10]


def test_order_asc_answers_oldest_first(api: httpx.Client) -> None:
    seed(api)
    assert [r["value"] for r in get(api, sensor=SENSOR, order="asc", limit=3)] == [0, 1, 2]


def test_unknown_sensor_answers_an_empty_array(api: httpx.Client) -> None:
    seed(api)
    assert get(api, sensor="00000000-0000-0000-0000-000000000000") == []


@pytest.mark.parametrize(
    "params, parameter",
    [
        ({"limit": "ten"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"limit": "-5"}, "limit"),
        ({"limit": "10001"}, "limit"),
        ({"limit": "1.5"}, "limit"),
        ({"sensor": "nope"}, "sensor"),
        ({"from": "yesterday"}, "from"),
        ({"to": "2024-13-01"}, "to"),
        ({"from": "2024-05-02T00:00:00Z", "to": "2024-05-01T00:00:00Z"}, "from"),
        ({"order": "sideways"}, "order"),
        ({"limit": "al"}, "limit"),
        ({"from": "-15"}, "from"),
        ({"from": "-15y"}, "from"),
        ({"from": "now-"}, "from"),
        ({"to": "1h"}, "to"),
        ({"to": "-0m"}, "to"),
        ({"to": "-99999999999w"}, "to"),
        ({"from": "-9999999d"}, "from"),
        ({"from": "now", "to": "-1h"}, "from"),
        ({"from": "-1h", "to": "2024-05-01T00:00:00Z"}, "from"),
        ({"from": "2124-05-01T00:00:00Z", "to": "+1h"}, "from"),
        ({"from": "0001-01-01T00:00:00+01:00"}, "from"),
        ({"metadata": "room=r1"}, "metadata"),
        ({"metadata": '["r1"]'}, "metadata"),
        ({"metadata": '{"room": "r1"'}, "metadata"),
        ({"metadata": '{"room": "\\u0000"}'}, "metadata"),
        ({"metadata": '{"room": 1e-99999}'}, "metadata"),
        ({"metadata": '{"a":' * 1100 + "1" + "}" * 1100}, "metadata"),
        ({"cursor": "not a cursor"}, "cursor"),
        ({"cursor": "bm90IGEgY3Vyc29y"}, "cursor"),
        ({"cursor": ""}, "cursor"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(
    api: httpx.Client, params: dict[str, str], parameter: str
) -> None:
    response = api.get("/readings", params=params)
    assert response.status_code == 400
    body = response.json()
    assert body["parameter"] == parameter
    assert parameter in body["error"]


def test_health_and_readiness(api: httpx.Client) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


def test_unknown_routes_and_methods_answer_json(api: httpx.Client) -> None:
    missing = api.get("/nowhere")
    assert missing.status_code == 404
    assert missing.json() == {"error": "Not Found"}
    wrong_method = api.delete("/readings")
    assert wrong_method.status_code == 405
    assert "error" in wrong_method.json()


def test_an_empty_cursor_or_from_is_refused_not_ignored(api: httpx.Client) -> None:
    assert api.get("/readings?from=").json()["parameter"] == "from"
    assert api.get("/readings?cursor=").json()["parameter"] == "cursor"


def seed_metadata(api: httpx.Client) -> None:
    readings = [
        {"sensor": SENSOR, "value": 1, "ts": "2024-05-01T01:00:00Z", "metadata": {"room": "r1"}},
        {
            "sensor": OTHER,
            "value": 2,
            "ts": "2024-05-01T02:00:00Z",
            "metadata": {"room": "r1", "floor": 2, "tags": ["a", "b"], "hw": {"rev": "c"}},
        },
        {"sensor": SENSOR, "value": 3, "ts": "2024-05-01T03:00:00Z", "metadata": {"room": "r2"}},
        {"sensor": SENSOR, "value": 4, "ts": "2024-05-01T04:00:00Z"},
        {"sensor": THIRD, "value": 5, "ts": "2024-05-01T05:00:00Z", "metadata": {"room": "r1"}},
    ]
    assert api.post("/readings", json=readings).json() == 5


@pytest.mark.parametrize(
    "metadata, values",
    [
        ('{"room": "r1"}', [5, 2, 1]),
        ('{"room":"r1","floor":2}', [2]),
        ('{"tags": ["b"]}', [2]),
        ('{"hw": {"rev": "c"}}', [2]),
        ('{"room": "r3"}', []),
        ("{}", [5, 3, 2, 1]),  # any metadata object; not the reading without metadata
    ],
)
def test_metadata_filters_by_containment(
    api: httpx.Client, metadata: str, values: list[int]
) -> None:
    seed_metadata(api)
    assert [r["value"] for r in get(api, metadata=metadata)] == values


def test_metadata_index_exists(api: httpx.Client, db_url: str) -> None:
    index = sql(db_url, "SELECT indexdef FROM pg_indexes WHERE indexname = 'readings_metadata_idx'")
    assert "gin (metadata jsonb_path_ops)" in index[0]["indexdef"]


def test_filters_combine(api: httpx.Client) -> None:
    seed_metadata(api)
    seed(api)
    found = api.get(
        "/readings",
        params=[
            ("sensor", SENSOR),
            ("sensor", THIRD),
            ("metadata", '{"room": "r1"}'),
            ("from", "2024-05-01T01:00:00Z"),
            ("to", "2024-05-01T05:00:00Z"),
            ("order", "asc"),
        ],
    ).json()
    assert [(r["sensor"], r["value"]) for r in found] == [(SENSOR, 1)]
    found = get(api, sensor=f"{SENSOR},{THIRD}", metadata='{"room": "r1"}', order="asc")
    assert [(r["sensor"], r["value"]) for r in found] == [(SENSOR, 1), (THIRD, 5)]


def database_now(db_url: str) -> datetime:
    now: datetime = sql(db_url, "SELECT now()")[0][0]
    return now


@pytest.mark.parametrize(
    "unit, seconds", [("s", 1), ("m", 60), ("h", 3600), ("d", 86400), ("w", 604800)]
)
def test_relative_from_and_to_in_every_unit(
    api: httpx.Client, db_url: str, unit: str, seconds: int
) -> None:
    now = database_now(db_url)
    readings = [
        {"sensor": SENSOR, "value": ago, "ts": (now - timedelta(seconds=ago * seconds)).isoformat()}
        for ago in (50, 20, 10)
    ]
    api.post("/readings", json=readings)
    assert [r["value"] for r in get(api, **{"from": f"-30{unit}"})] == [10, 20]
    assert [r["value"] for r in get(api, to=f"-15{unit}")] == [20, 50]
    assert [r["value"] for r in get(api, **{"from": f"now-30{unit}", "to": f"now-15{unit}"})] == [
        20
    ]


def test_relative_now_and_the_future(api: httpx.Client, db_url: str) -> None:
    now = database_now(db_url)
    readings = [
        {"sensor": SENSOR, "value": hours, "ts": (now + timedelta(hours=hours)).isoformat()}
        for hours in (-2, 2, 5)
    ]
    api.post("/readings", json=readings)
    assert [r["value"] for r in get(api, **{"from": "now"})] == [5, 2]
    assert [r["value"] for r in get(api, to="now")] == [-2]
    assert [r["value"] for r in get(api, **{"from": "+1h", "to": "now+3h"})] == [2]
    # An unescaped "+" arrives as a space, and still means later than now.
    assert [r["value"] for r in api.get("/readings?from=now+1h&to=+3h").json()] == [2]


def test_readings_without_ts_are_found_relative_to_the_database_clock(api: httpx.Client) -> None:
    api.post("/readings", json=[{"sensor": SENSOR, "value": 1}])
    assert [r["value"] for r in get(api, **{"from": "-1m", "to": "+1m"})] == [1]


# Pagination: rows that share a timestamp, values that are equal as numbers but not as text, and
# identical rows, in groups of different sizes.
def tricky_rows() -> list[dict[str, Any]]:
    rows = []
    for second in range(5):
        for sensor in (SENSOR, OTHER):
            for value in ("1", "1.0", "1.00", "-2.5"):
                for metadata in (None, {"a": 1}, {"a": "x,y"}):
                    copies = 1 + (second + len(value)) % 3
                    ts = f"2024-05-01T00:00:0{second}Z"
                    row = {"sensor": sensor, "value": value, "ts": ts, "metadata": metadata}
                    rows += [row] * copies
    return rows


def exact(response: httpx.Response) -> Any:
    """The JSON body with numbers as Decimals, so that 1.0 and 1.00 stay apart."""
    return json.loads(response.text, parse_float=Decimal, parse_int=Decimal)


def identity(reading: dict[str, Any]) -> tuple[str, str, str, str]:
    return (
        reading["ts"],
        reading["sensor"],
        str(reading["value"]),
        json.dumps(reading["metadata"], sort_keys=True, default=str),
    )


def walk_links(api: httpx.Client, url: str, between_pages: Any = None) -> list[dict[str, Any]]:
    walked: list[dict[str, Any]] = []
    pages = 0
    while url:
        response = api.get(url)
        assert response.status_code == 200, response.text
        walked += exact(response)
        url = response.links.get("next", {}).get("url", "")
        pages += 1
        if between_pages is not None:
            between_pages()
    assert pages > 1
    return walked


@pytest.mark.parametrize("order", ["desc", "asc"])
def test_following_links_walks_every_row_once_in_order(api: httpx.Client, order: str) -> None:
    rows = tricky_rows()
    assert api.post("/readings", json=rows).json() == len(rows)
    whole = exact(api.get("/readings", params={"limit": "all", "order": order}))
    assert len(whole) == len(rows)
    for limit in (1, 7, 50):
        walked = walk_links(api, f"/readings?limit={limit}&order={order}")
        assert walked == whole
    ts = [r["ts"] for r in whole]
    assert ts == sorted(ts, reverse=order == "desc")


def test_the_last_page_has_no_next(api: httpx.Client) -> None:
    seed(api)
    full = api.get("/readings", params={"limit": 72})
    assert "link" not in full.headers
    assert len(full.json()) == 72
    almost = api.get("/readings", params={"limit": 71})
    last = api.get(almost.links["next"]["url"])
    assert len(last.json()) == 1 and "link" not in last.headers


def test_the_link_keeps_every_other_parameter(api: httpx.Client) -> None:
    seed(api)
    response = api.get(
        f"/readings?sensor={SENSOR}&sensor={OTHER}&limit=5&order=asc&from=2024-05-01T01:00:00Z"
    )
    url = httpx.URL(response.links["next"]["url"])
    assert url.path == "/readings"
    assert url.params.get_list("sensor") == [SENSOR, OTHER]
    assert (url.params["limit"], url.params["order"]) == ("5", "asc")
    assert url.params["from"] == "2024-05-01T01:00:00Z"
    second = api.get(url).json()
    assert [r["value"] for r in second] == [3, 4, 4, 5, 5]


def test_envelope_carries_the_next_cursor(api: httpx.Client) -> None:
    rows = tricky_rows()
    api.post("/readings", json=rows)
    walked: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 9, "envelope": "true"}
    while True:
        response = api.get("/readings", params=params)
        body = exact(response)
        assert set(body) == {"readings", "next"}
        walked += body["readings"]
        if body["next"] is None:
            assert "link" not in response.headers
            break
        assert response.links["next"]["url"].endswith(f"cursor={body['next']}")
        params["cursor"] = body["next"]
        params["limit"] = 9 if params["limit"] == 4 else 4  # a cursor works with another limit
    assert walked == exact(api.get("/readings", params={"limit": "all"}))


def test_envelope_false_is_the_plain_array(api: httpx.Client) -> None:
    seed(api)
    assert isinstance(get(api, envelope="false", limit=2), list)


@pytest.mark.parametrize("order", ["desc", "asc"])
def test_walking_while_rows_are_inserted_answers_each_row_once(
    api: httpx.Client, tsapi: Tsapi, order: str
) -> None:
    rows = tricky_rows()
    api.post("/readings", json=rows)
    before = Counter(map(identity, exact(api.get("/readings", params={"limit": "all"}))))
    inserted: Counter[tuple[str, str, str, str]] = Counter()
    batches = threading.Semaphore(0)
    stop = threading.Event()

    def insert() -> None:
        # New rows everywhere in the walked range, ahead of the cursor and behind it: copies of
        # existing rows (so groups of identical rows grow under the cursor) and new ones.
        with httpx.Client(base_url=tsapi.base_url, timeout=60) as writer:
            n = 0
            while not stop.is_set():
                batch = [
                    rows[(n * 37 + i * 11) % len(rows)]
                    if i % 2
                    else {
                        "sensor": THIRD,
                        "value": n,
                        "ts": f"2024-05-01T00:00:0{i % 9}Z",
                        "metadata": {"new": n},
                    }
                    for i in range(10)
                ]
                assert writer.post("/readings", json=batch).status_code == 200
                for row in exact(httpx.Response(200, json=batch)):
                    inserted[identity({**row, "ts": row["ts"].replace("Z", ".000000Z")})] += 1
                n += 1
                batches.release()

    writer = threading.Thread(target=insert)
    writer.start()
    try:
        walked = walk_links(
            api, f"/readings?limit=13&order={order}", lambda: batches.acquire(timeout=30)
        )
    finally:
        stop.set()
        writer.join()
    assert inserted, "rows were inserted during the walk"
    counts = Counter(map(identity, walked))
    for row, count in before.items():
        assert count <= counts[row] <= count + inserted[row], row
    for row, count in counts.items():
        assert count <= before[row] + inserted[row], row
    ts = [r["ts"] for r in walked]
    assert ts == sorted(ts, reverse=order == "desc")


def cursor_of(api: httpx.Client, **params: Any) -> str:
    body = api.get("/readings", params={**params, "envelope": "true"}).json()
    cursor: str = body["next"]
    return cursor


@pytest.mark.parametrize(
    "change",
    [
        {"order": "asc"},
        {"sensor": OTHER},
        {"metadata": '{"a": 1}'},
        {"from": "2024-01-01T00:00:00Z"},
        {"to": "2025-01-01T00:00:00Z"},
        {"from": "-100w"},
        {"limit": "all"},
    ],
)
def test_a_cursor_belongs_to_its_query(api: httpx.Client, change: dict[str, str]) -> None:
    api.post("/readings", json=tricky_rows())
    cursor = cursor_of(api, limit=5)
    assert api.get("/readings", params={"limit": 5, "cursor": cursor}).status_code == 200
    response = api.get("/readings", params={"limit": 5, "cursor": cursor, **change})
    assert response.status_code == 400
    assert response.json()["parameter"] == "cursor"


def test_a_tampered_cursor_is_refused(api: httpx.Client) -> None:
    api.post("/readings", json=tricky_rows())
    cursor = cursor_of(api, limit=5)
    flipped = [
        cursor[:i] + ("A" if cursor[i] != "A" else "B") + cursor[i + 1 :]
        for i in range(0, len(cursor), 3)
    ]
    for bad in [*flipped, cursor[:-1], cursor[:-4], cursor + "A", cursor + "==", cursor[::-1]]:
        response = api.get("/readings", params={"limit": 5, "cursor": bad})
        assert response.status_code == 400, bad
        assert response.json()["parameter"] == "cursor"


def test_a_relative_window_stays_put_while_walking(api: httpx.Client, db_url: str) -> None:
    now = database_now(db_url)
    readings = [
        {"sensor": SENSOR, "value": n, "ts": (now - timedelta(minutes=n)).isoformat()}
        for n in range(1, 40)
    ]
    api.post("/readings", json=readings)
    window: dict[str, Any] = {"from": "-30m", "to": "now", "order": "asc", "limit": 10}
    first = api.get("/readings", params=window)
    # A reading stamped now is inside a window up to now as asked now, but not inside the one the
    # first page answered: the walk keeps that window (the cursor holds its now()).
    api.post("/readings", json=[{"sensor": SENSOR, "value": 0}])
    walked = walk_links(api, first.links["next"]["url"])
    assert [r["value"] for r in first.json() + walked] == list(range(29, 0, -1))
    assert [r["value"] for r in get(api, **{**window, "limit": 100})][-2:] == [1, 0]


@pytest.mark.parametrize(
    "params, position",
    [
        ({}, Position((datetime(2024, 5, 1, tzinfo=UTC), "a\x00", "1", ""), 0, None)),
        ({}, Position((datetime(2024, 5, 1, tzinfo=UTC), "", "1", ""), 2**62, None)),
        ({"from": "-1h"}, Position((datetime(2024, 5, 1, tzinfo=UTC), "", "1", ""), 0, None)),
    ],
)
def test_a_forged_cursor_is_refused(
    api: httpx.Client, params: dict[str, str], position: Position
) -> None:
    # The check in a cursor is no signature: anyone can make one that passes it.
    query = parse_readings_query(params, {}, 100, 10_000)
    forged = cursors.encode(position, query.identity())
    response = api.get("/readings", params={**params, "cursor": forged})
    assert response.status_code == 400
    assert response.json()["parameter"] == "cursor"


def test_a_forged_cursor_that_could_be_real_is_a_position_like_any(api: httpx.Client) -> None:
    seed(api)
    query = parse_readings_query({}, {}, 100, 10_000)
    position = Position((datetime(2024, 5, 1, 12, tzinfo=UTC), "z-not-a-uuid", "x", "{"), 1, None)
    response = api.get("/readings", params={"cursor": cursors.encode(position, query.identity())})
    assert [r["value"] for r in response.json()][:4] == [12, 12, 12, 11]
