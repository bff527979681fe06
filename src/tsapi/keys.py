"""API keys: their form, how a presented one is verified, and the table that holds them.

A key reads ``tsapi_<id>_<secret>``. The id is not secret (``tsapi keys list`` shows it, logs name
it): it finds the key's row. The secret proves possession; only its SHA-256 digest is stored.
"""

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, cast

from tsapi.db import Connection

Scope = Literal["read", "write", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "write", "admin")
PREFIX = "tsapi_"


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


@dataclass(frozen=True)
class ApiKey:
    """A key that is not revoked, as requests are checked against it."""

    id: str
    scope: Scope
    sensors: frozenset[uuid.UUID] | None  # None: every sensor
    secret_sha256: bytes

    def verifies(self, secret: str) -> bool:
        # Secrets are 256 random bits, not passwords: guessing is hopeless, so a deliberately slow
        # hash (argon2, bcrypt) would only cost time on every request. A digest keeps a leaked
        # table from being usable as keys; compare_digest takes the same time wherever two digests
        # differ, so response times say nothing about how close a guess came.
        return hmac.compare_digest(_digest(secret), self.secret_sha256)


@dataclass(frozen=True)
class KeyInfo:
    """A key as ``tsapi keys list`` shows it: everything but its secret."""

    id: str
    name: str | None
    scope: Scope
    sensors: list[uuid.UUID] | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def split(token: str) -> tuple[str, str] | None:
    """The id and secret of a presented key; None when it cannot be a key."""
    if not token.startswith(PREFIX):
        return None
    key_id, underscore, secret = token.removeprefix(PREFIX).partition("_")
    # Ids are 12 hex digits: anything else is refused before it costs a lookup or cache room.
    if not underscore or len(key_id) != 12 or not key_id.isalnum() or not secret:
        return None
    return key_id, secret


async def create(
    conn: Connection, scope: Scope, name: str | None, sensors: Sequence[uuid.UUID]
) -> tuple[str, str]:
    """A new key's id and the key itself, which is never stored and cannot be shown again."""
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO tsapi_api_keys (id, name, scope, sensors, secret_sha256)"
        " VALUES ($1, $2, $3, $4, $5)",
        key_id,
        name,
        scope,
        list(sensors) or None,
        _digest(secret),
    )
    return key_id, f"{PREFIX}{key_id}_{secret}"


async def listing(conn: Connection) -> list[KeyInfo]:
    rows = await conn.fetch(
        "SELECT id, name, scope, sensors, created_at, last_used_at, revoked_at"
        " FROM tsapi_api_keys ORDER BY created_at, id"
    )
    return [KeyInfo(**dict(row)) for row in rows]


async def revoke(conn: Connection, key_id: str) -> tuple[datetime, bool] | None:
    """When the key was revoked, and whether it was just now; None if there is no such key."""
    row = await conn.fetchrow(
        "UPDATE tsapi_api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1"
        " RETURNING revoked_at, revoked_at = now() AS now",
        key_id,
    )
    return None if row is None else (row["revoked_at"], row["now"])


async def find(conn: Connection, key_id: str) -> ApiKey | None:
    """The key with this id, unless it is revoked or does not exist."""
    row = await conn.fetchrow(
        "SELECT scope, sensors, secret_sha256 FROM tsapi_api_keys"
        " WHERE id = $1 AND revoked_at IS NULL",
        key_id,
    )
    if row is None:
        return None
    sensors = None if row["sensors"] is None else frozenset(row["sensors"])
    return ApiKey(key_id, cast(Scope, row["scope"]), sensors, row["secret_sha256"])


async def touch(conn: Connection, key_id: str) -> None:
    await conn.execute("UPDATE tsapi_api_keys SET last_used_at = now() WHERE id = $1", key_id)


async def any_exist(conn: Connection) -> bool:
    """Whether any key was ever created (revoked ones count: see the migration)."""
    return bool(await conn.fetchval("SELECT EXISTS (SELECT FROM tsapi_api_keys)"))


def table(infos: Sequence[KeyInfo]) -> list[str]:
    """The keys as ``tsapi keys list`` prints them: aligned columns, times in UTC."""

    def when(moment: datetime | None) -> str:
        return "-" if moment is None else f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}"

    rows = [["id", "name", "scope", "sensors", "created", "last used", "revoked"]]
    for info in infos:
        sensors = "all" if info.sensors is None else ",".join(map(str, info.sensors))
        times = (info.created_at, info.last_used_at, info.revoked_at)
        rows.append([info.id, info.name or "-", info.scope, sensors, *map(when, times)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
