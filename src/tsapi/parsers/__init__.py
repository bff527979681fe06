"""Parsers of line-oriented request bodies (NDJSON, CSV, InfluxDB line protocol). Each turns a
block of whole lines into a batch of valid readings and the problems of its bad lines, named by
line number, so that a body of any size is parsed as it arrives."""

from dataclasses import dataclass, field
from typing import Any, Protocol

from tsapi.ingest import Batch


@dataclass(frozen=True)
class LineError:
    line: int  # 1-based, in the body as sent (decompressed)
    field: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "field": self.field, "reason": self.reason}


@dataclass
class Parsed:
    batch: Batch = field(default_factory=Batch)
    errors: list[LineError] = field(default_factory=list)


class BlockParser(Protocol):
    # CSV records may hold newlines inside quotes: blocks then end only where quotes balance.
    quoted: bool

    def parse(self, block: bytes, first_line: int) -> Parsed:
        """The readings of a block of whole lines, the first of them numbered ``first_line``."""
        ...
