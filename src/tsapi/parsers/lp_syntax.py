"""The syntax of InfluxDB line protocol, as InfluxData's reference parser reads it
(github.com/influxdata/line-protocol): a line is

    measurement[,tag=value...] field=value[,field=value...] [timestamp]

with backslash escapes of comma and space in the measurement, and of comma, equals sign and
space in tag keys, tag values and field keys (a backslash before any other character is itself);
string field values in double quotes, where \\" and \\\\ are escaped; lines starting with # are
comments. Values are checked by type, and mapped to readings, in lineprotocol.py.
"""

import re
from dataclasses import dataclass

_CONTROL = r"\x00-\x1f\x7f"
# Possessive quantifiers (++, *+): an escape is never taken back to end a token early.
_MEASUREMENT = rf"(?:\\[, ]|\\(?![, ])|[^\\, {_CONTROL}])++"
_KEY = rf"(?:\\[,= ]|\\(?![,= ])|[^\\,= {_CONTROL}])++"
_STRING = r'"(?:[^"\\]|\\.)*+"'
_VALUE = rf'(?:{_STRING}|[^ ,"][^ ,]*+)'
_FIELD = rf"{_KEY}={_VALUE}"

LINE = re.compile(
    rf" *+(?P<head>{_MEASUREMENT}(?:,{_KEY}={_KEY})*+)"
    rf" ++(?P<fields>{_FIELD}(?:,{_FIELD})*+)"
    r"(?: ++(?P<ts>-?[0-9]++))?+ *+",
    re.S,
)
# The common line, without escapes, strings or extra spaces: a quicker match, to the same groups.
_PLAIN = rf'[^ ,=\\"{_CONTROL}]+'
_PLAIN_HEAD = rf'[^ ,\\"#{_CONTROL}][^ ,\\"{_CONTROL}]*(?:,{_PLAIN}={_PLAIN})*'
_PLAIN_VALUE = rf'[^ ,\\"{_CONTROL}]+'
PLAIN_LINE = re.compile(
    rf"(?P<head>{_PLAIN_HEAD})"
    rf" (?P<fields>{_PLAIN}={_PLAIN_VALUE}(?:,{_PLAIN}={_PLAIN_VALUE})*)"
    r"(?: (?P<ts>-?[0-9]+))?"
)
# Whole bodies of such lines with one field each (its value without '='), every line with a
# timestamp or none: one match checks a body that the fast path then cuts up with str methods.
_TIMED = rf"{_PLAIN_HEAD} {_PLAIN}={_PLAIN} -?[0-9]+"
_UNTIMED = rf"{_PLAIN_HEAD} {_PLAIN}={_PLAIN}"
PLAIN_TIMED_BODY = re.compile(rf"(?:{_TIMED}\n)*{_TIMED}")
PLAIN_UNTIMED_BODY = re.compile(rf"(?:{_UNTIMED}\n)*{_UNTIMED}")
FIELD = re.compile(rf"(?P<key>{_KEY})=(?P<value>{_VALUE}),?", re.S)
TAG = re.compile(rf",(?P<key>{_KEY})=(?P<value>{_KEY})")
MEASUREMENT = re.compile(_MEASUREMENT)
_KEY_RE = re.compile(_KEY)
_STRING_RE = re.compile(_STRING, re.S)
_OTHER_VALUE = re.compile(r'[^ ,"][^ ,]*+')
_TIMESTAMP = re.compile(r"-?[0-9]++")
_KEY_ESCAPE = re.compile(r"\\([,= ])")
_MEASUREMENT_ESCAPE = re.compile(r"\\([, ])")


def unescape_key(text: str) -> str:
    return _KEY_ESCAPE.sub(r"\1", text) if "\\" in text else text


def unescape_measurement(text: str) -> str:
    return _MEASUREMENT_ESCAPE.sub(r"\1", text) if "\\" in text else text


@dataclass(frozen=True)
class SyntaxProblem:
    column: int  # 1-based, in characters
    reason: str

    def __str__(self) -> str:
        return f"column {self.column}: {self.reason}"


def diagnose(line: str) -> SyntaxProblem:
    """Why a line that LINE does not match is not line protocol, and where: what the reference
    parser would say."""
    pos = len(line) - len(line.lstrip(" "))
    found = MEASUREMENT.match(line, pos)
    if found is None:
        return SyntaxProblem(pos + 1, f"invalid character {line[pos]!r} at the start of a line")
    pos = found.end()
    while pos < len(line) and line[pos] == ",":
        key = _KEY_RE.match(line, pos + 1)
        if key is None:
            return SyntaxProblem(pos + 2, "expected a tag key after ','")
        if line[key.end() : key.end() + 1] != "=":
            return SyntaxProblem(key.end() + 1, f"expected '=' after tag key {key.group()!r}")
        value = _KEY_RE.match(line, key.end() + 1)
        if value is None:
            return SyntaxProblem(key.end() + 2, f"expected a value for tag {key.group()!r}")
        pos = value.end()
    if pos == len(line):
        return SyntaxProblem(pos + 1, "no fields: a line needs at least one field=value")
    if line[pos] != " ":
        return SyntaxProblem(pos + 1, f"unexpected character {line[pos]!r}")
    pos = len(line) - len(line[pos:].lstrip(" "))
    while True:
        key = _KEY_RE.match(line, pos)
        if key is None:
            return SyntaxProblem(pos + 1, "expected a field key")
        if line[key.end() : key.end() + 1] != "=":
            return SyntaxProblem(key.end() + 1, f"expected '=' after field key {key.group()!r}")
        start = key.end() + 1
        value = (_STRING_RE if line[start : start + 1] == '"' else _OTHER_VALUE).match(line, start)
        if value is None:
            if line[start : start + 1] == '"':
                return SyntaxProblem(
                    start + 1, "the string value is not closed (a string cannot span lines)"
                )
            return SyntaxProblem(start + 1, f"no value for field {key.group()!r}")
        pos = value.end()
        if line[pos : pos + 1] != ",":
            break
        pos += 1
    if pos < len(line) and line[pos] != " ":
        return SyntaxProblem(pos + 1, f"unexpected character {line[pos]!r} after a field value")
    pos = len(line) - len(line[pos:].lstrip(" "))
    stamp = _TIMESTAMP.match(line, pos)
    if stamp is None or (stamp.end() < len(line) and line[stamp.end()] != " "):
        return SyntaxProblem(pos + 1, "invalid timestamp: it must be an integer")
    pos = len(line) - len(line[stamp.end() :].lstrip(" "))
    return SyntaxProblem(pos + 1, "unexpected text after the timestamp")
