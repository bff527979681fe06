"""API keys for the tests, made and revoked straight in a test database (``tsapi keys`` itself
is tested in test_keys.py), and servers started with them."""

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from tests.conftest import Tsapi, start_tsapi
from tsapi import keys
from tsapi.db import Connection

T = TypeVar("T")


def on(url: str, action: Callable[[Connection], Awaitable[T]]) -> T:
    async def run() -> T:
        conn = await asyncpg.connect(url)
        try:
            return await action(conn)
        finally:
            await conn.close()

    return asyncio.run(run())


def make_key(url: str, scope: keys.Scope, *sensors: str) -> str:
    """A new key of a running tsapi's database (whose migrations made the table)."""
    _, key = on(url, lambda conn: keys.create(conn, scope, None, [uuid.UUID(s) for s in sensors]))
    return key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def serve(make_database: Any, tmp_path: Path, backend: str = "embedded", **env: str) -> Tsapi:
    """A tsapi on a new database; its key lookups are cached briefly, for tests to see changes."""
    return start_tsapi(
        make_database(backend), tmp_path / "tsapi.log", TSAPI_KEY_CACHE_SECONDS="0.2", **env
    )


def revoke(url: str, key: str) -> None:
    key_id = key.split("_")[1]
    on(url, lambda conn: keys.revoke(conn, key_id))


def eventually(check: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait for what a process sees only after its caches expire."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.05)
