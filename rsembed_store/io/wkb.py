"""Well-known binary (ISO WKB, 2D) for whole columns: the GeoParquet ``WKB`` encoding.

Reading takes points (-> lon/lat) and polygons (-> their bounds); writing makes
polygons from rings. Both work on numpy arrays over the Arrow buffers: every
geometry of one length is a fixed-size record, so a column is a few reshapes,
not a Python loop. Only what the store needs is covered (no multi-geometries,
no Z/M); anything else is refused with its row number.
"""

from __future__ import annotations

import struct
from typing import List, Tuple

import numpy as np
import pyarrow as pa

from ..errors import SpecError

POINT, POLYGON = 1, 3
_NAMES = {1: "Point", 2: "LineString", 3: "Polygon", 4: "MultiPoint", 5: "MultiLineString", 6: "MultiPolygon",
          7: "GeometryCollection"}


def _buffers(arr: pa.Array) -> Tuple[np.ndarray, np.ndarray]:
    arr = arr.cast(pa.large_binary()) if not pa.types.is_large_binary(arr.type) else arr
    if arr.null_count:
        raise SpecError(f"row {int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])}: "
                        "geometry is null; every row needs a geometry")
    _, off, data = arr.buffers()
    offsets = np.frombuffer(off, dtype=np.int64)[arr.offset: arr.offset + len(arr) + 1]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    return offsets, raw


def _type_error(row: int, raw: np.ndarray, start: int, what: str) -> SpecError:
    head = bytes(raw[start:start + 5])
    if len(head) < 5 or head[0] not in (0, 1):
        return SpecError(f"row {row}: geometry is not WKB (it starts {head!r}); accepted: ISO WKB {what}")
    code = struct.unpack("<I" if head[0] == 1 else ">I", head[1:5])[0]
    name = _NAMES.get(code % 1000, f"type code {code}")
    return SpecError(f"row {row}: geometry is a {name} (WKB code {code}); accepted: 2D {what}")


def geometry_kinds(arr: pa.Array) -> np.ndarray:
    """The WKB geometry type code of each row (1 Point, 3 Polygon, ...)."""
    offsets, raw = _buffers(arr)
    starts = offsets[:-1]
    if len(starts) and (offsets[1:] - starts < 5).any():
        row = int(np.flatnonzero(offsets[1:] - starts < 5)[0])
        raise SpecError(f"row {row}: geometry has {int(offsets[row + 1] - starts[row])} bytes, too short for WKB")
    order = raw[starts]
    b = raw[starts[:, None] + np.arange(1, 5)].astype(np.uint32)
    little = b[:, 0] | b[:, 1] << 8 | b[:, 2] << 16 | b[:, 3] << 24
    big = b[:, 3] | b[:, 2] << 8 | b[:, 1] << 16 | b[:, 0] << 24
    bad = (order != 0) & (order != 1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise _type_error(row, raw, int(starts[row]), "Point or Polygon")
    return np.where(order == 1, little, big).astype(np.int64)


def _doubles(raw: np.ndarray, starts: np.ndarray, at: int, count: int, little: np.ndarray) -> np.ndarray:
    """``count`` doubles from byte ``at`` of each record (either byte order), shape (rows, count)."""
    idx = starts[:, None] + at + np.arange(8 * count)
    b = raw[idx].reshape(len(starts), count, 8)
    b = np.where(little[:, None, None], b, b[:, :, ::-1])
    return np.ascontiguousarray(b).view("<f8").reshape(len(starts), count)


def points_xy(arr: pa.Array) -> Tuple[np.ndarray, np.ndarray]:
    """(x, y) of a column of WKB points."""
    offsets, raw = _buffers(arr)
    kinds = geometry_kinds(arr)
    starts = offsets[:-1]
    bad = (kinds != POINT) | (offsets[1:] - starts != 21)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise _type_error(row, raw, int(starts[row]), "Point")
    xy = _doubles(raw, starts, 5, 2, raw[starts] == 1)
    return xy[:, 0], xy[:, 1]


def polygon_bounds(arr: pa.Array) -> np.ndarray:
    """(minx, miny, maxx, maxy) of the exterior ring of each WKB polygon, shape (rows, 4)."""
    offsets, raw = _buffers(arr)
    kinds = geometry_kinds(arr)
    starts = offsets[:-1]
    if (kinds != POLYGON).any():
        row = int(np.flatnonzero(kinds != POLYGON)[0])
        raise _type_error(row, raw, int(starts[row]), "Polygon")
    little = raw[starts] == 1
    out = np.empty((len(starts), 4))
    lengths = offsets[1:] - starts
    for length in np.unique(lengths):  # one fixed-size record layout per length
        rows = np.flatnonzero(lengths == length)
        n_points = (int(length) - 13) // 16
        if n_points < 4 or 13 + 16 * n_points > length:
            raise SpecError(f"row {int(rows[0])}: polygon of {int(length)} bytes is not a ring of >= 4 points")
        xy = _doubles(raw, starts[rows], 13, 2 * n_points, little[rows]).reshape(len(rows), n_points, 2)
        out[rows] = np.concatenate([xy.min(axis=1), xy.max(axis=1)], axis=1)
    return out


def polygons_from(groups: List[Tuple[np.ndarray, np.ndarray]], n_rows: int) -> pa.Array:
    """WKB polygons for ``n_rows`` rows from ``(row indices, rings of shape (m, points, 2))`` groups
    (closed rings: the last point repeats the first)."""
    lengths = np.zeros(n_rows, dtype=np.int64)
    for rows, ring in groups:
        lengths[rows] = 13 + 16 * ring.shape[1]
    if (lengths == 0).any():
        raise ValueError(f"row {int(np.flatnonzero(lengths == 0)[0])} has no ring")
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    data = np.empty(int(offsets[-1]), dtype=np.uint8)
    for rows, ring in groups:
        m, p = ring.shape[0], ring.shape[1]
        rec = np.empty((m, 13 + 16 * p), dtype=np.uint8)
        rec[:, :13] = np.frombuffer(struct.pack("<BIII", 1, POLYGON, 1, p), dtype=np.uint8)
        rec[:, 13:] = np.ascontiguousarray(ring, dtype="<f8").view(np.uint8).reshape(m, 16 * p)
        data[offsets[rows][:, None] + np.arange(rec.shape[1])] = rec
    return pa.Array.from_buffers(pa.large_binary(), n_rows, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
