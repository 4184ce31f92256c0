"""H3 cells as 64-bit integers: parsing, parents, descendant ranges, and the same arithmetic in SQL.

The store keeps every H3 cell as an int64 (the ``h3`` and ``cell`` columns), so
containment filters, roll-ups and SQL helpers work on integers instead of
calling h3's native code once per row. This module is the one home of that
arithmetic; the search filters, the maintenance tuner and the DuckDB macros of
:mod:`rsembed_store.query.sql` all use it, and a test runs the macros in DuckDB
on many random cells against the Python functions here.

Layout of an H3 cell index (bit 63 first)::

    0 | mode (4) | reserved (3) | resolution (4, bits 52-55) | base cell (7, bits 45-51)
      | 15 digits of 3 bits, digit r at bits 3*(15-r) .. 3*(15-r)+2

Digits finer than the cell's resolution are all 7; the digits of a child are 0..6.
So the descendants of a cell at a finer resolution share its leading bits and
fill ONE contiguous integer range (:func:`children_range`): ``h3 BETWEEN lo AND hi``
selects exactly the rows under a cell.

Parsing (:func:`cell_id`, :func:`cell_int`) accepts a hex string (any case, an
optional ``0x``) or an int, and checks the value before it reaches h3's native
code, so a negative, 65-bit or non-hex value is a :class:`SpecError` naming it.

>>> cell_id(617700169958293503)
'8928308280fffff'
>>> parent(0x8928308280fffff, 5) == cell_int('85283083fffffff')
True
"""

from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import h3

from .errors import SpecError

RES_SHIFT = 52
MAX_RES = 15
_RES_MASK = 0xF << RES_SHIFT
# every one of the 15 three-bit digits set to 6 (0b110): the largest child digits
_SIXES = int("110" * 15, 2)

_CELL_HEX = re.compile(r"^(?:0x)?[0-9a-f]{1,16}$")
_CELL_EXAMPLE = "8928308280fffff"


# ---------------------------------------------------------------- parsing


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def cell_id(value: Any, where: str = "H3Cell.cell") -> str:
    """An H3 cell id given as a hex string or an int, validated, as h3's lower-case hex string.

    The one check every door uses (specs, search filters, ingest regions), so a
    value h3's native code cannot take (a negative or 65-bit int, a string that
    is not hex) is a :class:`SpecError` naming it (``where`` says which argument),
    never an OverflowError, and two spellings of one cell
    (``'08928308280FFFFF'``, ``'0x8928308280fffff'``, its int) give one id.
    """
    number = None
    if isinstance(value, str):
        text = value.strip().lower()
        if _CELL_HEX.match(text):
            number = int(text, 16)
    elif not isinstance(value, bool):
        try:
            import numpy as np

            if isinstance(value, np.integer):
                value = int(value)
        except ImportError:  # pragma: no cover
            pass
        if isinstance(value, int):
            number = value
        else:
            raise SpecError(f"{where}={_short_repr(value)} must be an H3 cell id: a hex string such as "
                            f"{_CELL_EXAMPLE!r} or its int form {int(_CELL_EXAMPLE, 16)}")
    if number is None or not 0 < number < 2**64 or not h3.is_valid_cell(h3.int_to_str(number)):
        raise SpecError(f"{where}={_short_repr(value)} is not a valid H3 cell id; accepted: a cell index as hex "
                        f"({_CELL_EXAMPLE!r}) or its int form ({int(_CELL_EXAMPLE, 16)}), e.g. from "
                        "h3.latlng_to_cell")
    return h3.int_to_str(number)


def cell_int(value: Any, where: str = "H3 cell") -> int:
    """Like :func:`cell_id`, as the int64 the store keeps (an ``H3Cell`` spec is accepted too)."""
    inner = getattr(value, "cell_int", None)
    if isinstance(inner, int) and not isinstance(value, (str, int)):
        return inner
    return int(cell_id(value, where), 16)


def cell_ids(values: Sequence[Any]) -> List[Optional[str]]:
    """Many cell ids (hex strings, ints or None) at once: each one's hex id, or None where it is not a cell.

    The bulk form of :func:`cell_id` for columns (file import), with the same
    spellings accepted; the caller names the first bad row.
    """
    out: List[Optional[str]] = []
    for v in values:
        if isinstance(v, str):
            text = v.strip().lower()
            ok = _CELL_HEX.match(text) is not None
            number = int(text, 16) if ok else 0
        else:
            ok = isinstance(v, int) and not isinstance(v, bool)
            number = v if ok else 0
        if ok and 0 < number < 2**64:
            text = format(number, "x")
            out.append(text if h3.is_valid_cell(text) else None)
        else:
            out.append(None)
    return out


def to_string(cell: int) -> str:
    """The lower-case hex id of an int cell (no validation; SQL: ``h3_to_string``)."""
    return format(cell, "x")


def from_string(text: str) -> int:
    """The int of a hex id (no validation; SQL: ``h3_from_string``). Use :func:`cell_int` for user input."""
    return int(text.strip(), 16)


# ---------------------------------------------------------------- bit arithmetic


def resolution(cell: int) -> int:
    """The resolution field of an int cell (SQL: ``h3_resolution``)."""
    return (cell >> RES_SHIFT) & 0xF


def _digits_below(res: int) -> int:
    """A mask of the digits finer than ``res`` (all the bits below digit ``res``)."""
    return (1 << (3 * (MAX_RES - res))) - 1


def parent(cell: int, res: int) -> int:
    """The ancestor of a valid int cell at ``res`` (the cell itself at its own resolution).

    Writes ``res`` into the resolution field and sets every finer digit to 7;
    equal to ``h3.cell_to_parent`` for valid cells (SQL: ``h3_parent``).
    """
    own = resolution(cell)
    if not 0 <= res <= own:
        raise ValueError(f"res={res!r} is not accepted for a parent of a resolution-{own} cell; use 0..{own}")
    return (cell & ~_RES_MASK) | (res << RES_SHIFT) | _digits_below(res)


def _descent_mask(cell: int, res: int) -> int:
    """The digit bits that differ between ``cell``'s descendants at ``res``: digits res(cell)+1 .. res."""
    own = resolution(cell)
    if not own <= res <= MAX_RES:
        raise ValueError(f"res={res!r} is coarser than the cell's resolution {own} (or above 15); "
                         f"use {own}..15")
    return _digits_below(own) & ~_digits_below(res)


def child_min(cell: int, res: int) -> int:
    """The smallest int among the descendants of ``cell`` at ``res`` (SQL: ``h3_child_min``)."""
    mask = _descent_mask(cell, res)
    return ((cell & ~_RES_MASK) | (res << RES_SHIFT)) & ~mask


def child_max(cell: int, res: int) -> int:
    """The largest int among the descendants of ``cell`` at ``res`` (SQL: ``h3_child_max``)."""
    mask = _descent_mask(cell, res)
    return child_min(cell, res) | (_SIXES & mask)


def children_range(cell: int, res: int) -> Tuple[int, int]:
    """The inclusive int range holding every descendant of ``cell`` at ``res``.

    H3 keeps resolution digits from the most significant end, so all
    descendants share the cell's leading bits: a containment filter is
    ``h3 BETWEEN lo AND hi``. The range also holds a few ints that are not
    cells (digits of 7 are skipped by real children), never another cell's child.
    """
    return child_min(cell, res), child_max(cell, res)


def next_cell(cell: int, res: int) -> int:
    """The next cell index at ``res`` after ``cell`` in int order (digits count 0..6, base 7).

    Under a pentagon the index it gives may be one of the deleted children (digit 1), which
    only means two ranges there stay apart instead of merging.
    """
    for r in range(res, 0, -1):
        shift = 3 * (MAX_RES - r)
        digit = (cell >> shift) & 7
        if digit < 6:
            return cell + (1 << shift)
        cell &= ~(7 << shift)
    base = (cell >> 45) & 0x7F
    return (cell & ~(0x7F << 45)) | ((base + 1) << 45)


def at_res(cell: int, res: int) -> int:
    """``cell`` itself at or above ``res``; its ancestor at ``res`` when it is finer."""
    return parent(cell, res) if resolution(cell) > res else cell


def cell_ranges(cells: Iterable[int], res: int) -> List[Tuple[int, int]]:
    """Sorted, merged inclusive ranges of the ``res`` descendants of ``cells`` (finer cells: their parent).

    Adjacent ranges (one ends where the next valid cell starts) merge into one.
    """
    ranges = sorted(children_range(at_res(c, res), res) for c in cells)
    merged: List[Tuple[int, int]] = []
    for lo, hi in ranges:
        if merged and lo <= next_cell(merged[-1][1], res):
            if hi > merged[-1][1]:
                merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return merged


# ---------------------------------------------------------------- SQL filters on an int64 column


def ranges_sql(ranges: Sequence[Tuple[int, int]], column: str = "h3") -> str:
    """A filter keeping ``column`` inside any of the inclusive ``ranges`` (what an index can use)."""
    parts = [f"{column} = {lo}" if lo == hi else f"{column} BETWEEN {lo} AND {hi}" for lo, hi in ranges]
    return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"


def prefix_sql(cells: Iterable[int], res: int, column: str = "h3") -> str:
    """Exact descent test without ranges: ``(h3 >> shift) IN (...)``, one term per cell resolution.

    Every value of ``column`` is a cell at ``res``; shifting away the digits
    finer than a cell's resolution leaves the same bits for the cell's range
    start and for every descendant of it. Cells finer than ``res`` count as
    their parent at ``res``.
    """
    by_res: Dict[int, set] = {}
    for c in cells:
        c = at_res(c, res)
        r = resolution(c)
        by_res.setdefault(r, set()).add(child_min(c, res) >> (3 * (MAX_RES - r)))
    parts = []
    for r in sorted(by_res):
        values = ",".join(str(v) for v in sorted(by_res[r]))
        parts.append(f"({column} >> {3 * (MAX_RES - r)}) IN ({values})")
    return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"


# ---------------------------------------------------------------- the same arithmetic as DuckDB macros

# name -> (arguments, body). Each mirrors the Python function of the same name
# without the ``h3_`` prefix; out-of-range resolutions give NULL where Python raises.
# tests/test_h3int.py runs them in DuckDB on random cells against the functions above.
SQL_MACROS: Dict[str, Tuple[str, str]] = {
    "h3_resolution": ("c", f"(c >> {RES_SHIFT}) & 15"),
    # clear the resolution field, write r there, and set every digit finer than r to 7
    "h3_parent": (
        "c, r",
        f"CASE WHEN r < 0 OR r > ((c >> {RES_SHIFT}) & 15) THEN NULL "
        f"ELSE (c & ~(15::BIGINT << {RES_SHIFT})) | (r::BIGINT << {RES_SHIFT}) | ((1::BIGINT << (3 * (15 - r))) - 1) END",
    ),
    # descendants of c at resolution r: digits res(c)+1..r all 0 for the smallest, all 6 for the largest
    "h3_child_min": (
        "c, r",
        f"CASE WHEN r < ((c >> {RES_SHIFT}) & 15) OR r > 15 THEN NULL "
        f"ELSE ((c & ~(15::BIGINT << {RES_SHIFT})) | (r::BIGINT << {RES_SHIFT})) "
        f"& ~(((1::BIGINT << (3 * (15 - ((c >> {RES_SHIFT}) & 15)))) - 1) & ~((1::BIGINT << (3 * (15 - r))) - 1)) END",
    ),
    "h3_child_max": (
        "c, r",
        f"CASE WHEN r < ((c >> {RES_SHIFT}) & 15) OR r > 15 THEN NULL "
        f"ELSE (((c & ~(15::BIGINT << {RES_SHIFT})) | (r::BIGINT << {RES_SHIFT})) "
        f"& ~(((1::BIGINT << (3 * (15 - ((c >> {RES_SHIFT}) & 15)))) - 1) & ~((1::BIGINT << (3 * (15 - r))) - 1))) "
        f"| ({_SIXES}::BIGINT & ((1::BIGINT << (3 * (15 - ((c >> {RES_SHIFT}) & 15)))) - 1) "
        "& ~((1::BIGINT << (3 * (15 - r))) - 1)) END",
    ),
    "h3_to_string": ("c", "lower(printf('%x', c))"),
    "h3_from_string": ("s", "('0x' || trim(s))::BIGINT"),
}


__all__ = [
    "MAX_RES",
    "SQL_MACROS",
    "at_res",
    "cell_id",
    "cell_ids",
    "cell_int",
    "cell_ranges",
    "child_max",
    "child_min",
    "children_range",
    "from_string",
    "next_cell",
    "parent",
    "prefix_sql",
    "ranges_sql",
    "resolution",
    "to_string",
]
