"""NDJSON bodies: one reading object per line, as in the JSON array, blank lines ignored."""

import re
from decimal import Decimal

import msgspec

from tsapi import ingest
from tsapi.ingest import Batch, RowError
from tsapi.parsers import LineError, Parsed

_decoder = msgspec.json.Decoder(float_hook=Decimal)
_BYTE_OFFSET = re.compile(r" ?\(byte (\d+)\)")


class NdjsonParser:
    quoted = False

    def parse(self, block: bytes, first_line: int) -> Parsed:
        lines = block.split(b"\n")
        # Lines that are blank but for spaces or a CR count here, and send the block to the
        # line-by-line pass, which ignores them too.
        batch = ingest.parse_lines(block, len(lines) - lines.count(b""))
        if batch is not None:
            return Parsed(batch)
        return _parse_line_by_line(lines, first_line)


def _parse_line_by_line(lines: list[bytes], first_line: int) -> Parsed:
    batch = Batch()
    errors: list[RowError] = []  # each naming its line as its row
    for number, line in enumerate(lines, first_line):
        if len(errors) >= ingest.MAX_REPORTED_ERRORS:
            break
        if not line.strip():
            continue
        try:
            row = _decoder.decode(line)
        except msgspec.DecodeError as exc:
            errors.append(RowError(number, None, f"invalid JSON: {_describe(exc)}"))
        except RecursionError:
            errors.append(RowError(number, None, "invalid JSON: nested too deeply"))
        else:
            ingest.parse_row(number, row, batch, errors)
    return Parsed(batch, [LineError(e.row, e.field, e.reason) for e in errors])


def _describe(exc: msgspec.DecodeError) -> str:
    message = str(exc).removeprefix("JSON is malformed: ")
    if message == "Input data was truncated":
        return "the line ends before the JSON does"
    match = _BYTE_OFFSET.search(message)
    if match is None:
        return message
    return f"{_BYTE_OFFSET.sub('', message)} at column {int(match.group(1)) + 1}"
