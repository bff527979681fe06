"""``tsapi import``: readings from files written in chunks, through a running tsapi's HTTP API or
straight into the database, each chunk under its idempotency key: an import run again after an
interruption skips what was written and writes the rest, so nothing is written twice."""

import asyncio
import functools
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import msgspec

from tsapi import db, idempotency, ingest, migrate
from tsapi.errors import ApiError
from tsapi.import_progress import Progress
from tsapi.import_sources import PRECISIONS, Chunk, Source, format_of
from tsapi.settings import Settings
from tsapi.storage import Storage

RETRIED = (502, 503, 504)  # a server restarting, or its database unavailable: worth a retry


class ImportStopped(Exception):
    """What stopped the import; the message says where, and that running it again resumes."""


@dataclass
class Totals:
    readings: int = 0  # rows read and sent
    written: int = 0  # by this run, as the writes answered: inserted (with dedupe: or replaced)
    chunks: int = 0
    replayed: int = 0  # chunks found written by an earlier run, and so skipped
    replayed_readings: int = 0


class Target(Protocol):
    async def write(self, chunk: Chunk, name: str) -> tuple[int, bool]: ...


class HttpTarget:
    def __init__(self, url: str, token: str | None, retries: int) -> None:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        self.url, self.retries = url.rstrip("/"), retries
        self.client = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=300)

    async def write(self, chunk: Chunk, name: str) -> tuple[int, bool]:
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(min(0.5 * 2 ** (attempt - 1), 8.0))
            try:
                response = await self.client.post(
                    "/readings",
                    content=chunk.body,
                    headers={"Content-Type": chunk.content_type, "Idempotency-Key": chunk.key},
                )
            except httpx.TransportError as exc:
                problem = f"{self.url} did not answer ({type(exc).__name__})"
                continue
            if response.status_code == 200:
                replayed = response.headers.get(idempotency.REPLAYED_HEADER) == "true"
                return int(response.text), replayed
            answer = _json(response.content)
            if response.status_code not in RETRIED:
                raise ImportStopped(_describe(name, chunk, response.status_code, answer))
            problem = f"{self.url} answered {response.status_code}: {answer.get('error', '')}"
        raise ImportStopped(f"{name}: {problem}; {resume(name, chunk)}")


class DirectTarget:
    def __init__(self, conn: db.Connection, storage: Storage, settings: Settings) -> None:
        self.conn, self.storage, self.settings = conn, storage, settings

    async def write(self, chunk: Chunk, name: str) -> tuple[int, bool]:
        try:
            batch = ingest.parse_json(chunk.body, sys.maxsize)  # a chunk is never too long here
        except ApiError as exc:
            raise ImportStopped(_describe(name, chunk, exc.status, exc.body())) from None
        # The same digest as the HTTP request for the chunk: either way, it is written once.
        digest = idempotency.digest("POST", "/readings", "", chunk.content_type, chunk.body)

        async def work() -> idempotency.Answer:
            written = await self.storage.write(self.conn, batch)
            return idempotency.Answer(200, "application/json", str(written).encode())

        answer, replayed = await idempotency.once(
            self.conn, "", chunk.key, digest, self.settings.idempotency_retention, work
        )
        return int(answer.body), replayed


def _json(content: bytes) -> dict[str, Any]:
    try:
        decoded = msgspec.json.decode(content)
    except msgspec.DecodeError:
        return {"error": content.decode(errors="replace")[:200]}
    return decoded if isinstance(decoded, dict) else {"error": str(decoded)}


def _describe(name: str, chunk: Chunk, status: int, answer: dict[str, Any]) -> str:
    """Where the import stopped and why: the first bad row's file and line, if one is named."""
    errors = answer.get("errors") or []
    if errors:
        first = errors[0]
        if "row" in first:  # a JSON row of the chunk
            line = chunk.lines[min(first["row"], len(chunk.lines) - 1)]
        else:  # a line of the chunk's body
            line = chunk.lines[min(max(first.get("line", 1), 1), len(chunk.lines)) - 1]
        field = f"{first['field']}: " if first.get("field") else ""
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return f"{name}:{line}: {field}{first['reason']}{more}; {resume(name, chunk)}"
    where = f"{name}:{chunk.lines[0]}-{chunk.lines[-1]}"
    return f"{where}: refused ({status}): {answer.get('error', '')}; {resume(name, chunk)}"


def resume(name: str, chunk: Chunk) -> str:
    done = (
        f"nothing of {name} was written"
        if chunk.index == 0
        else f"{name} was written up to line {chunk.lines[0] - 1}"
    )
    return f"{done}; run the same command again to resume"


async def run(sources: Sequence[Source], target: Target, chunk_size: int) -> Totals:
    totals = Totals()
    progress = Progress(sum(source.size or 0 for source in sources))
    try:
        for source in sources:
            for chunk in source.chunks(chunk_size):
                written, replayed = await target.write(chunk, source.name)
                totals.readings += chunk.rows
                totals.chunks += 1
                if replayed:
                    totals.replayed += 1
                    totals.replayed_readings += chunk.rows
                else:
                    totals.written += written
                progress.advance(source.position(), chunk.rows)
            progress.next_file(source.position())
    finally:
        progress.close()
    return totals


async def run_direct(ready: Settings, sources: Sequence[Source], chunk_size: int) -> Totals:
    conn = await db.connect(ready)
    try:
        await migrate.upgrade(conn, ready)
        storage = await Storage.open(
            conn,
            ready.partition_interval,
            rollups=bool(ready.rollup_widths),
            dedupe=ready.dedupe,
            connect_aside=functools.partial(db.connect_aside, ready),
        )
        return await run(sources, DirectTarget(conn, storage, ready), chunk_size)
    finally:
        await conn.close()


async def run_http(
    url: str, token: str | None, retries: int, sources: Sequence[Source], chunk_size: int
) -> Totals:
    target = HttpTarget(url, token, retries)
    async with target.client:
        return await run(sources, target, chunk_size)


def open_sources(
    names: Sequence[str], fmt: str | None, bucket: str, precision: str
) -> list[Source]:
    """The inputs; line protocol is read as POST /api/v2/write?bucket=&precision= reads it."""
    sources = []
    for name in names:
        found = format_of(name, fmt)
        args = ({"bucket": bucket}, PRECISIONS[precision]) if found == "line" else ()
        sources.append(Source(name, found, args))
    return sources


def summary(names: Sequence[str], totals: Totals, seconds: float) -> str:
    rate = totals.readings / seconds if seconds > 0 else 0.0
    again = (
        f" ({totals.replayed:,} chunks, {totals.replayed_readings:,} readings, written by an"
        " earlier run: skipped)"
        if totals.replayed
        else ""
    )
    return (
        f"imported {', '.join(names)}: {totals.readings:,} readings in {totals.chunks:,} chunks"
        f"{again}; {totals.written:,} written now, in {seconds:.1f} s ({rate:,.0f} readings/s)"
    )


def clock() -> float:
    return time.monotonic()
