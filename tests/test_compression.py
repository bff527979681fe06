"""Compression of old TimescaleDB chunks: every query answers the same before and after, late
writes into compressed chunks included. On plain PostgreSQL it is not available, and tsapi says
so rather than pretending."""

import asyncio
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.conftest import start_tsapi
from tests.support import wait_until
from tests.test_aggregates import wait_for_rollups
from tsapi import compression
from tsapi.storage import Layout

QUERIES: list[tuple[str, dict[str, str]]] = [
    ("/readings", {"limit": "all"}),
    ("/readings", {"limit": "all", "format": "csv"}),
    ("/readings", {"limit": "all", "order": "asc", "metadata": '{"room": "r1"}'}),
    ("/readings", {"limit": "50", "from": "-4d", "to": "-2d"}),
    ("/readings/aggregate", {"bucket": "1h", "fn": "avg,min,max,sum,count,first,last"}),
    ("/readings/aggregate", {"bucket": "7m", "fn": "avg,count,last", "group": "none"}),
    ("/readings/aggregate", {"bucket": "1d", "fn": "avg", "fill": "linear", "to": "now"}),
    ("/sensors", {}),
    ("/readings/latest", {}),
]


def answers(api: httpx.Client, sensors: list[str]) -> list[str]:
    found = [api.get(path, params={"from": "-7d", **params}).text for path, params in QUERIES]
    pages, link = [], "/readings?limit=7&order=asc&from=-7d"
    while link:  # a walk by cursor, page by page
        page = api.get(link)
        pages.append(page.text)
        link = page.links.get("next", {}).get("url", "")
    found.append("".join(pages))
    found += [api.get(f"/sensors/{sensor}").text for sensor in sensors]
    return found


def compress(url: str, after: timedelta) -> int:
    async def run() -> int:
        conn = await asyncpg.connect(url)
        try:
            return await compression.compress_old(conn, Layout.HYPERTABLE, after)
        finally:
            await conn.close()

    return asyncio.run(run())


def compressed_chunks(url: str) -> int:
    async def run() -> int:
        conn = await asyncpg.connect(url)
        try:
            count: int = await conn.fetchval(
                "SELECT count(*) FROM timescaledb_information.chunks"
                " WHERE hypertable_name = 'readings' AND is_compressed"
            )
            return count
        finally:
            await conn.close()

    return asyncio.run(run())


if os.environ.get("TSAPI_TEST_TIMESCALE_URL"):

    @pytest.mark.parametrize("backend", ["timescale"], indirect=True)
    def test_queries_answer_the_same_before_and_after_compression(
        api: httpx.Client, db_url: str
    ) -> None:
        sensors = [str(uuid.uuid4()) for _ in range(4)]
        start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=6)
        readings = [
            {
                "sensor": sensor,
                "ts": (start + timedelta(minutes=37 * step)).isoformat(),
                "value": f"{step % 17}.{index}5",
                "metadata": {"room": f"r{step % 3}"} if step % 2 else None,
            }
            for step in range(200)
            for index, sensor in enumerate(sensors)
        ]
        assert api.post("/readings", json=readings).json() == len(readings)
        wait_for_rollups(db_url)
        before = answers(api, sensors)

        assert compress(db_url, timedelta(days=2)) > 0
        assert compressed_chunks(db_url) >= 3
        assert answers(api, sensors) == before

        # A late reading into a compressed chunk is stored, answered, and compressed again.
        late = {"sensor": sensors[0], "ts": (start + timedelta(hours=1)).isoformat(), "value": 7}
        assert api.post("/readings", json=late).json() == 1
        wait_for_rollups(db_url)
        with_late = answers(api, sensors)
        assert with_late != before
        assert compress(db_url, timedelta(days=2)) >= 1
        assert answers(api, sensors) == with_late
        assert compress(db_url, timedelta(days=2)) == 0  # nothing left to do


def test_compression_is_refused_on_plain_postgresql_with_a_warning(
    make_database: Callable[[str], str], tmp_path: Path
) -> None:
    tsapi = start_tsapi(
        make_database("embedded"), tmp_path / "tsapi.log", TSAPI_COMPRESS_AFTER="7d"
    )
    try:
        assert httpx.get(f"{tsapi.base_url}/readyz").json()["storage"] == "partitioned"
        wait_until(
            lambda: "compress_after needs TimescaleDB" in tsapi.log_path.read_text(),
            what="the warning",
        )
    finally:
        tsapi.stop()
