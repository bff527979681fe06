"""Choosing, for an aggregate over [start, end), which parts rollups answer and which parts the
raw readings must: the coarsest materialized rollup first, finer ones next, readings for the rest
(unaligned edges, the newest rows, and ranges written late and not yet recomputed)."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from tsapi.rollups import bucket_start

Span = tuple[datetime, datetime]  # [lo, hi)
_MAX_SEGMENTS = 64


@dataclass(frozen=True)
class Segment:
    width: timedelta | None  # None: computed from readings
    lo: datetime
    hi: datetime


def usable_widths(
    widths: Sequence[timedelta], bucket: timedelta, tz: ZoneInfo | None, span: Span
) -> list[timedelta]:
    """Rollup widths whose buckets tile the query's buckets exactly, coarsest first."""
    try:
        offsets = _offsets(tz, span)
    except OverflowError:  # local time at the ends of the calendar: the raw readings answer
        return []
    return sorted(
        (
            width
            for width in widths
            if bucket % width == timedelta(0)
            and all(offset % width == timedelta(0) for offset in offsets)
        ),
        reverse=True,
    )


def plan(
    span: Span,
    widths: Sequence[timedelta],
    materialized: dict[timedelta, datetime],
    pending: Sequence[Span],
) -> list[Segment]:
    remaining = [span]
    segments: list[Segment] = []
    for width in widths:
        blocked = [(bucket_start(lo, width), bucket_start(hi, width) + width) for lo, hi in pending]
        taken: list[Span] = []
        for lo, hi in remaining:
            aligned_lo = _ceil(lo, width)
            aligned_hi = bucket_start(min(hi, materialized.get(width, lo)), width)
            if aligned_lo < aligned_hi:
                taken += _subtract([(aligned_lo, aligned_hi)], blocked)
        segments += [Segment(width, lo, hi) for lo, hi in taken]
        remaining = _subtract(remaining, taken)
    segments += [Segment(None, lo, hi) for lo, hi in remaining]
    if len(segments) > _MAX_SEGMENTS:  # many late ranges: one scan of the readings is simpler
        return [Segment(None, *span)]
    return segments


def _ceil(ts: datetime, width: timedelta) -> datetime:
    start = bucket_start(ts, width)
    return start if start == ts else start + width


def _subtract(spans: Sequence[Span], holes: Sequence[Span]) -> list[Span]:
    result = list(spans)
    for hole_lo, hole_hi in holes:
        cut: list[Span] = []
        for lo, hi in result:
            if hole_hi <= lo or hi <= hole_lo:
                cut.append((lo, hi))
                continue
            if lo < hole_lo:
                cut.append((lo, hole_lo))
            if hole_hi < hi:
                cut.append((hole_hi, hi))
        result = cut
    return sorted(result)


def _offsets(tz: ZoneInfo | None, span: Span) -> set[timedelta]:
    """Every UTC offset the zone has over the span (sampled weekly: none lasts less)."""
    if tz is None:
        return {timedelta(0)}
    lo, hi = span
    samples = {lo, hi}
    step = timedelta(weeks=1)
    at = lo
    while at < hi:
        samples.add(at)
        at += step
    return {ts.astimezone(tz).utcoffset() or timedelta(0) for ts in samples}
