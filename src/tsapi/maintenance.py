"""One round of upkeep, run by every tsapi process every ``maintenance_interval`` (each step is
idempotent, and locked where two processes must not overlap): partitions for the coming periods,
then retention of readings and of rollups, then compression of old chunks.
"""

from collections.abc import Awaitable, Callable

import structlog

from tsapi import compression, retention
from tsapi.db import Connection
from tsapi.settings import Settings
from tsapi.storage import Layout, Storage

log = structlog.get_logger(__name__)


def warn_unavailable(settings: Settings, layout: Layout) -> None:
    """Say once, at startup, which configured policies this storage cannot apply."""
    if settings.compress_after is not None and layout is not Layout.HYPERTABLE:
        log.warning("compress_after needs TimescaleDB; readings stay uncompressed")
    if settings.retention is not None and layout is Layout.PLAIN:
        log.warning("retention needs a partitioned readings table; this one is kept whole")


async def run_round(conn: Connection, settings: Settings, storage: Storage) -> None:
    steps: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("partitions", lambda: storage.maintain(conn))
    ]
    if settings.retention is not None:
        steps.append(("retention", lambda: _retention(conn, settings, storage)))
    if settings.compress_after is not None:
        after = settings.compress_after
        steps.append(("compression", lambda: compression.compress_old(conn, storage.layout, after)))
    for name, step in steps:
        try:
            await step()
        except Exception:  # the other steps still run; this one is tried again next round
            log.exception("maintenance step failed", step=name)


async def _retention(conn: Connection, settings: Settings, storage: Storage) -> None:
    assert settings.retention is not None
    dropped = await retention.drop_expired(conn, storage.layout, settings.retention)
    if dropped is not None and storage.layout is not Layout.PLAIN:
        await storage.partitions.refresh(conn)
    if settings.rollup_retention is not None:
        await retention.drop_old_rollups(conn, storage.layout, settings.rollup_retention)
