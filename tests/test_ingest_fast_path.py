"""The fast path of ingest.parse_json checks whole batches at a time; on every body it must agree
with the thorough pass, the authority on what is valid, in what it stores and what it refuses."""

import json
import uuid
from decimal import Decimal

import pytest

from tsapi import ingest
from tsapi.errors import ApiError

SENSOR = "6f3e43a4-d1c1-4cb6-b928-0ac0efaf84a5"

VALUES = [
    "0.3",
    "-0",
    "20.00",
    "1e5",
    "0e-16383",
    "0e-16384",
    "0e131071",
    "0e131072",
    "1e-16383",
    "1e-16384",
    "12.5e-16382",
    "1" + "0" * 1500 + "e-16383",  # more digits than the quick check takes: checked one by one
    "1" + "0" * 1500 + "e-16384",
    "9.99e131071",
    "1e131072",
    "1" * 1200,
    '"12.5"',
    '" 7 "',
    '"NaN"',
    '"-Infinity"',
]

SENSORS = [
    SENSOR,
    SENSOR.upper(),
    SENSOR.replace("-", ""),
    "{" + SENSOR + "}",
    "urn:uuid:" + SENSOR,
    SENSOR[:-1] + "g",
    SENSOR[:-1] + "٣",  # an Arabic-Indic digit: not hex
    SENSOR[:8] + SENSOR[9:] + "-",  # a hyphen out of place
    SENSOR + "\\n",
]

METADATA = [
    "null",
    "{}",
    '{"room": "r1", "n": [1, 2.50]}',
    '{"a": "\\u0000"}',
    '{"a": 1e400000}',
    '{"a": "1e400000"}',
    "[1, 2]",
    '"text"',
    "5",
    "true",
]


def outcome(parse: object, body: bytes) -> object:
    """What parsing answers: the stored rows in a comparable form, or the error."""
    assert callable(parse)
    try:
        batch = parse(body, 1000)
    except ApiError as error:
        return error.status, error.body()
    assert isinstance(batch, ingest.Batch)
    timed = [(ts, uuid.UUID(str(s)), _json(m), str(v)) for ts, s, m, v in batch.timed]
    untimed = [(uuid.UUID(str(s)), _json(m), str(v)) for s, m, v in batch.untimed]
    return timed, untimed


def _json(text: bytes | None) -> object:
    return None if text is None else json.loads(text, parse_float=Decimal)


def assert_agree(body: str) -> None:
    encoded = body.encode()
    assert outcome(ingest.parse_json, encoded) == outcome(ingest._parse_thoroughly, encoded)


@pytest.mark.parametrize("value", VALUES)
def test_values_are_judged_as_the_thorough_pass_does(value: str) -> None:
    assert_agree(f'[{{"sensor": "{SENSOR}", "value": {value}, "ts": "2024-05-01T12:00:00Z"}}]')
    # and among valid ones, where one bad value refuses the whole batch
    rows = [f'{{"sensor": "{SENSOR}", "value": {n}}}' for n in range(50)]
    rows.insert(25, f'{{"sensor": "{SENSOR}", "value": {value}, "metadata": {{"a": 1.50}}}}')
    assert_agree(f"[{','.join(rows)}]")


@pytest.mark.parametrize("sensor", SENSORS)
def test_sensors_are_judged_as_the_thorough_pass_does(sensor: str) -> None:
    assert_agree(f'{{"sensor": "{sensor}", "value": 1}}')
    rows = [f'{{"sensor": "{uuid.UUID(int=n)}", "value": {n}}}' for n in range(50)]
    rows.insert(10, f'{{"sensor": "{sensor}", "value": 2, "ts": "2024-05-01T12:00:00"}}')
    assert_agree(f"[{','.join(rows)}]")


@pytest.mark.parametrize("metadata", METADATA)
def test_metadata_is_judged_as_the_thorough_pass_does(metadata: str) -> None:
    assert_agree(f'{{"sensor": "{SENSOR}", "value": 1, "metadata": {metadata}}}')
    rows = [f'{{"sensor": "{SENSOR}", "value": {n}, "metadata": null}}' for n in range(50)]
    rows.insert(40, f'{{"sensor": "{SENSOR}", "value": 2, "metadata": {metadata}}}')
    assert_agree(f"[{','.join(rows)}]")
