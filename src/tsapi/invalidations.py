"""How every tsapi process hears of every write, so that its read cache never serves an answer a
write has changed: writers send a notification inside their transaction (it is delivered only if
they commit), and each process LISTENs on a connection of its own.

A client that writes and then reads must see its write even when the read reaches another
process, or another host, before that process has heard of it. So before a cached answer is
served, ``sync`` makes a round trip on the listening connection: PostgreSQL delivers the
notifications of every transaction committed before a statement ahead of that statement's answer.
"""

import asyncio

import asyncpg
import structlog

from tsapi import db
from tsapi.cache import ReadCache
from tsapi.settings import Settings

log = structlog.get_logger(__name__)

CHANNEL = "tsapi_writes"
NOTIFY_SQL = f"SELECT pg_notify('{CHANNEL}', '')"
RETRY_FIRST, RETRY_MAX = 0.2, 5.0  # seconds between attempts to reconnect, doubling


class Invalidations:
    def __init__(self, settings: Settings, cache: ReadCache) -> None:
        self.settings = settings
        self.cache = cache
        self._conn: asyncpg.Connection | None = None  # the listening one, while it is up
        self._next: asyncio.Future[bool] | None = None  # the round trip that has not begun yet
        self._runner: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Listen until cancelled, reconnecting whenever the connection is lost."""
        delay = RETRY_FIRST
        while True:
            try:
                await self._listen()
                delay = RETRY_FIRST  # it was up: the next attempt is prompt
            except Exception as exc:  # down or unreachable: the cache stays off meanwhile
                log.warning("read cache listener cannot connect", error=type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def _listen(self) -> None:
        """Listen on one connection until it is lost."""
        lost = asyncio.Event()
        conn = await db.connect(self.settings)
        try:
            conn.add_termination_listener(lambda _: lost.set())
            await conn.execute("SET application_name = 'tsapi cache listener'")
            await conn.add_listener(CHANNEL, self._heard)
            self._conn = conn
            self.cache.set_live(True)
            log.info("read cache on", ttl=self.cache.ttl)
            await lost.wait()
            log.warning("read cache off: its listener connection was lost")
        finally:
            self._conn = None
            self.cache.set_live(False)
            conn.terminate()

    def _heard(self, *notification: object) -> None:
        self.cache.invalidate()

    async def sync(self) -> bool:
        """Whether every write committed before this call has now been heard of (and so has
        invalidated the cache); False when that cannot be known."""
        if self._conn is None:
            return False
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            if self._runner is None or self._runner.done():
                self._runner = asyncio.create_task(self._round_trips(self._conn))
        # Callers arriving while a round trip is under way wait for the next one, which begins
        # after they arrived; all those arriving meanwhile share it.
        return await asyncio.shield(self._next)

    async def _round_trips(self, conn: asyncpg.Connection) -> None:
        while self._next is not None:
            waiter, self._next = self._next, None
            try:
                async with asyncio.timeout(self.settings.connect_timeout):
                    await conn.fetchval("SELECT 1")
                heard = conn is self._conn
            except Exception:  # a connection that does not answer is as good as lost
                conn.terminate()
                heard = False
            waiter.set_result(heard and self.cache.live)
