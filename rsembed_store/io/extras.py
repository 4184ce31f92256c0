"""Columns of an imported file that no role uses, kept in each row's ``meta`` rather than dropped.

An input often carries more than the vector, the place and the window: a tile id,
a cloud fraction, a label. The importer keeps up to :data:`MAX_COLUMNS` such
columns of scalar type (numbers, booleans, strings, dates, timestamps) as
``meta = {"columns": {name: value, ...}}`` on every row, so they can be read back
with SQL (``json_extract(meta, '$.columns.tile_id')``) or from ``store.to_arrow``.
Columns beyond the limit, of other types (lists, structs, binary) and the columns
of our own export that the store derives again (``key``, ``request``, ``bbox``,
...) are not kept; the import result names both lists.

The JSON is built column-wise with Arrow (numbers printed by Arrow, strings escaped
by ``json.dumps`` only where they hold a character JSON must escape), not per row.
"""

from __future__ import annotations

import json
from typing import List, Optional, Tuple

import pyarrow as pa
import pyarrow.compute as pc

MAX_COLUMNS = 16
# our own export's columns that the store derives from the row again: never kept as extras
DERIVED = frozenset({"key", "model", "revision", "request", "bbox", "output", "pooling", "provider", "h3",
                     "cell_res", "created_at", "compute_s", "meta", "grid", "grid_shape", "grid_dtype", "grid_codec"})
_NEEDS_ESCAPE = r'["\\\x00-\x1f]'


def _scalar(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_string(t)
            or pa.types.is_large_string(t) or pa.types.is_date(t) or pa.types.is_timestamp(t))


def choose(schema: pa.Schema, used: List[Optional[str]]) -> Tuple[List[str], List[str]]:
    """``(kept, dropped)``: the extra columns kept in meta (schema order, at most MAX_COLUMNS) and the rest."""
    taken = {u for u in used if u}
    kept, dropped = [], []
    for f in schema:
        if f.name in taken or f.name.lower() in DERIVED:
            continue
        (kept if _scalar(f.type) and len(kept) < MAX_COLUMNS else dropped).append(f.name)
    return kept, dropped


def _literal(col: pa.Array) -> pa.Array:
    """Each value as a JSON literal (string), null as ``null``."""
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    t = col.type
    if pa.types.is_boolean(t):
        text = pc.if_else(col, "true", "false")
    elif pa.types.is_integer(t):
        text = col.cast(pa.string())
    elif pa.types.is_floating(t):
        finite = pc.is_finite(col)  # NaN/inf have no JSON spelling: null
        text = pc.if_else(finite, col.cast(pa.float64()).cast(pa.string()), pa.scalar(None, pa.string()))
    else:
        s = col.cast(pa.string())
        escape = pc.match_substring_regex(s, _NEEDS_ESCAPE)
        if pc.any(escape).as_py():
            values = s.to_pylist()
            text = pa.array([None if v is None else json.dumps(v, ensure_ascii=False) for v in values], pa.string())
        else:
            text = pc.binary_join_element_wise('"', s, '"', "")
    return text.fill_null("null")


def meta_json(batch: pa.RecordBatch, kept: List[str]) -> pa.Array:
    """The ``meta`` column: ``{"columns": {...}}`` of the kept columns, or ``{}`` when none are kept."""
    n = batch.num_rows
    if not kept:
        return pa.repeat("{}", n)
    parts: list = ['{"columns":{']
    for i, name in enumerate(kept):
        parts.append(("," if i else "") + json.dumps(name) + ":")
        parts.append(_literal(batch.column(name)))
    parts.append("}}")
    arrays = [p if isinstance(p, pa.Array) else pa.repeat(p, n) for p in parts]
    return pc.binary_join_element_wise(*arrays, "")

