"""Cutting a stream of bytes into blocks of whole lines, each numbered by its first line, so
that a body is parsed a block at a time in flat memory whatever its size."""

from collections.abc import AsyncGenerator, AsyncIterator

from tsapi.errors import ApiError
from tsapi.ingest import MAX_REPORTED_ERRORS
from tsapi.parsers import LineError

BLOCK_BYTES = 512 * 1024  # a block is cut once this much has arrived: about 5,000 readings
MAX_RECORD_BYTES = 16 * 1024 * 1024  # a longer line (or CSV record) is refused


async def line_blocks(
    chunks: AsyncIterator[bytes], quoted: bool = False
) -> AsyncGenerator[tuple[int, bytes]]:
    """(first line number, block) pairs; every block but the last ends with a newline. With
    ``quoted`` (CSV), a block ends only where double quotes balance, so that a quoted cell
    holding newlines is never cut."""
    pending = bytearray()
    line = 1
    async for chunk in chunks:
        pending += chunk
        if len(pending) < BLOCK_BYTES:
            continue
        cut = _cut(pending, quoted)
        if not cut:
            if len(pending) > MAX_RECORD_BYTES:
                what = "record (a quoted cell never closed?)" if quoted else "line"
                raise ApiError(413, f"line {line}: a {what} longer than {MAX_RECORD_BYTES} bytes")
            continue
        block = bytes(pending[:cut])
        del pending[:cut]
        yield line, block
        line += block.count(b"\n")
    if pending:
        yield line, bytes(pending)


def _cut(data: bytearray, quoted: bool) -> int:
    """Where the last whole line (or record) ends; 0 if none does yet."""
    cut = data.rfind(b"\n") + 1
    # Every block starts outside quotes: a line end is a record end if the quotes before it
    # balance (RFC 4180 doubles a quote inside a quoted cell, which keeps the count even).
    while quoted and cut and data.count(b'"', 0, cut) % 2:
        cut = data.rfind(b"\n", 0, cut - 1) + 1
    return cut


def utf8_errors(block: bytes, first_line: int) -> list[LineError]:
    """The lines of a block that are not UTF-8."""
    errors = []
    for number, line in enumerate(block.split(b"\n"), first_line):
        try:
            line.decode()
        except UnicodeDecodeError as exc:
            errors.append(LineError(number, None, f"is not UTF-8 (byte {exc.start + 1})"))
    return errors[:MAX_REPORTED_ERRORS]
