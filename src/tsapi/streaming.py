"""Writing a line-oriented body (NDJSON, CSV, line protocol) as it arrives: blocks of whole lines
are parsed and written one after the other in one transaction, so a body of any size is stored
in flat memory, all or nothing. A bad line stops the writing (the transaction rolls back) but not
the parsing, so that the answer names the first MAX_REPORTED_ERRORS bad lines."""

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from starlette.requests import Request
from starlette.responses import Response

from tsapi import idempotency, metrics, permissions
from tsapi.bodies import body_chunks
from tsapi.errors import ApiError
from tsapi.ingest import MAX_REPORTED_ERRORS, Batch
from tsapi.parsers import BlockParser, LineError
from tsapi.parsers.csv import CsvParser
from tsapi.parsers.lines import line_blocks
from tsapi.parsers.ndjson import NdjsonParser
from tsapi.request_digest import Digest
from tsapi.settings import Settings
from tsapi.state import State

_NDJSON = ("application/x-ndjson", "application/ndjson", "application/jsonl")
_UTF8 = ("utf-8", "utf8", "us-ascii")


class BadLines(ApiError):
    """A 422 naming each bad line (the first MAX_REPORTED_ERRORS of them)."""

    def __init__(self, errors: list[LineError]) -> None:
        more = "+" if len(errors) >= MAX_REPORTED_ERRORS else ""
        super().__init__(
            422,
            f"{len(errors)}{more} invalid line(s); nothing was written",
            errors=[error.as_dict() for error in errors],
        )
        self.lines = errors


def readings_parser(content_type: str | None, settings: Settings) -> tuple[BlockParser, int] | None:
    """The parser and body size limit for POST /readings' Content-Type; None for JSON, which is
    every type but NDJSON's and CSV's (so that `curl -d`, which says form, sends JSON)."""
    media_type, *params = (part.strip().lower() for part in (content_type or "").split(";"))
    if media_type in _NDJSON:
        return NdjsonParser(), settings.max_body_bytes_ndjson
    if media_type != "text/csv":
        return None
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() == "charset" and value.strip().strip('"') not in _UTF8:
            raise ApiError(415, f"CSV must be UTF-8, not {value.strip()}")
    return CsvParser(), settings.max_body_bytes_csv


async def ingest(
    request: Request,
    state: State,
    parser: BlockParser,
    limit: int,
    answer: Callable[[int], Response],
) -> Response:
    """Parse and write the request's body, all or nothing, and answer ``answer(readings
    written)``; once per Idempotency-Key, as JSON bodies are."""
    digest = Digest.of(request)
    chunks = body_chunks(request, limit)
    # Digested decoded, as JSON bodies are; and only when a retry may have to compare it.
    if idempotency.key_of(request) is not None:
        chunks = digest.tap(chunks)
    blocks = line_blocks(chunks, parser.quoted)
    with metrics.counting_rejections():
        async with contextlib.aclosing(_batches(request, blocks, parser)) as batches:
            # The first batch is parsed before a connection is taken: a body refused at once,
            # or a client slow to send it, holds none.
            first = await anext(batches, None)
            async with state.pool.acquire(timeout=state.settings.pool_timeout) as conn:

                async def write() -> Response:
                    inserted = 0
                    if first is not None:
                        inserted = await state.storage.write_stream(conn, _chain(first, batches))
                    metrics.READINGS_INGESTED.inc(inserted)
                    return answer(inserted)

                return await idempotency.respond(request, conn, digest, write)


async def _batches(
    request: Request, blocks: AsyncGenerator[tuple[int, bytes]], parser: BlockParser
) -> AsyncGenerator[Batch]:
    errors: list[LineError] = []
    async with contextlib.aclosing(blocks):
        async for first_line, block in blocks:
            parsed = parser.parse(block, first_line)
            errors += parsed.errors
            if len(errors) >= MAX_REPORTED_ERRORS:
                break
            if not errors and len(parsed.batch):
                permissions.check_writes(request.scope, parsed.batch)
                yield parsed.batch
    if errors:
        raise BadLines(errors[:MAX_REPORTED_ERRORS])


async def _chain(first: Batch, rest: AsyncIterator[Batch]) -> AsyncIterator[Batch]:
    yield first
    async for batch in rest:
        yield batch
