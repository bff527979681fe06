"""Request bodies as a stream of bytes, bounded in size and, when sent with
``Content-Encoding: gzip``, decompressed as they arrive. The limit applies to the decompressed
bytes as well, so a few compressed bytes that would expand a thousandfold hit it."""

import zlib
from collections.abc import AsyncIterator

from starlette.requests import Request

from tsapi.errors import ApiError

# Decompressed output is taken at most this much at a time, so the limit is checked before a
# decompression bomb can fill memory.
_PIECE = 1 << 20
_GZIP = zlib.MAX_WBITS | 16  # zlib's name for a gzip header and trailer around the data
_ENCODINGS = {"": False, "identity": False, "gzip": True, "x-gzip": True}


async def body_chunks(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The body's bytes as they arrive, decompressed; 413 once there are more than ``limit``
    (before reading any if Content-Length says so), 415 for an encoding other than gzip."""
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding not in _ENCODINGS:
        raise ApiError(
            415, f"Content-Encoding {encoding!r} is not supported; send gzip, or no encoding"
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body is {declared} bytes; the limit is {limit}")
    chunks = _bounded(request.stream(), limit, "the body")
    if _ENCODINGS[encoding]:
        chunks = _bounded(_gunzip(chunks), limit, "the decompressed body")
    async for chunk in chunks:
        yield chunk


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, decompressed, refused with 413 as soon as it is known to exceed
    ``limit`` bytes."""
    return b"".join([chunk async for chunk in body_chunks(request, limit)])


async def _bounded(chunks: AsyncIterator[bytes], limit: int, what: str) -> AsyncIterator[bytes]:
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"{what} is over the limit of {limit} bytes")
        if chunk:
            yield chunk


async def _gunzip(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    inflater = zlib.decompressobj(_GZIP)
    async for chunk in chunks:
        pending = chunk
        while True:
            if inflater.eof:  # another gzip member follows: members concatenated are one body
                inflater = zlib.decompressobj(_GZIP)
            try:
                piece = inflater.decompress(pending, _PIECE)
            except zlib.error as exc:
                raise ApiError(400, f"the body is not valid gzip: {exc}") from None
            yield piece
            if inflater.eof:
                pending = inflater.unused_data
                if not pending:
                    break
            else:
                pending = inflater.unconsumed_tail
                # A full piece may leave output inside zlib even with no input pending.
                if not pending and len(piece) < _PIECE:
                    break
    if not inflater.eof:
        raise ApiError(400, "the gzip body is empty or truncated: it ends before its trailer")
