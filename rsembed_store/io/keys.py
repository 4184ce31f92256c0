"""Content keys for whole columns at once, equal to :func:`rsembed_store.keys.resolve`'s.

A key is the SHA-256 of a request's canonical JSON (``docs/keys.md``). For one
model, spatial kind and window kind every canonical JSON has the same text
around a few numbers and dates, so the text is taken once from ``resolve()`` on
a probe request, cut at those values into a template, and filled column-wise:

- a float is written as ``repr(round(x, digits))`` is (the canonical recipe:
  degrees 7 decimals, metres 3, ``-0.0`` folded into ``0.0``): the rounded
  integer ``k = round(x * 10**digits)`` is exact unless ``x * 10**digits`` lies
  within 1e-6 of a half (then Python's own ``round`` decides), and the nearest
  double to ``k / 10**digits`` prints as ``k`` with the point moved and trailing
  zeros dropped (values under 1e-4, which Python prints with an exponent, also
  go through Python);
- dates print as ISO ``YYYY-MM-DD``, integers and H3 cells as themselves;
- the pieces are joined by Arrow; only the SHA-256 itself runs per value (hashlib).

Tests compare every key with ``resolve()`` on random values and rounding edges.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Dict, List, Mapping, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..keys import Request, _round, resolve
from ..specs import BBox, H3Cell, PointBuffer, TemporalSpec

# probe values that cannot occur by accident in a canonical JSON
_PROBE_NUM = {"lon": 1.2345671, "lat": 2.3456782, "buffer_m": 345.678, "minlon": 3.4567893,
              "minlat": 4.5678904, "maxlon": 5.6789015, "maxlat": 6.7890126}
_PROBE_CELL = "8f2830828052d25"
_PROBE_DATES = {"start": "1234-05-06", "end": "1234-06-07"}
_DIGITS = {"lon": 7, "lat": 7, "minlon": 7, "minlat": 7, "maxlon": 7, "maxlat": 7, "buffer_m": 3}

SPATIAL_FIELDS = {"PointBuffer": ("lon", "lat", "buffer_m"), "BBox": ("minlon", "minlat", "maxlon", "maxlat"),
                  "H3Cell": ("cell",)}
TEMPORAL_FIELDS = {"year": ("year",), "range": ("start", "end")}


def format_float(values: np.ndarray, name: str) -> pa.Array:
    """``json.dumps(round(x, digits))`` of each value, as the key recipe writes field ``name``."""
    digits = _DIGITS[name]
    x = np.asarray(values, dtype=np.float64)
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x))[0])
        raise ValueError(f"{name}={x[bad]!r} at position {bad} is not a finite number")
    scale = 10.0 ** digits
    y = x * scale
    k = np.rint(y)
    frac = y - np.floor(y)
    odd = (np.abs(frac - 0.5) < 1e-6) | (np.abs(k) >= 2.0 ** 52)
    k = k.astype(np.int64)
    odd |= (k != 0) & (np.abs(k) < 10 ** (digits - 4))  # under 1e-4: Python prints an exponent
    a = np.abs(k)
    whole = pa.array(a // int(scale)).cast(pa.string())
    part = pc.utf8_rtrim(pc.utf8_lpad(pa.array(a % int(scale)).cast(pa.string()), digits, "0"), "0")
    part = pc.if_else(pc.equal(part, ""), "0", part)
    sign = pc.if_else(pa.array(k < 0), "-", "")
    out = pc.binary_join_element_wise(sign, whole, ".", part, "")
    if odd.any():
        idx = np.flatnonzero(odd)
        fixed = [json.dumps(_round(name, float(x[i]))) for i in idx]
        out = pc.replace_with_mask(out, pa.array(odd), pa.array(fixed, pa.string()))
    return out


def format_dates(values) -> pa.Array:
    """ISO ``YYYY-MM-DD`` of date32 values (years 1..9999, zero-padded as ``date.isoformat``)."""
    arr = pa.array(values, pa.date32()) if not isinstance(values, (pa.Array, pa.ChunkedArray)) else values
    return arr.cast(pa.string())  # Arrow prints date32 as ISO with a 4-digit, zero-padded year


@dataclass(frozen=True)
class KeyTemplate:
    """The canonical JSON of one (model, spatial kind, window kind), cut at its values."""

    model: str
    revision: str
    provider: object
    spatial: str
    temporal: str  # "year" or "range", as the model resolves windows
    pieces: Tuple[str, ...]  # literal text; a value goes between two pieces
    slots: Tuple[str, ...]  # field name of each value, in order

    @classmethod
    def for_model(cls, model: str, spatial: str, temporal: str = "year") -> "KeyTemplate":
        """The template of ``model`` for ``spatial`` ("PointBuffer", "BBox", "H3Cell") requests
        whose window is given as a ``temporal`` ("year" or "range"); the model decides how the
        window is keyed (a composite model keys a year as the range it covers)."""
        if spatial not in SPATIAL_FIELDS:
            raise ValueError(f"spatial kind {spatial!r}; accepted: {sorted(SPATIAL_FIELDS)}")
        p = _PROBE_NUM
        sp = {"PointBuffer": lambda: PointBuffer(p["lon"], p["lat"], p["buffer_m"]),
              "BBox": lambda: BBox(p["minlon"], p["minlat"], p["maxlon"], p["maxlat"]),
              "H3Cell": lambda: H3Cell(_PROBE_CELL)}[spatial]()
        tp = TemporalSpec.year(1234) if temporal == "year" else TemporalSpec.range(**_PROBE_DATES)
        r = resolve(Request(model, sp, tp))
        text = r.canonical
        marks: Dict[str, str] = {}
        for name in SPATIAL_FIELDS[spatial]:
            marks[name] = f'"{name}":' + (f'"{_PROBE_CELL}"' if name == "cell" else json.dumps(p[name]))
        if r.temporal.mode == "year":
            marks["year"] = '"year":1234'
            kind = "year"
        else:
            start, end = (("1234-01-01", "1235-01-01") if temporal == "year" else
                          (_PROBE_DATES["start"], _PROBE_DATES["end"]))
            marks["start"], marks["end"] = f'"start":"{start}"', f'"end":"{end}"'
            kind = "range"
        found = []
        for name, mark in marks.items():
            if text.count(mark) != 1:
                raise RuntimeError(f"the canonical request layout changed ({mark!r} not once in {text!r}); "
                                   "update rsembed_store/io/keys.py to the key recipe")
            found.append((text.index(mark), name, mark))
        found.sort()
        pieces: List[str] = []
        slots: List[str] = []
        pos = 0
        for at, name, mark in found:
            head, quote = mark.split(":", 1)[0] + ":", '"' if name in ("cell", "start", "end") else ""
            pieces.append(text[pos:at] + head + quote)
            slots.append(name)
            pos = at + len(mark) - len(quote)
        pieces.append(text[pos:])
        return cls(r.model, r.revision, r.provider, spatial, kind, tuple(pieces), tuple(slots))

    def canonical(self, columns: Mapping[str, pa.Array]) -> pa.Array:
        """The canonical JSON of every row; ``columns`` holds one formatted string array per slot."""
        parts: List[object] = []
        for piece, slot in zip(self.pieces, self.slots):
            parts += [piece, columns[slot]]
        parts.append(self.pieces[-1])
        return pc.binary_join_element_wise(*parts, "")


def format_columns(template: KeyTemplate, values: Mapping[str, object]) -> Dict[str, pa.Array]:
    """The slot strings from raw columns: floats (numpy), ``cell`` (hex strings), ``year``
    (ints) and ``start``/``end`` (date32; a ``year`` window's range is Jan 1 .. next Jan 1)."""
    out: Dict[str, pa.Array] = {}
    for slot in template.slots:
        if slot in _DIGITS:
            x = np.asarray(values[slot], dtype=np.float64)
            if len(x) > 1 and (x == x[0]).all():  # a constant (e.g. --buffer-m): format it once
                out[slot] = pa.repeat(format_float(x[:1], slot)[0], len(x))
            else:
                out[slot] = format_float(x, slot)
        elif slot == "cell":
            out[slot] = pa.array(values["cell"], pa.string())
        elif slot == "year":
            out[slot] = pa.array(np.asarray(values["year"], dtype=np.int64)).cast(pa.string())
        else:
            out[slot] = format_dates(values[slot])
    return out


def sha256_hex(texts: pa.Array) -> pa.Array:
    """SHA-256 (64 lower-case hex digits) of each UTF-8 string.

    hashlib per value: measured at 0.7 us a row for these ~600-byte texts, half the
    time of DuckDB's ``sha256`` over the same Arrow column (which pays a connection
    and a result conversion per batch)."""
    sha = hashlib.sha256
    return pa.array([sha(b).hexdigest() for b in texts.cast(pa.binary()).to_pylist()], pa.string())


def keys_for(template: KeyTemplate, values: Mapping[str, object]) -> Tuple[pa.Array, pa.Array]:
    """(canonical JSON, key) of every row."""
    text = template.canonical(format_columns(template, values))
    return text, sha256_hex(text)


__all__ = ["KeyTemplate", "format_float", "format_dates", "format_columns", "keys_for", "sha256_hex",
           "SPATIAL_FIELDS", "TEMPORAL_FIELDS"]
