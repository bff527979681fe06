"""The process's connections to the database, as an operator sees them."""

import httpx

from tests.conftest import sql
from tests.support import wait_until


def _application_names(url: str) -> set[str]:
    rows = sql(
        url, "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
    )
    return {row["application_name"] for row in rows}


def test_background_work_is_told_apart_from_requests_in_pg_stat_activity(
    api: httpx.Client, db_url: str
) -> None:
    reading = {"sensor": "6f3e43a4-0000-4000-8000-000000000001", "value": 1}
    assert api.post("/readings", json=[reading]).json() == 1  # work for the rollup refresher
    wait_until(
        lambda: "tsapi background" in _application_names(db_url), what="the refresher's connection"
    )
    assert "tsapi" in _application_names(db_url)  # the requests' pool, named apart
