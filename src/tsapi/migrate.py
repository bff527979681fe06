"""Schema migrations: the numbered SQL files in ``migrations/``, each applied once, in order.

An advisory lock lets many processes start at once: one applies, the others wait and then find
nothing left to do. Migrations only ever add; none drops data.
"""

from dataclasses import dataclass
from importlib import resources

import asyncpg
import structlog

from tsapi import dedupe
from tsapi.db import Connection
from tsapi.settings import Settings

log = structlog.get_logger(__name__)

_LOCK_KEY = 7_362_914_001  # any constant shared by every tsapi process


class MigrationError(RuntimeError):
    """A migration the database refused; nothing of it was applied."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """Every migration shipped with tsapi, by version."""
    found = []
    for entry in resources.files("tsapi.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version, _, name = entry.name.removesuffix(".sql").partition("_")
            found.append(Migration(int(version), name, entry.read_text()))
    return sorted(found, key=lambda migration: migration.version)


async def upgrade(conn: Connection, settings: Settings) -> list[Migration]:
    """Apply the migrations this database lacks; return them."""
    applied_now = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS tsapi_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM tsapi_migrations")}
        for migration in available():
            if migration.version in done:
                continue
            try:
                async with conn.transaction():
                    await conn.execute(
                        "SELECT set_config('tsapi.partition_interval', $1, true)",
                        f"{int(settings.partition_interval.total_seconds())} seconds",
                    )
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO tsapi_migrations (version, name) VALUES ($1, $2)",
                        migration.version,
                        migration.name,
                    )
            except asyncpg.PostgresError as exc:
                said = "".join(f" ({extra})" for extra in (exc.detail, exc.hint) if extra)
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} failed: "
                    f"{exc.message}{said}"
                ) from exc
            log.info("applied migration", version=migration.version, name=migration.name)
            applied_now.append(migration)
        if settings.dedupe != "off":  # what the settings call for, besides the migrations
            try:
                await dedupe.ensure_unique_index(conn)
            except dedupe.DuplicateReadings as exc:
                raise MigrationError(str(exc)) from exc
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now
