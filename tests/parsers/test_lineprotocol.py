"""Line protocol: the full syntax as InfluxData's reference parser reads it, each numeric field a
reading of the sensor its series maps to, and bad lines named with what is wrong and where."""

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tsapi.parsers.lineprotocol import SERIES_NAMESPACE, LineProtocolParser

NS = 1
T0 = 1714564800123456789  # 2024-05-01T12:00:00.123456789Z


Row = tuple[datetime | None, str, dict[str, object], Decimal]


def parse(text: str, nanoseconds: int = NS) -> list[Row]:
    parsed = LineProtocolParser({"bucket": "b"}, nanoseconds).parse(text.encode(), 1)
    assert not parsed.errors, parsed.errors
    rows: list[Row] = [(ts, str(s), json.loads(m or b""), v) for ts, s, m, v in parsed.batch.timed]
    return rows + [(None, str(s), json.loads(m or b""), v) for s, m, v in parsed.batch.untimed]


def errors(text: str) -> list[tuple[int, str | None, str]]:
    parsed = LineProtocolParser({"db": "d"}, NS).parse(text.encode(), 1)
    return [(error.line, error.field, error.reason) for error in parsed.errors]


def sensor(measurement: str, tags: dict[str, str], field: str) -> str:
    """The documented mapping, computed independently of tsapi's code."""
    key = json.dumps(
        [measurement, sorted(map(list, tags.items())), field],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return str(uuid.uuid5(SERIES_NAMESPACE, key))


def test_each_numeric_field_is_a_reading_of_its_series_sensor() -> None:
    rows = parse(
        f'cpu,region=eu,host=a idle=98.5,user=3i,free=18446744073709551615u,on=t,note="x" {T0}'
    )
    ts = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    tags = {"host": "a", "region": "eu"}
    assert rows == [
        (
            ts,
            sensor("cpu", tags, field),
            {"measurement": "cpu", "tags": tags, "field": field, "bucket": "b"},
            value,
        )
        for field, value in [
            ("idle", Decimal("98.5")),
            ("user", Decimal(3)),
            ("free", Decimal(2**64 - 1)),
            ("on", Decimal(1)),
        ]
    ]


def test_the_tag_order_does_not_change_the_sensor() -> None:
    first, second = parse("m,b=2,a=1 v=1\nm,a=1,b=2 v=2")
    assert first[1] == second[1]
    assert first[2]["tags"] == {"a": "1", "b": "2"}


@pytest.mark.parametrize(
    "line, measurement, tags, field",
    [
        (
            r"my\ cpu\,x,host\ name=a\,b\=c my\ field=1",
            "my cpu,x",
            {"host name": "a,b=c"},
            "my field",
        ),
        (r"a\b,t=x\y f\=1=1", r"a\b", {"t": r"x\y"}, "f=1"),
        (r"m=1,t=a\\b f=1", "m=1", {"t": "a\\\\b"}, "f"),
        ("温度,場所=東京 値=1", "温度", {"場所": "東京"}, "値"),
        ('q"uote,t="a" "f"=1', 'q"uote', {"t": '"a"'}, '"f"'),
    ],
)
def test_escapes_and_unusual_characters_in_names(
    line: str, measurement: str, tags: dict[str, str], field: str
) -> None:
    [(_, found, metadata, _)] = parse(line)
    assert metadata == {"measurement": measurement, "tags": tags, "field": field, "bucket": "b"}
    assert found == sensor(measurement, tags, field)


@pytest.mark.parametrize(
    "value, stored",
    [
        ("1", "1"),
        ("-1.50", "-1.50"),
        ("1.", "1"),
        (".5", "0.5"),
        ("-.5e3", "-5E+2"),
        ("1E-5", "0.00001"),
        ("-9223372036854775808i", "-9223372036854775808"),
        ("0u", "0"),
        ("T", "1"),
        ("false", "0"),
        ("FALSE", "0"),
    ],
)
def test_field_values_of_every_type(value: str, stored: str) -> None:
    [(_, _, _, found)] = parse(f"m f={value}")
    assert found == Decimal(stored)


def test_strings_with_escapes_commas_and_spaces_are_skipped() -> None:
    rows = parse(r'm s="a \"quoted\", spaced \\ string",n=2 ' + str(T0))
    assert [(row[2]["field"], row[3]) for row in rows] == [("n", Decimal(2))]
    assert parse('m s="only a string"') == []


def test_comments_blank_lines_spaces_and_crlf() -> None:
    rows = parse("# a comment\r\n\r\n   \n  m  f=1   \r\n   # another\nm f=2 1  \n")
    assert [row[3] for row in rows] == [Decimal(2), Decimal(1)]


@pytest.mark.parametrize(
    "nanoseconds, stamp, expected",
    [
        (1, "1714564800123456789", "2024-05-01T12:00:00.123456"),
        (1, "-1", "1969-12-31T23:59:59.999999"),  # truncated toward the past
        (1_000, "1714564800123456", "2024-05-01T12:00:00.123456"),
        (1_000_000, "1714564800123", "2024-05-01T12:00:00.123000"),
        (10**9, "1714564800", "2024-05-01T12:00:00"),
        (60 * 10**9, "28576080", "2024-05-01T12:00:00"),
        (3600 * 10**9, "476268", "2024-05-01T12:00:00"),
    ],
)
def test_timestamps_in_each_precision_to_the_microsecond(
    nanoseconds: int, stamp: str, expected: str
) -> None:
    [(ts, _, _, _)] = parse(f"m f=1 {stamp}", nanoseconds)
    assert ts == datetime.fromisoformat(expected).replace(tzinfo=UTC)


def test_a_line_without_timestamp_takes_the_databases_now() -> None:
    [(ts, _, _, _)] = parse("m f=1")
    assert ts is None


@pytest.mark.parametrize(
    "line, field, reason",
    [
        ("m", None, "column 2: no fields: a line needs at least one field=value"),
        ("m,t f=1", None, "column 4: expected '=' after tag key 't'"),
        ("m,t= f=1", None, "column 5: expected a value for tag 't'"),
        ("m, f=1", None, "column 3: expected a tag key after ','"),
        (",t=1 f=1", None, "column 1: invalid character ',' at the start of a line"),
        ("m f", None, "column 4: expected '=' after field key 'f'"),
        ("m f=", None, "column 5: no value for field 'f'"),
        (
            'm f="open',
            None,
            "column 5: the string value is not closed (a string cannot span lines)",
        ),
        ('m f="s"x', None, "column 8: unexpected character 'x' after a field value"),
        ("m f=1 12a", None, "column 7: invalid timestamp: it must be an integer"),
        ("m f=1 12 x", None, "column 10: unexpected text after the timestamp"),
        ("m f=1\tg=2", "f", "'1\\tg=2' is not a valid field value"),
        ("m f=1.2.3", "f", "'1.2.3' is not a valid field value"),
        ("m f=NaN", "f", "'NaN' is not a valid field value"),
        ("m f=+1", "f", "'+1' is not a valid field value"),
        ("m f=1_000", "f", "'1_000' is not a valid field value"),
        ("m f=1e400", "f", "1e400 is out of range"),
        ("m f=1e-20000", "f", "1e-20000 is out of range"),
        (
            "m f=9223372036854775808i",
            "f",
            "9223372036854775808i is out of range for a 64-bit integer",
        ),
        ("m f=-1u", "f", "-1u is out of range for a 64-bit unsigned integer"),
        ("m f=yes", "f", "'yes' is not a valid field value"),
        ("m f=tru", "f", "'tru' is not a boolean (t, true, f, false…)"),
        ("m,a=1,a=2 f=1", None, "tag 'a' appears twice"),
        ("m f=1,f=2", "f", "this field key appears twice in the line"),
        (
            "m f=1 9223372036854775807",
            None,
            "timestamp 9223372036854775807 is out of range (InfluxDB's, 1677 to 2262)",
        ),
    ],
)
def test_bad_lines_say_what_is_wrong_and_where(line: str, field: str | None, reason: str) -> None:
    assert errors(f"m ok=1\n{line}\n") == [(2, field, reason)]


def test_every_bad_line_is_reported_and_invalid_utf8_too() -> None:
    parsed = LineProtocolParser({"db": "d"}, NS).parse(b"a\nm f=1\nb\nm f=\xff\n", 7)
    assert [(error.line, error.reason) for error in parsed.errors] == [
        (7, "column 2: no fields: a line needs at least one field=value"),
        (9, "column 2: no fields: a line needs at least one field=value"),
        (10, "is not UTF-8 (byte 5)"),
    ]
    assert [
        error.line for error in LineProtocolParser({"db": "d"}, NS).parse(b"a\nb\n", 7).errors
    ] == [7, 8]


@pytest.mark.parametrize(
    "lines",
    [
        [f"m,t={n % 3} f={n}.5 {T0 + n}" for n in range(50)],
        [f"m,t={n % 3} f=-{n}.25" for n in range(50)],
        [f"m,t={n % 3},u=x f=.{n} {T0}" for n in range(50)],
        [f"m=x,t=a f={n} {-n * 10**15}" for n in range(50)],  # before 1970; '=' in a measurement
        [f"m f={n} {T0}" if n % 2 else f"m f={n}" for n in range(50)],  # some untimed
        [f"m f={n} {T0 + n}" if n % 2 else f"m f={n}i {T0}" for n in range(50)],  # integers
        [f"m f={n}.0" if n else "m f=1 1" for n in range(50)],  # one timed line, first
    ],
)
def test_a_block_parsed_at_once_reads_as_line_by_line(lines: list[str]) -> None:
    at_once = parse("\n".join(lines) + "\n")
    by_line = parse("# a comment sends the block line by line\n" + "\n".join(lines))
    assert at_once == by_line
    assert len(at_once) == 50


@pytest.mark.parametrize(
    "line",
    [
        "m f=1 1",
        "m f=1",
        "m f=1i 1",
        "m f=t",
        "m f=1e400",
        "m f=+1",
        "m f=1_0",
        "m f=1=2",
        "m,a=1,a=2 f=1",
        "m f=1 9223372036854775807",
        "m f=1 -9223372036854775808",
    ],
)
def test_what_the_block_pass_leaves_to_the_line_pass_is_judged_the_same(line: str) -> None:
    mixed = ["m f=2 5", line, "m f=3 6"]
    parsed = LineProtocolParser({"db": "d"}, NS).parse("\n".join(mixed).encode(), 1)
    alone = LineProtocolParser({"db": "d"}, NS).parse(f"#\n{line}".encode(), 1)
    assert [(e.line - 1, e.reason) for e in parsed.errors] == [
        (e.line - 1, e.reason) for e in alone.errors
    ]
    assert len(parsed.batch) == 2 + len(alone.batch)
