"""Change between two windows of one space: per H3 cell, how far its embedding moved.

``change(store, model, from_, to)`` reads the rows of ``model``'s space whose
window lies inside ``from_`` and those whose window lies inside ``to`` (so a
2022 row is never counted as 2023, and a row spanning both years counts in
neither), averages the rows of each H3 cell within each window (a row asked for
an :class:`~rsembed_store.specs.H3Cell` counts for that cell, any other row for
the cell of its centre at the store's resolution, its ``h3`` column), and gives, for every cell present in both, the
cosine distance ``1 - cos(a, b)`` between its two vectors (0: the same
direction, up to 2: opposite). Cosine, whatever the space's metric: it compares
directions and so ignores a change of overall brightness that scales a vector.

The answer is an Arrow table sorted by cell: ``cell`` (int64 H3 index),
``distance`` (float32), ``lon``/``lat`` (float64, the cell's centre). ``within``
and ``where`` filter both windows as they filter a search.
"""

from __future__ import annotations

from datetime import date
from typing import Optional, Tuple

import h3
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import SpecError
from .search import check_where, filter_columns, settings_of, temporal_window, within_clause

CHANGE_SCHEMA = pa.schema([
    pa.field("cell", pa.int64(), nullable=False),
    pa.field("distance", pa.float32(), nullable=False),
    pa.field("lon", pa.float64()),
    pa.field("lat", pa.float64()),
])


def _window_clause(window: Tuple[date, date]) -> str:
    start, end = window
    return (f"CAST(start_date AS DATE) >= date '{start.isoformat()}' AND "
            f"CAST(end_date AS DATE) <= date '{end.isoformat()}'")


def _window(value, name: str) -> Tuple[date, date]:
    if value is None:
        raise SpecError(f"{name} is missing; give a window such as 2022, '2022' or '2022-01-01/2022-07-01'")
    try:
        return temporal_window(value)
    except SpecError as exc:
        err = SpecError(f"{name}: {exc}")
        err.field = name
        raise err from None


def cell_means(ds, clause: str, dim: int) -> Tuple[np.ndarray, np.ndarray]:
    """(sorted unique cells, their mean vectors) of the rows that pass ``clause``."""
    table = ds.to_table(columns=["cell", "h3", "vector"], filter=f"(cell IS NOT NULL OR h3 IS NOT NULL) AND {clause}")
    if table.num_rows == 0:
        return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
    # the request's own H3 cell where it was asked by cell, else the cell of its centre at the store's res
    cells = np.asarray(pc.coalesce(table.column("cell"), table.column("h3")).to_numpy(zero_copy_only=False))
    flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    X = np.asarray(flat, np.float64).reshape(-1, dim)
    ok = np.all(np.isfinite(X), axis=1)
    cells, X = cells[ok].astype(np.int64), X[ok]
    uniq, inverse = np.unique(cells, return_inverse=True)
    sums = np.zeros((len(uniq), dim))
    np.add.at(sums, inverse, X)
    counts = np.bincount(inverse, minlength=len(uniq))[:, None]
    return uniq, (sums / counts).astype(np.float32)


def change(store, model: str, from_, to, *, within=None, where: Optional[str] = None,
           revision: Optional[str] = None) -> pa.Table:
    """Per H3 cell stored in both windows, the cosine distance between its two vectors (see the module
    docstring); ``from_``/``to`` are TemporalSpecs, their dicts, years or ``"START/END"`` strings."""
    a, b = _window(from_, "from"), _window(to, "to")
    info = store.space_for(model, revision)
    ds = store.dataset(info.space)
    extra = []
    if within is not None:
        extra.append(within_clause(within, info.h3_res, (settings_of(ds).get("extent") or {})))
    if where is not None:
        extra.append(f"({check_where(where, filter_columns(ds))})")
    clauses = [" AND ".join([_window_clause(w)] + extra) for w in (a, b)]
    cells_a, va = cell_means(ds, clauses[0], info.dim)
    cells_b, vb = cell_means(ds, clauses[1], info.dim)
    both, ia, ib = np.intersect1d(cells_a, cells_b, assume_unique=True, return_indices=True)
    x, y = va[ia].astype(np.float64), vb[ib].astype(np.float64)
    norms = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
    cos = np.einsum("ij,ij->i", x, y) / np.where(norms > 0, norms, 1.0)
    distance = np.where(norms > 0, 1.0 - np.clip(cos, -1.0, 1.0), np.nan).astype(np.float32)
    keep = np.isfinite(distance)
    both, distance = both[keep], distance[keep]
    lat_lon = np.array([h3.cell_to_latlng(h3.int_to_str(int(c))) for c in both], np.float64).reshape(-1, 2)
    return pa.table({"cell": pa.array(both, pa.int64()), "distance": pa.array(distance, pa.float32()),
                     "lon": pa.array(lat_lon[:, 1]), "lat": pa.array(lat_lon[:, 0])}, schema=CHANGE_SCHEMA)


def change_json(table: pa.Table, maximum: Optional[int] = None) -> dict:
    """The JSON form: ``{"cells": [{"cell": hex, "distance", "lon", "lat"}, ...], "count"}``; more than
    ``maximum`` cells (default :func:`~rsembed_store.limits.max_json_cells`) is a LimitError (HTTP 413)."""
    from ..limits import check_json_cells, max_json_cells

    check_json_cells(table.num_rows, max_json_cells() if maximum is None else maximum)
    cells = table.column("cell").to_pylist()
    dist = table.column("distance").to_pylist()
    lon, lat = table.column("lon").to_pylist(), table.column("lat").to_pylist()
    rows = [{"cell": h3.int_to_str(c), "distance": round(float(d), 6), "lon": x, "lat": y}
            for c, d, x, y in zip(cells, dist, lon, lat)]
    return {"count": len(rows), "cells": rows}


def change_arrow(table: pa.Table) -> bytes:
    """The table as an Arrow IPC stream (what ``/change`` sends with ``format: "arrow"``)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


__all__ = ["CHANGE_SCHEMA", "cell_means", "change", "change_arrow", "change_json"]
