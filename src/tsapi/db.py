"""The process's one pool of database connections, and how values cross it."""

from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
import msgspec

from tsapi.settings import Settings

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]
else:
    Pool = asyncpg.Pool
    Connection = asyncpg.Connection

_JSONB_BINARY_VERSION = b"\x01"


def _encode_jsonb(text: bytes) -> bytes:
    return _JSONB_BINARY_VERSION + text


def _decode_jsonb(data: bytes) -> msgspec.Raw:
    # Kept as raw JSON text: answers embed it without parsing it again.
    return msgspec.Raw(data[1:])


async def _prepare_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=_encode_jsonb,
        decoder=_decode_jsonb,
        format="binary",
    )


def connect_kwargs(settings: Settings) -> dict[str, Any]:
    """What every connection to the configured database needs."""
    if settings.database_url is None:
        raise RuntimeError("no database URL: the embedded server must be started first")
    return {
        "dsn": settings.database_url.get_secret_value(),
        "server_settings": {"application_name": "tsapi", "timezone": "UTC"},
    }


async def connect(settings: Settings) -> asyncpg.Connection:
    conn: asyncpg.Connection = await asyncpg.connect(**connect_kwargs(settings))
    await _prepare_connection(conn)
    return conn


async def create_pool(settings: Settings) -> Pool:
    kwargs = connect_kwargs(settings)
    # Requests' queries only: migrations and rollup refreshes may rightly take longer.
    timeout_ms = str(int(settings.statement_timeout * 1000))
    kwargs["server_settings"] = {**kwargs["server_settings"], "statement_timeout": timeout_ms}
    pool = await asyncpg.create_pool(
        **kwargs,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        init=_prepare_connection,
    )
    assert pool is not None
    return pool
