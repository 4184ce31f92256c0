"""SQL result columns as Python values, including the dates Python cannot hold.

DuckDB dates and timestamps reach far beyond Python's ``datetime`` (years 1 to
9999): ``'infinity'::DATE``, ``'-infinity'::TIMESTAMP``, ``'294247-01-10'::DATE``
or ``'5877642-06-25 (BC)'::DATE`` are valid values, and pyarrow's ``to_pylist``
raises on them. :func:`column_values` returns such a value as the text DuckDB
itself writes for it (``CAST(x AS VARCHAR)``, timestamps with time zone in
UTC): ``"infinity"``, ``"-infinity"``, ``"294247-01-10"``,
``"294247-01-10 04:00:54.775806"``, ``"5877642-06-25 (BC)"``; DuckDB reads
each back with a cast. Every other value is what ``to_pylist`` gives, so the
common path stays one vectorised call. (In an Arrow answer these values stay
as they are: DuckDB's infinities are the type's largest and smallest values.)

>>> column_values(pa.array([2**31 - 1, 0], pa.date32()))
['infinity', datetime.date(1970, 1, 1)]
"""

from __future__ import annotations

from typing import Any, List, Union

import pyarrow as pa

# DuckDB's infinities as Arrow integers
_INFINITY = {pa.types.is_date32: 2**31 - 1, pa.types.is_timestamp: 2**63 - 1}
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_DAY_S = 86_400


def column_values(column: Union[pa.Array, pa.ChunkedArray]) -> List[Any]:
    """The values of one result column as Python objects; dates Python cannot hold come as text."""
    try:
        return column.to_pylist()
    except (OverflowError, ValueError):  # a date or timestamp outside Python's range, somewhere
        return [_value(scalar) for scalar in column]


def _value(scalar: pa.Scalar) -> Any:
    try:
        return scalar.as_py()
    except (OverflowError, ValueError) as exc:
        error = exc
    t = scalar.type
    if pa.types.is_date(t) or pa.types.is_timestamp(t):
        return _temporal_text(scalar)
    if pa.types.is_dictionary(t):
        return _value(scalar.value)
    if pa.types.is_map(t):
        return [(_value(entry["key"]), _value(entry["value"])) for entry in scalar.values]
    if pa.types.is_struct(t):
        return {name: _value(scalar[name]) for name in scalar.keys()}
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return [_value(v) for v in scalar.values]
    raise error  # pragma: no cover - a type pyarrow cannot convert that we do not know


def _temporal_text(scalar: pa.Scalar) -> str:
    t = scalar.type
    if pa.types.is_date32(t) or pa.types.is_date64(t):
        raw = scalar.cast(pa.int64()).as_py() if pa.types.is_date64(t) else scalar.cast(pa.int32()).as_py()
        if pa.types.is_date32(t) and abs(raw) == _INFINITY[pa.types.is_date32]:
            return "infinity" if raw > 0 else "-infinity"
        days = raw // (_DAY_S * 1000) if pa.types.is_date64(t) else raw
        return _date_text(days)
    raw = scalar.value
    if abs(raw) == _INFINITY[pa.types.is_timestamp]:
        return "infinity" if raw > 0 else "-infinity"
    per_second = _PER_SECOND[t.unit]
    days, rest = divmod(raw, _DAY_S * per_second)
    seconds, fraction = divmod(rest, per_second)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    text = f"{_date_text(days)} {hours:02d}:{minutes:02d}:{seconds:02d}"
    if fraction:
        text += f".{fraction:0{len(str(per_second)) - 1}d}".rstrip("0")
    return text + ("+00" if t.tz else "")


def _date_text(days: int) -> str:
    """Days since 1970-01-01 as ``YYYY-MM-DD`` in the proleptic Gregorian calendar, any year."""
    # Howard Hinnant's civil_from_days
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (month <= 2)
    if year < 1:  # 1 BC is year 0
        return f"{1 - year:04d}-{month:02d}-{day:02d} (BC)"
    return f"{year:04d}-{month:02d}-{day:02d}"


__all__ = ["column_values"]
