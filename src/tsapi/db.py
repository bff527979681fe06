"""The process's pools of database connections, and how values cross them."""

from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
import msgspec
import structlog

from tsapi.settings import Settings

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]
else:
    Pool = asyncpg.Pool
    Connection = asyncpg.Connection

log = structlog.get_logger(__name__)

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


# How much longer than statement_timeout the client waits for an answer before it gives up on
# its own: the server's cancellation comes first, cleanly; this only ends waits on a server or a
# network that has stopped answering altogether.
CLIENT_GRACE = 5.0
PARALLEL_SETUP_COST = 10_000  # PostgreSQL's default is 1,000
BACKGROUND = "tsapi background"  # the application_name of the rollup refresh and maintenance


def connect_kwargs(settings: Settings, direct: bool = False) -> dict[str, Any]:
    """What every connection to the configured database needs; ``direct`` ones bypass a pooler
    (they are for what needs a session: migrations, locks, LISTEN)."""
    url = settings.database_url
    if direct and settings.direct_database_url is not None:
        url = settings.direct_database_url
    if url is None:
        raise RuntimeError("no database URL: the embedded server must be started first")
    kwargs: dict[str, Any] = {
        "dsn": url.get_secret_value(),
        "server_settings": {"application_name": "tsapi", "timezone": "UTC"},
        "timeout": settings.connect_timeout,
    }
    if settings.database_pooler == "pgbouncer" and not direct:
        # A transaction pooler may run each statement on another server connection, where a
        # named prepared statement does not exist.
        kwargs["statement_cache_size"] = 0
    return kwargs


async def connect(settings: Settings) -> asyncpg.Connection:
    """A connection of its own, never through a pooler."""
    conn: asyncpg.Connection = await asyncpg.connect(**connect_kwargs(settings, direct=True))
    await _prepare_connection(conn)
    return conn


async def connect_aside(settings: Settings) -> asyncpg.Connection:
    """A connection of its own for what a request needs committed apart from its transaction
    (a partition), its statements bounded as the request's are: one waiting behind another
    session's schema change is cancelled with the request, not left to wait."""
    conn = await connect(settings)
    await conn.execute(f"SET statement_timeout = {int(settings.statement_timeout * 1000)}")
    return conn


async def create_pool(settings: Settings) -> Pool:
    """The pool requests use. Their queries are bounded by statement_timeout; migrations and
    rollup refreshes may rightly take longer, and use other connections."""
    kwargs = connect_kwargs(settings)
    # Requests leave no session state behind (no SET, LISTEN or session lock; their cursors
    # live in transactions), so asyncpg's reset query on release, a round trip per request, is
    # skipped: asyncpg still rolls back a transaction left open. Behind a transaction pooler the
    # query would moreover reset whichever server connection it happened to run on.
    kwargs["reset"] = _keep
    if settings.database_pooler == "pgbouncer":
        # PgBouncer refuses a statement_timeout startup parameter: the client cancels instead.
        kwargs["command_timeout"] = settings.statement_timeout
    else:
        kwargs["server_settings"] = {
            **kwargs["server_settings"],
            "statement_timeout": str(int(settings.statement_timeout * 1000)),
            # Parallel workers take milliseconds to start, longer than most of what requests ask
            # takes (the per-minute average of 1,000 sensors over an hour: 20 ms with workers,
            # 5.5 ms without): a query must promise ten times PostgreSQL's default before it
            # gets them.
            "parallel_setup_cost": str(PARALLEL_SETUP_COST),
        }
        kwargs["command_timeout"] = settings.statement_timeout + CLIENT_GRACE
    return await _open(kwargs, min_size=settings.pool_min_size, max_size=settings.pool_max_size)


async def _keep(conn: Any) -> None:
    pass


async def create_direct_pool(settings: Settings) -> Pool:
    """A small pool of direct connections for background work (rollup refresh, maintenance),
    opened as needed: none of its statements has a time limit."""
    kwargs = connect_kwargs(settings, direct=True)
    # Told apart from requests' connections in pg_stat_activity.
    kwargs["server_settings"] = {**kwargs["server_settings"], "application_name": BACKGROUND}
    return await _open(kwargs, min_size=0, max_size=2)


class PoolTimeout(TimeoutError):
    """No connection within the wait allowed: the pool is exhausted, or the database does not
    answer a new connection. Not a query that ran too long, which the answer says apart."""


class _Pool(Pool):
    async def _acquire(self, timeout: float | None) -> Any:
        try:
            return await super()._acquire(timeout)  # type: ignore[misc]
        except TimeoutError as exc:
            raise PoolTimeout from exc

    async def release(self, connection: Any, *, timeout: float | None = None) -> None:
        try:
            await super().release(connection, timeout=timeout)
        except Exception as exc:
            # A connection that died under its last statement (in the middle of a COPY, say)
            # cannot be reset; asyncpg has terminated it and the pool will replace it. What the
            # request did, or the error it met, is what counts: not this.
            log.warning("discarded a broken database connection", error=type(exc).__name__)


async def _open(connect: dict[str, Any], **sizes: Any) -> Pool:
    pool = _Pool(
        **connect,
        **sizes,
        init=_prepare_connection,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
    )
    await pool
    return pool
