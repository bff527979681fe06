"""A ``metadata`` filter: a JSON object that readings' metadata must contain (jsonb ``@>``).

It is checked here against what PostgreSQL's jsonb accepts, so that a filter the database would
refuse is a 400 naming the parameter rather than a failed query.
"""

from decimal import Decimal

import msgspec

from tsapi.errors import ApiError

# PostgreSQL numeric: up to 131072 digits before the decimal point and 16383 after.
_MAX_ADJUSTED_EXPONENT = 131071
_MIN_EXPONENT = -16383
_decoder = msgspec.json.Decoder(float_hook=Decimal)


def parse_containment(name: str, raw: str | None) -> bytes | None:
    """The JSON object text, to be sent as ``$n::jsonb``; a bad one is a 400 naming ``name``."""
    if raw is None:
        return None
    try:
        value = _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"'{name}' is not valid JSON: {exc}", parameter=name) from None
    except RecursionError:
        raise ApiError(400, f"'{name}' is nested too deeply", parameter=name) from None
    if not isinstance(value, dict):
        raise ApiError(
            400, f'\'{name}\' must be a JSON object, like {{"room": "r1"}}', parameter=name
        )
    problem = unstorable(value)
    if problem is not None:
        raise ApiError(400, f"'{name}' {problem}", parameter=name)
    return raw.encode()


def unstorable(value: object) -> str | None:
    """Why jsonb would refuse this decoded JSON, or None."""
    pending = [value]  # walked without recursion: nesting may be as deep as the decoder allows
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str) and "\x00" in item:
            return "cannot contain \\u0000, which PostgreSQL's jsonb refuses"
        elif isinstance(item, Decimal) and not _fits_numeric(item):
            return f"has the number {item}, beyond what PostgreSQL's numeric can hold"
    return None


def _fits_numeric(number: Decimal) -> bool:
    exponent = number.as_tuple().exponent  # an int: JSON has no NaN or infinity
    return number.adjusted() <= _MAX_ADJUSTED_EXPONENT and int(exponent) >= _MIN_EXPONENT
