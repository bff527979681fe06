"""GET /metrics: Prometheus' text format, requests by route template and status, latencies,
readings ingested and rejected, the pool, database errors, and the caches' counter."""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Tsapi
from tests.keyring import on, serve
from tsapi.db import Connection

A = "6f3e43a4-d1c1-4cb6-b928-0ac0efaf84a5"
B = "d538f9fa-f6de-46e5-9fa2-d7ee9a0f0a68"


@pytest.fixture(scope="module")
def server(make_database: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tsapi]:
    tsapi = serve(make_database, tmp_path_factory.mktemp("metrics"), TSAPI_STATEMENT_TIMEOUT="0.5")
    yield tsapi
    tsapi.stop()


def scrape(server: Tsapi) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{server.base_url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_are_counted_by_route_template_and_status(server: Tsapi) -> None:
    before = scrape(server)
    for path in (f"/sensors/{A}", f"/sensors/{B}", "/sensors/nonsense", "/no/such/path"):
        httpx.get(server.base_url + path)
    after = scrape(server)

    def added(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "tsapi_http_requests_total"
    assert added(requests, method="GET", route="/sensors/{sensor}", status="404") == 2
    assert added(requests, method="GET", route="/sensors/{sensor}", status="400") == 1
    assert added(requests, method="GET", route="unmatched", status="404") == 1
    latency = "tsapi_http_request_duration_seconds_count"
    assert added(latency, method="GET", route="/sensors/{sensor}") == 3
    assert not any(A in str(labels) for _, labels in after)  # never a raw path


def test_readings_ingested_and_rejected_are_counted(server: Tsapi) -> None:
    before = scrape(server)
    rows = [{"sensor": A, "value": n} for n in range(3)]
    assert httpx.post(f"{server.base_url}/readings", json=rows).json() == 3
    bad = [{"sensor": "x", "value": 1}, {"sensor": A, "value": "y"}, {"sensor": A, "value": 2}]
    assert httpx.post(f"{server.base_url}/readings", json=bad).status_code == 422
    after = scrape(server)
    for name, count in (("tsapi_readings_ingested_total", 3), ("tsapi_readings_rejected_total", 2)):
        assert value(after, name) - value(before, name) == count


def test_the_pool_and_the_caches_are_shown(server: Tsapi) -> None:
    samples = scrape(server)
    idle = value(samples, "tsapi_db_pool_connections", state="idle")
    in_use = value(samples, "tsapi_db_pool_connections", state="in_use")
    assert idle >= 1 and in_use >= 0
    # Ready for every cache, whether or not it was used yet.
    response = httpx.get(f"{server.base_url}/metrics")
    assert "# TYPE tsapi_cache_lookups_total counter" in response.text


def test_queries_the_database_cancels_are_counted_as_database_errors(server: Tsapi) -> None:
    before = value(scrape(server), "tsapi_database_errors_total", kind="timeout")

    async def blocked(conn: Connection) -> int:
        async with conn.transaction():
            await conn.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
            async with httpx.AsyncClient() as client:
                response = await client.get(f"{server.base_url}/readings")
        return response.status_code

    assert on(server.database_url, blocked) == 503
    assert value(scrape(server), "tsapi_database_errors_total", kind="timeout") == before + 1


def test_with_metrics_off_the_route_is_gone_and_the_api_serves_on(
    make_database: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tsapi = serve(make_database, tmp_path_factory.mktemp("no-metrics"), TSAPI_METRICS="false")
    try:
        assert httpx.get(f"{tsapi.base_url}/metrics").status_code == 404
        rows = [{"sensor": A, "value": 1}]
        assert httpx.post(f"{tsapi.base_url}/readings", json=rows).json() == 1
        response = httpx.get(f"{tsapi.base_url}/readings")
        assert response.status_code == 200
        assert response.headers["x-request-id"]  # the access line and its id remain
    finally:
        tsapi.stop()
