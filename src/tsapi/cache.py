"""This process's cache of GET answers: kept for ``cache_ttl`` seconds, least recently used out
first beyond ``cache_max_bytes``, and dropped whole whenever any tsapi process writes.

An answer is stored with the generation current when its query began; every invalidation (a
write anywhere, or the invalidation listener going down or coming back) starts a new generation,
so an answer whose query may have missed a write is never served. While the listener is down the
cache is off: nothing would tell it about writes.
"""

import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    etag: str
    generation: int
    expires: float  # time.monotonic()


class ReadCache:
    def __init__(self, ttl: float, max_bytes: int) -> None:
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.generation = 0
        self.live = False  # whether the listener is connected, so that writes are heard of
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()
        self._bytes = 0

    def ticket(self) -> int | None:
        """The generation to store a query's answer under, taken before the query runs; None
        when the answer may not be stored."""
        return self.generation if self.live else None

    def get(self, key: bytes) -> Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if (
            not self.live
            or entry.generation != self.generation
            or entry.expires <= time.monotonic()
        ):
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: bytes, entry: Entry) -> None:
        if not self.live or entry.generation != self.generation:
            return  # a write (or an outage of the listener) came while it was computed
        size = len(key) + len(entry.body)
        if size > self.max_bytes:
            return
        self._drop(key)
        self._entries[key] = entry
        self._bytes += size
        while self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def invalidate(self) -> None:
        self.generation += 1
        self._entries.clear()
        self._bytes = 0

    def set_live(self, live: bool) -> None:
        # Either way, what is cached may have missed writes made while nobody listened.
        self.invalidate()
        self.live = live

    def _drop(self, key: bytes) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= len(key) + len(entry.body)

    def __len__(self) -> int:
        return len(self._entries)
