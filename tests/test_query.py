"""GET /readings: newest first by default, filtered by sensor and time, every bad parameter a 400
that names it."""

from typing import Any

import httpx
import pytest

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
