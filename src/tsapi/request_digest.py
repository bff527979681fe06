"""Request digests, by which a retry with the same ``Idempotency-Key`` is known to be the same
request: fed a body whole, or as it streams in."""

import hashlib
from collections.abc import AsyncIterator

from starlette.requests import Request


class Digest:
    """What identifies a request's content, which a retry must have the same: a SHA-256 of its
    method, path, query and Content-Type, then of its body. The body is digested decoded (after
    gzip), as it is parsed: a JSON body whole, a streamed one (``tap``) as it arrives; so a body
    is one request whether gzipped or not, in any format."""

    def __init__(self, method: str, path: str, query: str, content_type: str) -> None:
        self._hash = hashlib.sha256()
        for part in (method, path, query, content_type):
            encoded = part.encode()
            self._hash.update(len(encoded).to_bytes(4, "big") + encoded)
        self._tapped: AsyncIterator[bytes] | None = None

    @classmethod
    def of(cls, request: Request) -> "Digest":
        """A request's digest, to be fed its body."""
        content_type = request.headers.get("content-type", "")
        return cls(request.method, request.url.path, request.url.query, content_type)

    def update(self, body: bytes) -> "Digest":
        self._hash.update(body)
        return self

    def tap(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """``chunks``, digested as they pass: a streamed body in flat memory."""
        self._tapped = self._digested(chunks)
        return self._tapped

    async def _digested(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            self._hash.update(chunk)
            yield chunk

    async def value(self) -> bytes:
        """The digest of the whole body. What the tapped chunks have not given yet is read first:
        a replay reads the rest of its body so, to compare it, without parsing or writing it."""
        if self._tapped is not None:
            async for _ in self._tapped:
                pass
        return self._hash.digest()
