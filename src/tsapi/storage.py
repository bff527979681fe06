"""Where readings live: a TimescaleDB hypertable, a natively partitioned table, or an adopted plain
table; and writing a batch into it in one transaction."""

import bisect
import enum
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog

from tsapi import dedupe
from tsapi.db import Connection
from tsapi.errors import ApiError
from tsapi.ingest import Batch
from tsapi.invalidations import NOTIFY_SQL
from tsapi.rollups import LOG_SQL, spans

log = structlog.get_logger(__name__)

Connect = Callable[[], Awaitable[asyncpg.Connection]]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_END = datetime.max.replace(tzinfo=UTC)
_TIMED_COLUMNS = ("ts", "sensor", "metadata", "value")
_UNTIMED_COLUMNS = ("sensor", "metadata", "value")  # ts takes its default, the database's now()

# Batches of fewer rows are written by one INSERT that also logs their spans for the rollups: one
# round trip, where COPY takes a transaction of four. Larger ones are copied: COPY's setup then
# costs less than what it saves the database per row (benchmarks/README.md).
COPY_FROM_ROWS = 2000
# Sensors and values cross as array literals, one string each: asyncpg spends a check and a call
# on each element of an array, and more on a Decimal than PostgreSQL takes to read its text.
# Metadata crosses once per distinct value, as the bytes of its JSON, each row naming its own by
# number: a batch's readings often share theirs (a series' tags, a device's room), which
# PostgreSQL then reads once.
_INSERT_SQL = f"""WITH logged AS ({LOG_SQL}),
distinct_metadata AS MATERIALIZED (
    SELECT n, convert_from(json, 'UTF8')::jsonb AS json
    FROM unnest($6::bytea[]) WITH ORDINALITY AS m(json, n))
INSERT INTO readings (ts, sensor, metadata, value)
SELECT coalesce(r.ts, now()), r.sensor, distinct_metadata.json, r.value
FROM unnest($3::timestamptz[], $4::text::uuid[], $5::text::numeric[], $7::text::bigint[])
    AS r(ts, sensor, value, metadata_n)
LEFT JOIN distinct_metadata ON distinct_metadata.n = r.metadata_n"""  # noqa: S608 - constants only


class Layout(enum.Enum):
    HYPERTABLE = "hypertable"
    PARTITIONED = "partitioned"
    PLAIN = "plain"


async def detect_layout(conn: Connection) -> Layout:
    partitioned = await conn.fetchval(
        "SELECT EXISTS (SELECT FROM pg_partitioned_table WHERE partrelid = 'readings'::regclass)"
    )
    if partitioned:
        return Layout.PARTITIONED
    hypertable = await conn.fetchval(
        """SELECT to_regclass('timescaledb_information.hypertables') IS NOT NULL"""
    )
    if hypertable and await conn.fetchval(
        """SELECT EXISTS (SELECT FROM timescaledb_information.hypertables
                          WHERE hypertable_name = 'readings')"""
    ):
        return Layout.HYPERTABLE
    return Layout.PLAIN


class Partitions:
    """This process's view of which time ranges have a partition, kept to skip asking the database
    on every write. Missing ones are created before rows are written to them."""

    def __init__(self, width: timedelta) -> None:
        self.width = width
        self._lowers: list[datetime] = []
        self._uppers: list[datetime] = []

    # Past 9999, where the last possible partition ends, Python has no datetime: asyncpg reads
    # 'infinity' as a naive datetime.max, which stands in for it here.
    _RANGES_SQL = """SELECT lower, CASE WHEN upper >= '10000-01-01' THEN 'infinity' ELSE upper END
                         AS upper
                     FROM tsapi_partitions ORDER BY lower"""

    async def refresh(self, conn: Connection) -> None:
        rows = await conn.fetch(self._RANGES_SQL)
        self._lowers = [row["lower"] for row in rows]
        self._uppers = [row["upper"] if row["upper"].tzinfo else _END for row in rows]

    def covers(self, ts: datetime) -> bool:
        index = bisect.bisect_right(self._lowers, ts) - 1
        return index >= 0 and ts < self._uppers[index]

    def period_start(self, ts: datetime) -> datetime:
        return _EPOCH + (ts - _EPOCH) // self.width * self.width

    async def ensure(
        self, conn: Connection, stamps: Iterable[datetime], aside: Connect | None = None
    ) -> None:
        """Create the partitions missing for ``stamps``. Within a transaction they are made on a
        connection of their own from ``aside``, if given, and committed at once: the
        transaction may last as long as a streamed body, and makes none that others wait for."""
        missing = [ts for ts in stamps if not self.covers(ts)]
        if not missing:
            return
        if not conn.is_in_transaction():
            await self._create(conn, missing)
        elif aside is not None:
            side = await aside()
            try:
                await self._create(side, missing)
            finally:
                await side.close()
        else:
            # Partitions made in the transaction vanish if it rolls back: make them, but leave
            # this view to learn of them once committed.
            await conn.fetchval(
                "SELECT tsapi_ensure_partitions($1::timestamptz[], $2::interval)",
                missing,
                self.width,
            )

    async def _create(self, conn: Connection, missing: list[datetime]) -> None:
        # One stamp per period usually suffices; the full list only where older partitions of
        # another width leave gaps inside a period.
        periods: dict[datetime, list[datetime]] = {}
        for ts in missing:
            periods.setdefault(self.period_start(ts), []).append(ts)
        representatives = [min(group) for group in periods.values()]
        for attempt in (representatives, missing):
            created = await self._make(conn, attempt)
            await self.refresh(conn)
            if created:
                log.info("created partitions", count=created)
            missing = [ts for ts in missing if not self.covers(ts)]
            if not missing:
                return

    async def _make(self, conn: Connection, stamps: list[datetime]) -> int:
        created: int = await conn.fetchval(
            "SELECT tsapi_ensure_partitions($1::timestamptz[], $2::interval)", stamps, self.width
        )
        return created

    async def ensure_batch(
        self, conn: Connection, stamps: list[datetime], untimed: bool, aside: Connect | None
    ) -> None:
        """Partitions for a batch's timestamps and, if it has untimed rows, for now()."""
        if untimed:
            # The database's clock decides their ts; the local one is close enough to pick the
            # partition, with the next period's made ahead of time for clock skew.
            stamps = [*stamps, datetime.now(UTC)]
        if not stamps:
            return
        earliest, latest = min(stamps), max(stamps)
        index = bisect.bisect_right(self._lowers, earliest) - 1
        if index >= 0 and latest < self._uppers[index]:
            return  # the common case: the whole batch falls in one known partition
        await self.ensure(conn, stamps, aside)


class Chunks(Partitions):
    """A hypertable's chunks. TimescaleDB makes them as rows arrive, but a transaction that makes
    one holds up every other that makes one until it ends: those of a transaction that may last
    (a streamed body) are made first, on a connection of their own, and committed at once."""

    _RANGES_SQL = """SELECT range_start AS lower,
                         CASE WHEN range_end >= '10000-01-01' THEN 'infinity' ELSE range_end END
                             AS upper
                     FROM timescaledb_information.chunks
                     WHERE hypertable_schema = current_schema() AND hypertable_name = 'readings'
                     ORDER BY range_start"""

    async def ensure(
        self, conn: Connection, stamps: Iterable[datetime], aside: Connect | None = None
    ) -> None:
        if conn.is_in_transaction() and aside is not None:
            missing = [ts for ts in stamps if not self.covers(ts)]
            if missing:
                side = await aside()
                try:
                    await self._create(side, missing)
                finally:
                    await side.close()

    async def _make(self, conn: Connection, stamps: list[datetime]) -> int:
        # TimescaleDB makes a chunk, aligned as it aligns them, for a row; the row is gone before
        # anyone can see it, under a sensor no reading has.
        async with conn.transaction():
            marker = uuid.uuid4()
            await conn.execute(_PLACEHOLDERS_SQL, stamps, marker)
            await conn.execute(_NO_PLACEHOLDERS_SQL, stamps, marker)
        return len(stamps)


_PLACEHOLDERS_SQL = (
    "INSERT INTO readings (ts, sensor, value) SELECT ts, $2, 0 FROM unnest($1::timestamptz[]) ts"
)
_NO_PLACEHOLDERS_SQL = "DELETE FROM readings WHERE sensor = $2 AND ts = ANY($1::timestamptz[])"


class Storage:
    """Writes batches into readings, creating partitions first where the table needs them."""

    def __init__(
        self, layout: Layout, partitions: Partitions, rollups: bool, announce: bool = False
    ) -> None:
        self.layout = layout
        self.partitions = partitions
        self.rollups = rollups
        self.announce = announce  # whether writes notify the read caches (invalidations.py)
        self.dedupe: dedupe.Mode = "off"  # how writes treat a (sensor, ts) already stored
        self.retention: timedelta | None = None  # readings older than this are refused
        # Opens a connection of its own, for partitions a transaction needs (Partitions.ensure).
        self.connect_aside: Connect | None = None

    @classmethod
    async def open(
        cls,
        conn: Connection,
        partition_interval: timedelta,
        rollups: bool = True,
        announce: bool = False,
        dedupe: dedupe.Mode = "off",
        retention: timedelta | None = None,
        connect_aside: Connect | None = None,
    ) -> "Storage":
        layout = await detect_layout(conn)
        partitions = (Chunks if layout is Layout.HYPERTABLE else Partitions)(partition_interval)
        if layout is not Layout.PLAIN:
            await partitions.refresh(conn)
        if layout is Layout.PARTITIONED:
            await partitions.ensure(conn, _upcoming(partition_interval))
        log.info("storage ready", layout=layout.value)
        storage = cls(layout, partitions, rollups, announce)
        storage.dedupe = dedupe
        storage.retention = retention
        storage.connect_aside = connect_aside
        return storage

    async def maintain(self, conn: Connection) -> None:
        """Create the current and next periods' partitions ahead of their first rows."""
        if self.layout is Layout.PARTITIONED:
            await self.partitions.refresh(conn)
            await self.partitions.ensure(conn, _upcoming(self.partitions.width))

    async def write(self, conn: Connection, batch: Batch) -> int:
        """Insert every reading of the batch, or none; return how many were inserted (with
        dedupe: inserted or replaced)."""
        in_callers_transaction = conn.is_in_transaction()
        try:
            return await self._write(conn, batch)
        except asyncpg.CheckViolationError as exc:
            if self.layout is not Layout.PARTITIONED or not str(exc).startswith("no partition"):
                raise
            # A partition this process knew of was dropped (by retention, maybe in another
            # process): forget them all, so that writes ask again, recreating what they need.
            self.partitions = Partitions(self.partitions.width)
            if in_callers_transaction:  # aborted: only the client can try again
                error = ApiError(503, "a partition was dropped meanwhile; retry")
                error.headers["Retry-After"] = "1"
                raise error from exc
            return await self._write(conn, batch)

    async def _write(self, conn: Connection, batch: Batch) -> int:
        if not len(batch):
            return 0
        stamps = [row[0] for row in batch.timed]
        if self.retention is not None and stamps:
            # Retention would drop them at once, and writing them would recreate what it dropped.
            cutoff = datetime.now(UTC) - self.retention
            if min(stamps) < cutoff:
                expired = sum(ts < cutoff for ts in stamps)
                raise ApiError(
                    422,
                    f"{expired} reading(s) older than the retention period, the oldest at "
                    f"{min(stamps).isoformat()}; nothing was written",
                )
        if self.layout is not Layout.PLAIN:
            await self.partitions.ensure_batch(
                conn, stamps, bool(batch.untimed), self.connect_aside
            )
        # Timed rows may be older than buckets the rollups already hold: their time ranges are
        # logged in the same transaction (rows taking now() never are: a refresh waits for
        # transactions begun before it, so their now() is in no bucket materialized yet; nor are
        # the rows they replace with dedupe, which have the same ts).
        late = spans(stamps) if stamps and self.rollups else None
        if self.dedupe == "off" and not self.announce and len(batch) < COPY_FROM_ROWS:
            with dedupe.refusing_duplicates():
                await conn.execute(_INSERT_SQL, *(late or ([], [])), *_columns(batch))
            return len(batch)  # one statement, atomic by itself
        if late or (batch.timed and batch.untimed) or self.announce:
            async with conn.transaction():
                if late:
                    await conn.execute(LOG_SQL, *late)
                if self.announce:  # delivered when, and only if, this transaction commits
                    await conn.execute(NOTIFY_SQL)
                return await self._insert(conn, batch)
        return await self._insert(conn, batch)  # one statement is atomic by itself

    async def write_stream(self, conn: Connection, batches: AsyncIterator[Batch]) -> int:
        """Insert the readings of every batch, each written as it comes (so that a body of any
        size is stored in flat memory), all in one transaction: every one or none, even if the
        batches raise after some were written. Return how many were inserted."""
        first = await anext(batches, None)
        second = None if first is None else await anext(batches, None)
        if first is None or second is None:  # one batch at most: write's own atomicity suffices
            return 0 if first is None else await self.write(conn, first)
        async with conn.transaction():  # a savepoint when the caller has a transaction open
            inserted = await self.write(conn, first) + await self.write(conn, second)
            async for batch in batches:
                inserted += await self.write(conn, batch)
        return inserted

    async def _insert(self, conn: Connection, batch: Batch) -> int:
        if self.dedupe != "off":
            return await dedupe.insert(conn, batch, self.dedupe)
        with dedupe.refusing_duplicates():
            await self._copy(conn, batch)
        return len(batch)

    @staticmethod
    async def _copy(conn: Connection, batch: Batch) -> None:
        if batch.timed:
            await conn.copy_records_to_table(
                "readings", records=batch.timed, columns=_TIMED_COLUMNS
            )
        if batch.untimed:
            await conn.copy_records_to_table(
                "readings", records=batch.untimed, columns=_UNTIMED_COLUMNS
            )


def _columns(batch: Batch) -> tuple[list[datetime | None], str, str, list[bytes], str]:
    """The batch's rows as the parameters of _INSERT_SQL, untimed ones with a null ts."""
    rows = (*batch.timed, *((None, *row) for row in batch.untimed))
    stamps, sensors, metadata, values = zip(*rows, strict=True)
    distinct = [json for json in dict.fromkeys(metadata) if json is not None]
    numbers = {json: str(n) for n, json in enumerate(distinct, 1)}
    numbers[None] = "NULL"
    metadata_numbers = "{" + ",".join(map(numbers.__getitem__, metadata)) + "}"
    return list(stamps), _literal(sensors), _literal(values), distinct, metadata_numbers


def _literal(items: Iterable[object]) -> str:
    """An array literal of canonical UUIDs or numbers, whose text holds nothing to quote."""
    return "{" + ",".join(map(str, items)) + "}"


def _upcoming(width: timedelta) -> list[datetime]:
    now = datetime.now(UTC)
    return [now - width, now, now + width]
