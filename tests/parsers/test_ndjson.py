"""NDJSON: a reading per line, judged as a JSON reading is, bad lines named by number. The fast
path and the line-by-line pass must agree on every body."""

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tsapi import ingest
from tsapi.errors import ApiError
from tsapi.ingest import Batch
from tsapi.parsers.ndjson import NdjsonParser

SENSOR = "6f3e43a4-d1c1-4cb6-b928-0ac0efaf84a5"


def normal(batch: Batch) -> Batch:
    """The batch with its sensors as UUIDs, which the fast path keeps as text."""
    return Batch(
        [
            (ts, uuid.UUID(str(sensor)), metadata, value)
            for ts, sensor, metadata, value in batch.timed
        ],
        [(uuid.UUID(str(sensor)), metadata, value) for sensor, metadata, value in batch.untimed],
    )


def lines(*rows: object) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def test_each_line_is_a_reading_and_blank_lines_are_ignored() -> None:
    body = (
        lines({"sensor": SENSOR, "value": 1.5})
        + b"\n   \r\n"
        + lines(
            {"sensor": SENSOR, "value": "2.50", "ts": "2024-05-01T12:00:00Z", "metadata": {"a": 1}}
        )
    )
    parsed = NdjsonParser().parse(body, 1)
    assert not parsed.errors
    assert normal(parsed.batch) == normal(
        Batch(
            timed=[(datetime(2024, 5, 1, 12, tzinfo=UTC), SENSOR, b'{"a":1}', Decimal("2.50"))],
            untimed=[(SENSOR, None, Decimal("1.5"))],
        )
    )


def test_crlf_line_ends_are_taken() -> None:
    body = lines({"sensor": SENSOR, "value": 1}, {"sensor": SENSOR, "value": 2}).replace(
        b"\n", b"\r\n"
    )
    parsed = NdjsonParser().parse(body, 1)
    assert (len(parsed.batch), parsed.errors) == (2, [])


def test_bad_lines_are_named_by_line_number_with_the_json_rules() -> None:
    body = (
        lines({"sensor": SENSOR, "value": 1})
        + b"\n"
        + lines({"sensor": "not-a-uuid", "value": 1}, {"sensor": SENSOR}, [1, 2], "text")
        + b'{"sensor": "'
        + SENSOR.encode()
        + b'", "value": }\n'
        + lines({"sensor": SENSOR, "value": 1})[:-1]
        + b" "
        + lines({"sensor": SENSOR, "value": 2})
        + lines({"sensor": SENSOR, "value": 1, "ts": "yesterday", "metadata": [1]})
    )
    parsed = NdjsonParser().parse(body, 40)
    found = [(error.line, error.field) for error in parsed.errors]
    assert found == [
        (42, "sensor"),
        (43, "value"),
        (44, None),
        (45, None),
        (46, None),
        (47, None),  # two objects on one line
        (48, "ts"),
        (48, "metadata"),
    ]
    assert parsed.errors[4].reason == "invalid JSON: invalid character at column 61"
    assert len(parsed.batch) == 1  # the valid line, which is not written: the body is refused


@pytest.mark.parametrize(
    "row",
    [
        {"sensor": SENSOR.upper(), "value": 1},
        {"sensor": "{" + SENSOR + "}", "value": "1e3"},
        {"sensor": SENSOR, "value": 1, "ts": "2024-05-01 12:00:00"},
        {"sensor": SENSOR, "value": 1, "metadata": None},
        {"sensor": SENSOR, "value": "1e-16384"},
        {"sensor": SENSOR, "value": 1, "metadata": {"x": "a\u0000"}},
        {"sensor": SENSOR, "value": 1, "ts": "0001-01-01T00:00:00Z"},
    ],
)
def test_the_fast_path_agrees_with_the_json_rules(row: dict[str, object]) -> None:
    body = json.dumps(row).encode()
    parsed = NdjsonParser().parse(body + b"\n", 1)
    try:
        expected = ingest.parse_json(body, 10)
    except ApiError as refused:
        assert [error.field for error in parsed.errors] == [
            error["field"] for error in refused.details["errors"]
        ]
    else:
        assert not parsed.errors
        assert normal(parsed.batch) == normal(expected)
