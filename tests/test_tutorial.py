"""The tutorial's own commands, run as it prints them, against a running tsapi."""

import subprocess

import httpx

from tests.conftest import Tsapi, sql

TUTORIAL_ROWS = """{ "sensor": "6f3e43a4-d1c1-4cb6-b928-0ac0efaf84a5", "value":0.3},
{ "sensor": "d538f9fa-f6de-46e5-9fa2-d7ee9a0f0a68", "value":10.8},
{ "sensor": "5cb674a0-460d-4c80-8113-28927f658f5f", "value":18.8},
{ "sensor": "03307bae-d5b8-42ad-8f17-1c810e0fbe63", "value":20.0},
{ "sensor": "64494acc-4aa5-413c-bd09-2e5b3ece8ad7", "value":13.1},
{ "sensor": "0a361f03-d7ec-4e61-822f-2857b52b74b3", "value":1.1},
{ "sensor": "50f91cdc-fd19-40d2-b2b0-c90db3394981", "metadata": {"color": "blue" }, "value":10.3}
"""


def curl_post(url: str, body: str) -> tuple[int, str]:
    """`curl -X POST -d @- URL <<EOF`, exactly as the tutorial runs it; (status, body)."""
    result = subprocess.run(
        ["curl", "-s", "-w", "\n%{http_code}", "-X", "POST", "-d", "@-", url],
        input=body.encode(),
        capture_output=True,
        check=True,
    )
    text, _, status = result.stdout.decode().rpartition("\n")
    return int(status), text


def test_tutorial_ingest_command_inserts_seven_rows(api: httpx.Client, tsapi: Tsapi) -> None:
    status, body = curl_post(f"{tsapi.base_url}/readings", "[\n" + TUTORIAL_ROWS + "]\n")
    assert (status, body) == (200, "7")
    rows = sql(
        tsapi.database_url,
        "SELECT sensor::text, metadata::text, value::text,"
        " ts > now() - interval '1 minute' AS fresh FROM readings ORDER BY value",
    )
    assert [(r["value"], r["metadata"]) for r in rows] == [
        ("0.3", None),
        ("1.1", None),
        ("10.3", '{"color": "blue"}'),
        ("10.8", None),
        ("13.1", None),
        ("18.8", None),
        ("20.0", None),
    ]
    assert all(row["fresh"] for row in rows)


def test_tutorial_query_command_returns_newest_first(api: httpx.Client, tsapi: Tsapi) -> None:
    curl_post(
        f"{tsapi.base_url}/readings",
        '[{"sensor": "6f3e43a4-d1c1-4cb6-b928-0ac0efaf84a5",'
        ' "value": 1, "ts": "2024-01-01T00:00:00Z"}]',
    )
    curl_post(f"{tsapi.base_url}/readings", "[\n" + TUTORIAL_ROWS + "]\n")
    result = subprocess.run(
        ["curl", "-s", f"{tsapi.base_url}/readings?limit=8"], capture_output=True, check=True
    )
    readings = httpx.Response(200, content=result.stdout).json()
    assert len(readings) == 8
    assert readings[-1]["ts"] == "2024-01-01T00:00:00.000000Z"
    assert set(readings[0]) == {"ts", "sensor", "metadata", "value"}


def test_tutorial_text_without_brackets_is_refused_with_its_reason(
    api: httpx.Client, tsapi: Tsapi
) -> None:
    status, body = curl_post(f"{tsapi.base_url}/readings", TUTORIAL_ROWS)
    assert status == 400
    error = httpx.Response(400, content=body).json()["error"]
    assert "must be a JSON array of readings, or a single reading object" in error
    assert "line 1" in error
    assert sql(tsapi.database_url, "SELECT count(*) FROM readings")[0][0] == 0
