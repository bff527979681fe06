"""Reading as if in one snapshot, without the round trips of a transaction where it can be done.

What an answer's SQL is built from (the rollup state, the late-write log, where readings end) is
read by one statement, and the answer by a second, which returns rows only while what the first
read still holds, checked in its own snapshot: its rows are then that snapshot's answer. An empty
answer cannot tell a failed check from nothing to answer; it is read again, both statements in
one repeatable-read transaction, at the cost of that transaction's BEGIN and COMMIT.
"""

from collections.abc import Awaitable, Callable
from typing import TypeVar

from tsapi.db import Connection

T = TypeVar("T")


async def read_consistently(conn: Connection, read: Callable[[bool], Awaitable[T | None]]) -> T:
    """``read(checked)`` answers, or, when ``checked``, may answer None: not to be trusted."""
    answer = await read(True)
    if answer is None:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            answer = await read(False)
        assert answer is not None, "one snapshot needs no check"
    return answer


def unchanged(expression: str, placeholder: str) -> str:
    """The SQL condition that ``expression`` is still the value it was read as."""
    return f"{expression} IS NOT DISTINCT FROM {placeholder}"
