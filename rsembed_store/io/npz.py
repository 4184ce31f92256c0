"""rs-embed's combined export layout: ``<stem>.npz`` or ``<stem>.nc`` (arrays) beside ``<stem>.json`` (manifest).

The layout ``rs_embed.load_export`` reads (its own tests write it this way):

- ``<stem>.npz``: ``embeddings__<model>`` of shape ``(N, D)`` float32, ``<model>``
  being the model id with every run of characters other than letters, digits and
  ``_`` replaced by one ``_`` (rs-embed's ``sanitize_key``);
- ``<stem>.json``: ``n_items``, ``status``, ``spatials`` (one spec per item, as
  ``{"type": "PointBuffer", "lon", "lat", "buffer_m", ...}``), ``temporal`` (the
  window shared by every item, or null when they differ), and ``models``: one
  entry ``{"model", "status", "embeddings": {"npz_key"}, "metas": [...]}`` whose
  ``metas`` give each item's ``key``, ``window`` and ``request``.

The ``.nc`` file holds the same variable with dims ``(point, dim)``, as rs-embed's
netcdf writer names them, in classic NetCDF (``compat.netcdf``: no xarray needed to
write; ``load_export`` reads it with xarray). Writing streams the matrix into the zip
member (its ``.npy`` header first) or after the NetCDF header, so
memory holds one batch of vectors; both files are written to temporary names
and renamed, the manifest last. Reading (``table_from_npz``) turns the pair back
into a table the importer takes (the spatials and windows become columns).
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from datetime import datetime, timezone
from typing import Callable, Iterator, Optional

import numpy as np
import pyarrow as pa

from ..errors import SpecError


def sanitize_key(text: str) -> str:
    """rs-embed's array-name rule: runs of other characters become one ``_``."""
    out = re.sub(r"_+", "_", re.sub(r"[^0-9a-zA-Z_]+", "_", text)).strip("_")
    return out or "item"


def manifest_path(path: str) -> str:
    return os.path.splitext(path)[0] + ".json"


class _NpzSink:
    """The ``(rows, dim)`` float32 matrix streamed into an uncompressed zip member (its ``.npy`` header first)."""

    def __init__(self, path: str, name: str, rows: int, dim: int):
        self._zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        self._member = self._zip.open(name + ".npy", "w", force_zip64=True)
        np.lib.format.write_array_header_1_0(
            self._member, {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False,
                           "shape": (rows, dim)})

    def write(self, vectors: np.ndarray) -> None:
        self._member.write(np.ascontiguousarray(vectors, dtype="<f4").tobytes())

    def close(self) -> None:
        self._member.close()
        self._zip.close()


class _NetcdfSink:
    """The matrix as variable ``name`` (dims ``point``, ``dim``: rs-embed's names) of a classic NetCDF
    file: the header from :func:`rsembed_store.compat.netcdf.header`, then the big-endian rows."""

    def __init__(self, path: str, name: str, rows: int, dim: int):
        from ..compat import netcdf

        attrs = {"Conventions": "CF-1.8", "history": "Created by rsembed_store export (format=netcdf)",
                 "n_items": int(rows)}
        self._fh = open(path, "wb")
        self._fh.write(netcdf.header({name: (("point", "dim"), (rows, dim), np.float32)}, attrs))
        self._bytes = 0

    def write(self, vectors: np.ndarray) -> None:
        raw = np.ascontiguousarray(vectors, dtype=">f4").tobytes()
        self._fh.write(raw)
        self._bytes += len(raw)

    def close(self) -> None:
        self._fh.write(b"\0" * ((4 - self._bytes % 4) % 4))
        self._fh.close()


SINKS = {"npz": _NpzSink, "netcdf": _NetcdfSink}


def write_npz(source: Iterator[pa.RecordBatch], path: str, *, rows: int, dim: int, model: str,
              progress: Optional[Callable[[int], None]] = None, fmt: str = "npz") -> int:
    """Stream ``rows`` stored rows into ``path`` (``fmt`` npz or netcdf) and its manifest; returns the rows
    written. The vectors go out batch by batch; the manifest (spatials, metas) is held until the end."""
    name = f"embeddings__{sanitize_key(model)}"
    spatials, metas, windows = [], [], set()
    written = 0
    sink = SINKS[fmt](path, name, rows, dim)
    try:
        for batch in source:
            n = batch.num_rows
            if written + n > rows:
                raise SpecError(f"the space changed during the export ({written + n} rows > {rows}); run it again")
            sink.write(batch.column("vector").values.to_numpy(zero_copy_only=False))
            for req, key, s, e in zip(batch.column("request").to_pylist(), batch.column("key").to_pylist(),
                                      batch.column("start_date").to_pylist(), batch.column("end_date").to_pylist()):
                d = json.loads(req)
                spatials.append(d["spatial"])
                window = {"start": s.isoformat(), "end": e.isoformat()} if s and e else None
                windows.add(json.dumps(d["temporal"], sort_keys=True))
                metas.append({"key": key, "window": window, "request": req})
            written += n
            if progress:
                progress(n)
        if written != rows:
            raise SpecError(f"the space changed during the export ({written} rows, {rows} counted); run it again")
    finally:
        sink.close()
    temporal = json.loads(windows.pop()) if len(windows) == 1 else None
    manifest = {"created_at": datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
                "status": "ok", "backend": "rsembed-store", "format": fmt, "n_items": written, "temporal": temporal,
                "spatials": spatials,
                "models": [{"model": model, "status": "ok", "embeddings": {"npz_key": name}, "metas": metas}]}
    with open(manifest_path(path), "w", encoding="utf-8") as f:
        json.dump(manifest, f)
    return written


def _arrays(path: str, fmt: Optional[str] = None) -> dict:
    """The arrays of a combined export's data file: npz, or NetCDF (classic here; NetCDF-4 through xarray)."""
    if (fmt or ("netcdf" if path.lower().endswith((".nc", ".netcdf")) else "npz")) == "npz":
        with np.load(path) as arrays:
            return {k: arrays[k] for k in arrays.files}
    from ..compat import netcdf

    try:
        return netcdf.read(path)[0]
    except ValueError as exc:  # NetCDF-4 (HDF5), as rs-embed writes by default with netCDF4 installed
        try:
            import xarray as xr
        except ImportError:
            from ..errors import MissingExtraError

            raise MissingExtraError(f"{path!r}: {exc}; reading NetCDF-4 needs xarray and netCDF4 or h5netcdf: "
                                    "pip install xarray h5netcdf") from None
        with xr.open_dataset(path) as ds:
            return {str(k): np.asarray(ds[k].values) for k in ds.data_vars}


def table_from_npz(path: str, model: Optional[str] = None, fmt: Optional[str] = None) -> pa.Table:
    """The items of a combined rs-embed export as a table for the importer (one model's vectors)."""
    mpath = manifest_path(path)
    if not os.path.exists(mpath):
        raise SpecError(f"{path!r} has no manifest {mpath!r} beside it; rs-embed's combined export writes both")
    with open(mpath, encoding="utf-8") as f:
        manifest = json.load(f)
    entries = [m for m in manifest.get("models", []) if isinstance(m, dict)]
    names = [m.get("model") for m in entries]
    if model is None and len(entries) != 1:
        raise SpecError(f"{mpath!r} holds models {names}; name the one to import (--npz-model)")
    entry = entries[0] if model is None else next((m for m in entries if m.get("model") == model), None)
    if entry is None:
        raise SpecError(f"model {model!r} is not in {mpath!r}; it holds {names}")
    if entry.get("status") not in ("ok", "partial"):
        raise SpecError(f"model {entry.get('model')!r} has status {entry.get('status')!r} in {mpath!r}; nothing to import")
    arrays = _arrays(path, fmt)
    if entry["embeddings"]["npz_key"] not in arrays:
        raise SpecError(f"{path!r} has no array {entry['embeddings']['npz_key']!r} (the manifest's npz_key); "
                        f"it holds {sorted(arrays)}")
    vec = np.asarray(arrays[entry["embeddings"]["npz_key"]])
    if vec.ndim != 2:
        raise SpecError(f"{entry['embeddings']['npz_key']} has shape {vec.shape}; accepted: pooled (N, D) vectors")
    spatials = manifest.get("spatials") or []
    if len(spatials) != len(vec):
        raise SpecError(f"{mpath!r} lists {len(spatials)} spatials for {len(vec)} vectors")
    metas = entry.get("metas") or [{}] * len(vec)
    cols = {k: [] for k in ("spatial_type", "lon", "lat", "buffer_m", "minlon", "minlat", "maxlon", "maxlat", "cell",
                            "start_date", "end_date")}
    shared = manifest.get("temporal")
    for i, sp in enumerate(spatials):
        kind = sp.get("type") or ("BBox" if "minlon" in sp else "H3Cell" if "cell" in sp else "PointBuffer")
        cols["spatial_type"].append(kind)
        for k in ("lon", "lat", "buffer_m", "minlon", "minlat", "maxlon", "maxlat", "cell"):
            cols[k].append(sp.get(k))
        window = (metas[i] or {}).get("window") if i < len(metas) else None
        window = window or _window(shared)
        if window is None:
            raise SpecError(f"item {i}: no window (the manifest's temporal is null and the item has none)")
        cols["start_date"].append(window["start"])
        cols["end_date"].append(window["end"])
    types = {"spatial_type": pa.string(), "cell": pa.string(), "start_date": pa.string(), "end_date": pa.string()}
    table = pa.table({k: pa.array(v, types.get(k, pa.float64())) for k, v in cols.items()})
    flat = pa.array(np.ascontiguousarray(vec, dtype=np.float32).ravel(), pa.float32())
    return table.append_column("vector", pa.FixedSizeListArray.from_arrays(flat, vec.shape[1]))


def _window(temporal) -> Optional[dict]:
    """A manifest temporal (rs-embed's or ours) as ``{"start", "end"}`` of a half-open window."""
    if not isinstance(temporal, dict):
        return None
    if temporal.get("mode") == "year" or (temporal.get("year") is not None and not temporal.get("start")):
        y = int(temporal["year"])
        return {"start": f"{y:04d}-01-01", "end": f"{y + 1:04d}-01-01"}
    if temporal.get("start") and temporal.get("end"):
        return {"start": temporal["start"], "end": temporal["end"]}
    return None
