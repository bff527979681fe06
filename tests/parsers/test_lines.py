"""Cutting a body into blocks of whole lines: every line once, numbered, never cut in two, and
CSV records never cut inside quotes."""

import asyncio
from collections.abc import AsyncIterator

import pytest

from tsapi.errors import ApiError
from tsapi.parsers import lines
from tsapi.parsers.lines import line_blocks, utf8_errors


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def blocks(data: bytes, size: int, quoted: bool = False) -> list[tuple[int, bytes]]:
    async def collect() -> list[tuple[int, bytes]]:
        return [block async for block in line_blocks(_chunks(data, size), quoted)]

    return asyncio.run(collect())


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lines, "BLOCK_BYTES", 64)
    monkeypatch.setattr(lines, "MAX_RECORD_BYTES", 1024)


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_blocks_hold_whole_lines_numbered_from_their_first(chunk: int) -> None:
    data = b"".join(b"line %d with some text\n" % n for n in range(1, 101)) + b"last"
    found = blocks(data, chunk)
    assert b"".join(block for _, block in found) == data
    for first, block in found[:-1]:
        assert block.endswith(b"\n")
        assert block.startswith(b"line %d " % first)
    assert len(found) > 1


def test_a_csv_block_never_ends_inside_quotes() -> None:
    record = b'a,"cell with\nnewlines\nand ""quotes"" inside",b\n'
    data = record * 40
    found = blocks(data, 5, quoted=True)
    assert b"".join(block for _, block in found) == data
    for first, block in found:
        assert block.count(b'"') % 2 == 0
        assert (first - 1) % 3 == 0  # each record spans three lines


def test_a_line_longer_than_the_limit_is_413_naming_it() -> None:
    data = b"short\n" + b"x" * 2000 + b"\n"
    with pytest.raises(ApiError) as refused:
        blocks(data, 100)
    assert refused.value.status == 413
    assert "line 2" in refused.value.message


def test_an_unclosed_quote_in_csv_is_413_at_the_limit() -> None:
    data = b'a,"never closed\n' + b"b,c\n" * 500
    with pytest.raises(ApiError) as refused:
        blocks(data, 100, quoted=True)
    assert refused.value.status == 413
    assert "quoted cell never closed" in refused.value.message


def test_lines_that_are_not_utf8_are_named() -> None:
    errors = utf8_errors(b"fine\nbad \xff here\n\xc3\n", 10)
    assert [(error.line, error.reason) for error in errors] == [
        (11, "is not UTF-8 (byte 5)"),
        (12, "is not UTF-8 (byte 1)"),
    ]
