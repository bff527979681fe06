"""Page cursors: where a walk through readings stopped, as an opaque string checked on return.

Readings are walked in the total order (ts, sensor, value, metadata), the last three compared as
the text PostgreSQL prints (so 1.0 and 1.00 never tie). The table has no unique key, so rows can
still tie when they are identical in every column; a cursor counts how many of the rows at its
position were already answered, and the next page skips that many.
"""

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec

from tsapi.errors import ApiError

_VERSION = 1
_CHECK_BYTES = 8
_MAX_SEEN = 2**48  # far beyond any real count, and still fits LIMIT's bigint
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# ts, then sensor, value and metadata as text; "" stands for NULL, which no such text can be.
Key = tuple[datetime, str, str, str]
_Payload = tuple[int, int, str, str, str, int, int | None]


@dataclass(frozen=True)
class Position:
    key: Key
    seen: int  # rows with exactly this key already answered
    now: datetime | None  # the database's now() that relative from/to were resolved against


def key_of(row: asyncpg.Record) -> Key:
    """A row of ``query.COLUMNS``'s place in the walk, as PostgreSQL compares it."""
    ts, sensor, value, metadata = row
    return datetime.fromisoformat(ts), sensor, value, metadata


def encode(position: Position, query: bytes) -> str:
    """The cursor string; ``query`` identifies the query it belongs to (its filters and order)."""
    ts, sensor, value, metadata = position.key
    payload = msgspec.json.encode(
        (_VERSION, _micros(ts), sensor, value, metadata, position.seen, _micros(position.now))
    )
    return _text(_check(payload, query) + payload)


def decode(text: str, query: bytes) -> Position:
    """The position a cursor string holds; 400 naming ``cursor`` if it is not one of ``query``."""
    try:
        token = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("is garbled") from None
    if _text(token) != text:  # another spelling of the same bytes is not a cursor tsapi gave
        raise _invalid("is garbled")
    check, payload = token[:_CHECK_BYTES], token[_CHECK_BYTES:]
    if not hmac.compare_digest(check, _check(payload, query)):
        raise _invalid("was altered, or belongs to a query with other filters or order")
    try:
        version, ts, sensor, value, metadata, seen, now = msgspec.json.decode(
            payload, type=_Payload
        )
    except msgspec.DecodeError:
        raise _invalid("is garbled") from None
    if version != _VERSION:
        raise _invalid("is from another version of tsapi")
    # The check is no signature: a client can make one for any content, so the content is
    # checked as well, for what PostgreSQL would refuse as a parameter.
    if not 0 <= seen <= _MAX_SEEN or any("\x00" in text for text in (sensor, value, metadata)):
        raise _invalid("is garbled")
    return Position(
        (_instant(ts), sensor, value, metadata), seen, None if now is None else _instant(now)
    )


def _text(token: bytes) -> str:
    return base64.urlsafe_b64encode(token).rstrip(b"=").decode()


def _check(payload: bytes, query: bytes) -> bytes:
    # Not a secret: it catches cursors that were edited, garbled, or reused with another query.
    return hashlib.blake2b(query + b"\0" + payload, digest_size=_CHECK_BYTES).digest()


def _micros(ts: datetime | None) -> int | None:
    return None if ts is None else (ts - _EPOCH) // timedelta(microseconds=1)


def _instant(micros: int) -> datetime:
    try:
        return _EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        raise _invalid("is garbled") from None


def _invalid(reason: str) -> ApiError:
    return ApiError(
        400,
        f"'cursor' {reason}; use the next cursor exactly as a previous page gave it",
        parameter="cursor",
    )
