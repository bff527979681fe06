"""Errors that become JSON answers: a status code and a body naming what is wrong and where."""

from typing import Any


class ApiError(Exception):
    """A client-facing error; ``details`` are extra JSON fields (e.g. ``errors`` for bad rows)."""

    def __init__(self, status: int, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details
        self.headers: dict[str, str] = {}

    def body(self) -> dict[str, Any]:
        return {"error": self.message, **self.details}
