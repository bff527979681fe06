"""Exactly-once writes: a request that carries an ``Idempotency-Key`` is done once, and its retries
get the first answer back.

The key and the answer are recorded in the transaction that writes the readings, so a request is
either done with its answer recorded or not done at all: a retry after a lost answer, or after a
crash between the commit and the answer, replays that answer and inserts nothing. A retry racing
the first attempt waits for the first one's transaction (the key's row is locked until it ends),
then answers its result; if the first attempt failed, the retry does the work itself.

Streamed bodies (NDJSON, CSV, line protocol) are digested as they are read and written, so their
digest is recorded at the end of the transaction; a retry of a request already done reads its
body to the end, writing nothing, to compare it.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from starlette.requests import Request
from starlette.responses import Response

from tsapi.db import Connection
from tsapi.errors import ApiError
from tsapi.request_digest import Digest

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
PURGE_INTERVAL = 600.0  # seconds between purges of expired keys

# Claims the key: inserts it, or takes over an expired one. When another transaction holds the
# key, this waits until that one ends; then no row is returned if the key is (still) taken. The
# request's digest is recorded with the answer: a streamed body's is known only once it is read
# (the empty one stored meanwhile is never seen committed).
_CLAIM_SQL = """
INSERT INTO tsapi_idempotency AS i (identity, key, request_sha256, status, content_type, body)
VALUES ($1, $2, '', 0, '', '')
ON CONFLICT (identity, key) DO UPDATE
    SET request_sha256 = '', status = 0, content_type = '', body = '', created_at = now()
    WHERE i.created_at <= now() - $3::interval
RETURNING true"""
_RECORD_SQL = """
UPDATE tsapi_idempotency SET request_sha256 = $3, status = $4, content_type = $5, body = $6
WHERE identity = $1 AND key = $2"""
_FIND_SQL = """
SELECT request_sha256, status, content_type, body FROM tsapi_idempotency
WHERE identity = $1 AND key = $2"""
_PURGE_SQL = "DELETE FROM tsapi_idempotency WHERE created_at <= now() - $1::interval"


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes


class _Unrecorded(Exception):
    """Rolls back a claim whose work answered an error: the key stays free for a retry."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer


def digest(method: str, path: str, query: str, content_type: str, body: bytes) -> Digest:
    """The digest of a request whose body is all at hand."""
    return Digest(method, path, query, content_type).update(body)


async def once(
    conn: Connection,
    identity: str,
    key: str,
    request_digest: Digest,
    retention: timedelta,
    work: Callable[[], Awaitable[Answer]],
) -> tuple[Answer, bool]:
    """The answer of ``work``, done in one transaction with the key's record; or, when the key
    was already used for the same request within ``retention``, the recorded answer. The flag
    says which (True: replayed). A 2xx answer only is recorded."""
    try:
        async with conn.transaction():
            claimed = await conn.fetchval(_CLAIM_SQL, identity, key, retention)
            if claimed:
                answer = await work()
                if not 200 <= answer.status < 300:
                    raise _Unrecorded(answer)
                await conn.execute(
                    _RECORD_SQL,
                    identity,
                    key,
                    await request_digest.value(),
                    answer.status,
                    answer.content_type,
                    answer.body,
                )
                return answer, False
            row = await conn.fetchrow(_FIND_SQL, identity, key)
    except _Unrecorded as unrecorded:
        return unrecorded.answer, False
    if row is None:  # expired and purged between the two statements: start again
        return await once(conn, identity, key, request_digest, retention, work)
    # Out of the transaction: a streamed body may take long to read to its end.
    if row["request_sha256"] != await request_digest.value():
        raise ApiError(
            422,
            f"this {HEADER} was already used for a different request; use a new key for a new"
            " request, and the same key only to retry the same request",
            header=HEADER,
        )
    return Answer(row["status"], row["content_type"], bytes(row["body"])), True


async def purge(conn: Connection, retention: timedelta) -> int:
    """Forget the keys older than ``retention``; how many."""
    status = await conn.execute(_PURGE_SQL, retention)
    return int(status.split()[-1])


def identity_of(request: Request) -> str:
    """Whose keys a request's are: the API key's id once auth has identified one, else ''. Two
    clients with different API keys may use the same Idempotency-Key without meeting."""
    api_key = request.scope.get("tsapi.key")
    return "" if api_key is None else str(getattr(api_key, "id", ""))


def key_of(request: Request) -> str | None:
    """The request's Idempotency-Key, None without one; 400 if malformed."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not (key.isascii() and key.isprintable()):
        raise ApiError(
            400,
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters",
            header=HEADER,
        )
    return key


async def respond(
    request: Request,
    conn: Connection,
    body: bytes | Digest,
    write: Callable[[], Awaitable[Response]],
    identity: str | None = None,
) -> Response:
    """What ``write`` answers, done at most once per Idempotency-Key (when the request has one):
    the wrapper for every route that writes readings. ``body`` is the request's, or the Digest
    its streamed body feeds as ``write`` reads it. ``write`` uses ``conn``; with a key it runs
    in a transaction, where its own transactions become savepoints."""
    key = key_of(request)
    if key is None:
        return await write()
    retention: timedelta = request.app.state.tsapi.settings.idempotency_retention
    request_digest = body if isinstance(body, Digest) else Digest.of(request).update(body)

    written: list[Response] = []

    async def work() -> Answer:
        response = await write()
        written.append(response)
        content_type = response.headers.get("content-type", "")
        return Answer(response.status_code, content_type, bytes(response.body))

    answer, replayed = await once(
        conn,
        identity_of(request) if identity is None else identity,
        key,
        request_digest,
        retention,
        work,
    )
    if not replayed:
        return written[0]
    headers = {REPLAYED_HEADER: "true"}
    if answer.content_type:
        headers["content-type"] = answer.content_type
    return Response(answer.body, answer.status, headers)
