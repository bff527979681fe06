"""Real databases for the tests: an embedded PostgreSQL always, also reached through a PgBouncer in
transaction pooling mode, and the servers named by TSAPI_TEST_DATABASE_URL (CI: the machine's
PostgreSQL 15) and TSAPI_TEST_TIMESCALE_URL when set. Every test that takes ``api`` runs once per
database."""

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from tests.pgbouncer import PgBouncer
from tsapi.embedded import EmbeddedPostgres
from tsapi.rollups import LOCK_KEY as ROLLUP_LOCK_KEY
from tsapi.settings import Settings

BACKENDS = ["embedded", "pgbouncer"] + [
    name
    for name, variable in (
        ("postgres", "TSAPI_TEST_DATABASE_URL"),
        ("timescale", "TSAPI_TEST_TIMESCALE_URL"),
    )
    if os.environ.get(variable)
]


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def sql(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """Run one statement on a fresh connection; its rows."""

    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with EmbeddedPostgres(tmp_path_factory.mktemp("embedded")) as server:
        yield server.url


def server_url(backend: str, embedded_server: str) -> str:
    if backend in ("embedded", "pgbouncer"):  # PgBouncer's databases are the embedded server's
        return embedded_server
    variable = "TSAPI_TEST_DATABASE_URL" if backend == "postgres" else "TSAPI_TEST_TIMESCALE_URL"
    return os.environ[variable]


@pytest.fixture(scope="session")
def make_database(embedded_server: str) -> Iterator[Any]:
    """A factory of new, empty databases on a backend's server; all dropped at the end."""
    made: list[tuple[str, str]] = []

    def make(backend: str) -> str:
        admin = server_url(backend, embedded_server)
        name = f"tsapi_test_{uuid.uuid4().hex[:12]}"
        sql(admin, f'CREATE DATABASE "{name}"')
        made.append((admin, name))
        return with_database(admin, name)

    yield make
    for admin, name in made:
        sql(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Tsapi:
    """A ``tsapi serve`` process on its own database."""

    process: subprocess.Popen[bytes]
    base_url: str
    database_url: str
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


def start_tsapi(database_url: str | None, log_path: Path, *args: str, **env: str) -> Tsapi:
    port = free_port()
    command = [sys.executable, "-m", "tsapi", "serve", "--port", str(port), *args]
    if database_url is not None:
        command += ["--database-url", database_url]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}
        )
    tsapi = Tsapi(process, f"http://127.0.0.1:{port}", database_url or "", log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tsapi exited at start:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{tsapi.base_url}/readyz").status_code == 200:
                return tsapi
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    tsapi.stop()
    raise RuntimeError(f"tsapi did not become ready:\n{log_path.read_text()}")


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="session")
def pgbouncer(
    embedded_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PgBouncer]:
    bouncer = PgBouncer(tmp_path_factory.mktemp("pgbouncer"), embedded_server, free_port())
    bouncer.start()
    yield bouncer
    bouncer.stop()


@pytest.fixture(scope="session")
def tsapi(
    backend: str,
    make_database: Any,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Tsapi]:
    log_path = tmp_path_factory.mktemp(f"tsapi-{backend}") / "tsapi.log"
    database = make_database(backend)
    # Rollups refresh often, so that tests see both their materialized and pending states.
    env = {"TSAPI_ROLLUP_REFRESH_INTERVAL": "0.2"}
    if backend == "pgbouncer":
        bouncer: PgBouncer = request.getfixturevalue("pgbouncer")
        env |= {"TSAPI_DATABASE_POOLER": "pgbouncer", "TSAPI_DIRECT_DATABASE_URL": database}
        server = start_tsapi(bouncer.url(database), log_path, **env)
        server.database_url = database  # the tests' own queries go straight to the server
    else:
        server = start_tsapi(database, log_path, **env)
    yield server
    server.stop()


async def _empty(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        # Holding the refresher's lock keeps it from running into the TRUNCATE (a deadlock). Tried
        # rather than waited for: the refresher itself waits for transactions older than its own.
        while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", ROLLUP_LOCK_KEY):
            await asyncio.sleep(0.02)
        await conn.execute(
            "TRUNCATE readings, tsapi_rollup, tsapi_rollup_all, tsapi_rollup_log, tsapi_sensors"
        )
        await conn.execute(
            "UPDATE tsapi_rollup_state SET published = '0001-01-01 00:00:00+00',"
            " materialized = '0001-01-01 00:00:00+00'"
        )
    finally:
        await conn.close()  # which releases the lock


@pytest.fixture
def api(tsapi: Tsapi) -> Iterator[httpx.Client]:
    """A client of a running tsapi whose readings table (and so its rollups) starts empty."""
    asyncio.run(_empty(tsapi.database_url))
    with httpx.Client(base_url=tsapi.base_url, timeout=60) as client:
        yield client


@pytest.fixture
def db_url(tsapi: Tsapi) -> str:
    return tsapi.database_url


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No TSAPI_* setting in the environment and an empty working directory (no tsapi.toml), for
    this test and the tsapi processes it starts; that directory."""
    for name in Settings.model_fields:
        monkeypatch.delenv(f"TSAPI_{name.upper()}", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path
