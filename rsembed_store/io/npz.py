"""rs-embed's combined export layout: ``<stem>.npz`` (arrays) beside ``<stem>.json`` (manifest).

The layout ``rs_embed.load_export`` reads (its own tests write it this way):

- ``<stem>.npz``: ``embeddings__<model>`` of shape ``(N, D)`` float32, ``<model>``
  being the model id with every run of characters other than letters, digits and
  ``_`` replaced by one ``_`` (rs-embed's ``sanitize_key``);
- ``<stem>.json``: ``n_items``, ``status``, ``spatials`` (one spec per item, as
  ``{"type": "PointBuffer", "lon", "lat", "buffer_m", ...}``), ``temporal`` (the
  window shared by every item, or null when they differ), and ``models``: one
  entry ``{"model", "status", "embeddings": {"npz_key"}, "metas": [...]}`` whose
  ``metas`` give each item's ``key``, ``window`` and ``request``.

Writing streams the matrix into the zip member (its ``.npy`` header first), so
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


def write_npz(source: Iterator[pa.RecordBatch], path: str, *, rows: int, dim: int, model: str,
              progress: Optional[Callable[[int], None]] = None) -> int:
    """Stream ``rows`` stored rows into ``path`` (npz) and its manifest; returns the rows written."""
    name = f"embeddings__{sanitize_key(model)}"
    spatials, metas, windows = [], [], set()
    written = 0
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open(name + ".npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(
                member, {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False,
                         "shape": (rows, dim)})
            for batch in source:
                n = batch.num_rows
                if written + n > rows:
                    raise SpecError(f"the space changed during the export ({written + n} rows > {rows}); run it again")
                flat = batch.column("vector").values.to_numpy(zero_copy_only=False)
                member.write(np.ascontiguousarray(flat, dtype="<f4").tobytes())
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
    temporal = json.loads(windows.pop()) if len(windows) == 1 else None
    manifest = {"created_at": datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
                "status": "ok", "backend": "rsembed-store", "n_items": written, "temporal": temporal,
                "spatials": spatials,
                "models": [{"model": model, "status": "ok", "embeddings": {"npz_key": name}, "metas": metas}]}
    with open(manifest_path(path), "w", encoding="utf-8") as f:
        json.dump(manifest, f)
    return written


def table_from_npz(path: str, model: Optional[str] = None) -> pa.Table:
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
    with np.load(path) as arrays:
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
