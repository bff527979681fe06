"""CSV: a header naming the columns in any order, then a reading per record, judged as a JSON
reading is; bad records named by the line they start on. Fast path and record-by-record pass
agree."""

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tsapi.errors import ApiError
from tsapi.ingest import Batch
from tsapi.parsers.csv import CsvParser

SENSOR = "6f3e43a4-d1c1-4cb6-b928-0ac0efaf84a5"
TS = datetime(2024, 5, 1, 12, tzinfo=UTC)


def normal(batch: Batch) -> Batch:
    """The batch with its sensors as UUIDs, which the fast path keeps as text."""
    return Batch(
        sorted((ts, uuid.UUID(str(s)), m, v) for ts, s, m, v in batch.timed),
        sorted(((uuid.UUID(str(s)), m, v) for s, m, v in batch.untimed), key=str),
    )


def parse(*blocks: str) -> tuple[Batch, list[tuple[int, str | None]]]:
    parser, batch, errors, line = CsvParser(), Batch(), [], 1
    for block in blocks:
        parsed = parser.parse(block.encode(), line)
        batch.timed += parsed.batch.timed
        batch.untimed += parsed.batch.untimed
        errors += [(error.line, error.field) for error in parsed.errors]
        line += block.count("\n")
    return normal(batch), errors


@pytest.mark.parametrize(
    "header, row",
    [
        ("ts,sensor,value,metadata", f'2024-05-01T12:00:00Z,{SENSOR},1.50,"{{""a"": 1}}"'),
        ("metadata,value,sensor,ts", f'"{{""a"":1}}",1.50,{SENSOR},2024-05-01T14:00:00+02:00'),
        ("\ufeff value , sensor ,ts, metadata", f' 1.50,{SENSOR},2024-05-01 12:00:00,{{"a":1}}'),
    ],
)
def test_columns_in_any_order_with_the_json_forms(header: str, row: str) -> None:
    batch, errors = parse(f"{header}\r\n{row}\r\n")
    assert errors == []
    assert batch == normal(Batch(timed=[(TS, SENSOR, b'{"a":1}', Decimal("1.50"))]))


def test_ts_and_metadata_are_optional_and_empty_cells_mean_now_and_null() -> None:
    batch, errors = parse(f"sensor,value\n{SENSOR},1\n", f"{SENSOR},2\n")
    assert errors == []
    assert [row[2] for row in batch.untimed] == [Decimal(1), Decimal(2)]
    batch, errors = parse(f"sensor,value,ts,metadata\n{SENSOR},3,,\n")
    assert (batch.untimed, errors) == ([(uuid.UUID(SENSOR), None, Decimal(3))], [])


def test_quoted_cells_may_hold_commas_quotes_and_newlines() -> None:
    body = f'sensor,value,metadata\n{SENSOR},1,"{{""note"": ""a, \\""b\\""!"",\n""n"": 1}}"\n'
    batch, errors = parse(body)
    assert errors == []
    assert batch.untimed[0][1] == b'{"note":"a, \\"b\\"!","n":1}'


def test_bad_records_are_named_by_the_line_they_start_on() -> None:
    body = (
        "sensor,value,ts,metadata\n"
        f"{SENSOR},1,,\n"
        "\n"
        f"not-a-uuid,1,,\n"
        f'{SENSOR},,,"{{""a"":\n1}}"\n'
        f"{SENSOR},NaN,yesterday,[1]\n"
        f"{SENSOR},1,,{{bad\n"
        f"{SENSOR},1\n"
        f'{SENSOR},1,"x"y,\n'
        f"{SENSOR},1,0001-01-01T00:00:00Z,\n"
    )
    _, errors = parse(body)
    assert errors == [
        (4, "sensor"),
        (5, "value"),
        (7, "value"),
        (7, "ts"),
        (7, "metadata"),
        (8, "metadata"),
        (9, None),
        (10, None),
        (11, "ts"),
    ]


@pytest.mark.parametrize(
    "header, problem",
    [
        ("sensor,vaule", "unknown column 'vaule'; no 'value' column"),
        ("sensor,value,sensor", "column 'sensor' named twice"),
        ("ts,value", "no 'sensor' column"),
    ],
)
def test_a_bad_header_is_400_naming_the_problem(header: str, problem: str) -> None:
    with pytest.raises(ApiError) as refused:
        parse(f"\n{header}\n{SENSOR},1\n")
    assert refused.value.status == 400
    assert refused.value.message.startswith("line 2: the CSV header must name")
    assert refused.value.message.endswith(problem)


def test_a_body_of_only_a_header_or_nothing_has_no_readings() -> None:
    assert parse("sensor,value\r\n") == (Batch(), [])
    assert parse("", "\n") == (Batch(), [])


def test_invalid_utf8_is_named_by_line() -> None:
    parsed = CsvParser().parse(b"sensor,value\n" + SENSOR.encode() + b",1\xff\n", 1)
    assert [(error.line, error.reason) for error in parsed.errors] == [
        (2, "is not UTF-8 (byte 39)")
    ]
