"""rs-embed's ``export_batch`` over the store, and ``load_export`` for the files it writes.

The files follow rs-embed 0.3.1's layouts (``rs_embed/writers.py``,
``pipelines/point_payload.py``, ``pipelines/combined_flow.py``, read back by
``rs_embed/load.py``), so ``rs_embed.load_export`` reads them:

- combined: ``<out_file>.npz`` (or ``.nc``) with ``embeddings__<model>`` of shape
  ``(N, D)`` or ``(N, D, H, W)`` (ragged ``embedding__<model>__<00012>`` keys plus
  ``indices`` when some points failed), and ``<out_file>.json``: ``created_at``,
  ``status``, ``backend``, ``device``, ``n_items``, ``temporal``, ``output``,
  ``spatials``, ``models`` (``model``, ``sensor``, ``status``, ``embeddings``,
  ``metas``, ``inputs``), ``summary``, ``request_fingerprint``, ``npz_path`` /
  ``nc_path`` and the key list;
- per item: ``<out_dir>/<name>.npz`` + ``<name>.json`` per spatial (names default to
  ``p00000``...), with ``embedding__<model>`` and a manifest carrying
  ``point_index``, ``spatial`` and, per model, ``embedding`` and ``meta``.

Every vector comes from the store (one batch look-up per model; only misses are
computed, and kept), so exporting cached answers computes nothing. Files are
written atomically (temporary file, then rename; arrays before the manifest).
With ``ExportConfig(resume=True)`` an item (or a combined file) whose manifest has
the same ``request_fingerprint`` is skipped. NetCDF files are classic NetCDF,
written by :mod:`.netcdf` (no xarray needed); input patches are not written
(``save_inputs`` is accepted, ``inputs`` is null): the store keeps answers, not pixels.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, fields, is_dataclass, replace
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..errors import SpecError
from ..specs import OutputSpec
from . import netcdf, routing
from .api import build_requests, to_result
from .auto import answers
from .types import ExportConfig, ExportLayout, ExportModelRequest, ExportTarget

FORMATS = {"npz": ".npz", "netcdf": ".nc"}


def sanitize_key(s: str) -> str:
    """rs-embed's ``tools.serialization.sanitize_key``: array-key-safe model names."""
    s = re.sub(r"[^0-9a-zA-Z_]+", "_", s)
    s = re.sub(r"_+", "_", s).strip("_")
    return s or "item"


def jsonable(obj: Any) -> Any:
    """rs-embed's ``jsonable`` for the values a manifest holds (dataclasses as their fields)."""
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if isinstance(obj, (list, tuple)):
        return [jsonable(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": True, "dtype": str(obj.dtype), "shape": list(obj.shape)}
    if is_dataclass(obj):
        return jsonable(asdict(obj))
    return str(obj)


def _spec_json(spec: Any) -> Any:
    """A spec as rs-embed writes it: its dataclass fields (rs-embed's ``TemporalSpec.year`` is a
    field shadowed by a method; a range's ``year`` is null)."""
    if spec is None:
        return None
    if not is_dataclass(spec):
        return jsonable(spec)
    out = {}
    for f in fields(spec):
        value = getattr(spec, f.name)
        out[f.name] = None if callable(value) else jsonable(value)
    return out


def _output_json(output) -> dict:
    return {"mode": output.mode, "pooling": output.pooling, "grid_orientation": output.grid_orientation}


def _sha1(arr: np.ndarray) -> str:
    h = hashlib.sha1()
    h.update(str(arr.dtype).encode("utf-8"))
    h.update(str(arr.shape).encode("utf-8"))
    h.update(np.ascontiguousarray(arr).tobytes()[:2_000_000])
    return h.hexdigest()


def _utc_ts() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------ writing, atomically


def _atomic(path: str, write) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _netcdf_dims(key: str, arr: np.ndarray, sizes: Dict[str, int]) -> tuple:
    """rs-embed's ``writers._infer_dims`` + ``_resolve_conflicting_dims``: named dims, renamed on a clash."""
    nd = arr.ndim
    if "embeddings" in key and nd in (2, 4):
        dims = ("point", "dim") if nd == 2 else ("point", "band", "y", "x")
    elif "embedding" in key and nd in (1, 3):
        dims = ("dim",) if nd == 1 else ("band", "y", "x")
    else:
        dims = tuple(f"d{i}" for i in range(nd))
    out = []
    for name, size in zip(dims, arr.shape):
        resolved = name
        if sizes.get(name, size) != size:
            suffix = sanitize_key(key)
            resolved, idx = f"{name}__{suffix}", 2
            while resolved in sizes and sizes[resolved] != size:
                resolved, idx = f"{name}__{suffix}_{idx}", idx + 1
        sizes.setdefault(resolved, int(size))
        out.append(resolved)
    return tuple(out)


def write_arrays(fmt: str, base: str, arrays: Dict[str, np.ndarray], manifest: dict, save_manifest: bool) -> dict:
    """Write ``arrays`` then the ``.json`` manifest beside them, each atomically (rs-embed's writers)."""
    path = base if base.endswith(FORMATS[fmt]) else base + FORMATS[fmt]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if fmt == "npz":
        def dump(tmp):
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
        _atomic(path, dump)
        manifest["npz_path"], manifest["npz_keys"] = path, sorted(arrays)
    else:
        sizes: Dict[str, int] = {}
        variables = {k: (_netcdf_dims(k, a, sizes), a) for k, a in arrays.items()}
        attrs = {"Conventions": "CF-1.8", "history": "Created by rsembed_store export_batch (format=netcdf)"}
        for attr in ("created_at", "backend", "device"):
            if manifest.get(attr) is not None:
                attrs[attr] = str(manifest[attr])
        if "n_items" in manifest:
            attrs["n_items"] = int(manifest["n_items"])
        _atomic(path, lambda tmp: netcdf.write(tmp, variables, attrs))
        manifest["nc_path"], manifest["nc_variables"] = path, sorted(arrays)
    if save_manifest:
        json_path = os.path.splitext(path)[0] + ".json"
        manifest["manifest_path"] = json_path

        def dump_json(tmp):
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(manifest, fh, ensure_ascii=False, indent=2)
        _atomic(json_path, dump_json)
    return manifest


def _sidecar(path: str) -> Optional[dict]:
    json_path = os.path.splitext(path)[0] + ".json"
    try:
        with open(json_path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ------------------------------------------------------------------ the export


@dataclass
class _Model:
    name: str
    requests: list  # one store Request per spatial
    sensor: Any  # what the fingerprint and manifest record
    model_config: Optional[dict]


def fingerprint(models: Sequence[_Model], temporal, output, config: ExportConfig, *, spatials=None,
                spatial=None) -> str:
    """rs-embed's ``export_request_fingerprint`` recipe over this export's resolved request."""
    payload: Dict[str, Any] = {
        "models": [{"name": m.name, "backend": m.requests[0].provider or "auto", "sensor": _spec_json(m.sensor),
                    "model_config": jsonable(m.model_config)} for m in models],
        "temporal": _spec_json(temporal),
        "output": _output_json(output),
        "format": str(config.format),
        "save_inputs": bool(config.save_inputs),
        "save_embeddings": bool(config.save_embeddings),
        "input_prep": _spec_json(config.input_prep),
    }
    if spatials is not None:
        payload["spatials"] = [_spec_json(s) for s in spatials]
    if spatial is not None:
        payload["spatial"] = _spec_json(spatial)
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


def _answers(store, model: _Model, indices: List[int], config: ExportConfig, strict: bool) -> Dict[int, Any]:
    """``{index: compat Embedding or the exception}``: one batch for all, then item by item on a failure
    (retried ``max_retries`` times) when ``continue_on_error``."""
    requests = [model.requests[i] for i in indices]
    try:
        return {i: to_result(e, model.name) for i, e in zip(indices, answers(store, requests, strict=strict))}
    except Exception:
        if not config.continue_on_error and len(indices) == 1 and config.max_retries == 0:
            raise
    out: Dict[int, Any] = {}
    for i in indices:
        for attempt in range(int(config.max_retries) + 1):
            try:
                out[i] = to_result(answers(store, [model.requests[i]], strict=strict)[0], model.name)
                break
            except Exception as exc:  # reported per item, never stored
                if not config.continue_on_error and attempt == config.max_retries:
                    raise
                out[i] = exc
                if attempt < config.max_retries and config.retry_backoff_s:
                    time.sleep(float(config.retry_backoff_s))
    return out


def _status(entries: Sequence[dict]) -> str:
    failed = sum(1 for e in entries if e.get("status") == "failed")
    partial = sum(1 for e in entries if e.get("status") == "partial")
    if entries and failed == len(entries):
        return "failed"
    return "partial" if failed or partial else "ok"


def _summary(entries: Sequence[dict]) -> dict:
    failed = sum(1 for e in entries if e.get("status") == "failed")
    return {"total_models": len(entries), "failed_models": failed, "ok_models": len(entries) - failed}


def export_batch(
    *,
    spatials: list,
    temporal=None,
    models: list,
    target: ExportTarget,
    config: ExportConfig = ExportConfig(),
    backend: str = "auto",
    device: str = "auto",
    output: OutputSpec = OutputSpec.pooled(),
    sensor=None,
    fetch=None,
    modality: Optional[str] = None,
    input_prep=None,
    store=None,
    strict_provider: Optional[bool] = None,
):
    """Write the embeddings of ``models`` x ``spatials`` in rs-embed's layouts, every vector from the store.

    Returns what rs-embed's returns: a list of per-item manifests (per-item target)
    or the combined manifest; items skipped by ``resume`` carry ``resume_skipped=True``.
    """
    if not isinstance(spatials, list) or not spatials:
        raise SpecError("spatials must be a non-empty list[SpatialSpec].")
    if input_prep is not None and config.input_prep is not None:
        raise SpecError("input_prep was passed both as export_batch(input_prep=...) and as "
                        "ExportConfig(input_prep=...); pass it once (the top-level parameter is recommended).")
    if input_prep is not None:
        config = replace(config, input_prep=input_prep)
    fmt = str(config.format).strip().lower()
    if fmt not in FORMATS:
        raise SpecError(f"Unsupported export format: {config.format!r}. Supported: {tuple(FORMATS)}.")
    config = replace(config, format=fmt)
    if not isinstance(target, ExportTarget):
        raise SpecError(f"target must be an ExportTarget (ExportTarget.combined(path) or .per_item(dir)), "
                        f"got {target!r}")
    output = routing.output_for(output if output is not None else OutputSpec.pooled())
    if not models:
        raise SpecError("models must be a non-empty list of model ids or ExportModelRequest")
    resolved: List[_Model] = []
    for m in models:
        req = m if isinstance(m, ExportModelRequest) else ExportModelRequest(m) if isinstance(m, str) else None
        if req is None:
            raise SpecError(f"models items must be model ids or ExportModelRequest, got {m!r}")
        m_sensor = req.sensor if req.sensor is not None else (sensor if req.fetch is None else None)
        m_fetch = req.fetch if req.fetch is not None else (fetch if req.sensor is None else None)
        requests = build_requests(req.name, spatials, temporal=temporal, sensor=m_sensor, fetch=m_fetch,
                                  modality=req.modality if req.modality is not None else modality,
                                  output=output, backend=backend, input_prep=config.input_prep,
                                  model_kwargs=req.model_config or {})
        resolved.append(_Model(req.name, requests, requests[0].sensor, req.model_config))
    strict = routing.strict_default() if strict_provider is None else bool(strict_provider)
    the_store = routing.get_store(store)
    common = dict(backend=str(backend).strip().lower(), device=str(device).strip().lower(),
                  temporal=_spec_json(temporal), output=_output_json(output))
    if target.layout == ExportLayout.PER_ITEM:
        return _per_item(the_store, resolved, spatials, temporal, output, target, config, strict, common)
    if target.layout == ExportLayout.COMBINED:
        return _combined(the_store, resolved, spatials, temporal, output, target, config, strict, common)
    raise SpecError(f"Unsupported ExportTarget layout: {target.layout!r}.")


def _model_entry(m: _Model, r) -> dict:
    return {"model": m.name, "sensor": _spec_json(m.sensor), "status": "ok"}


def _per_item(store, models, spatials, temporal, output, target, config, strict, common):
    if not target.out_dir:
        raise SpecError("ExportTarget.per_item requires out_dir.")
    names = target.names if target.names is not None else [f"p{i:05d}" for i in range(len(spatials))]
    if len(names) != len(spatials):
        raise SpecError(f"target.names has {len(names)} names for {len(spatials)} spatials; give one per spatial")
    ext = FORMATS[config.format]
    paths = [os.path.join(target.out_dir, f"{n}{ext}") for n in names]
    prints = [fingerprint(models, temporal, output, config, spatial=s) for s in spatials]
    manifests: Dict[int, dict] = {}
    pending = []
    for i, path in enumerate(paths):
        old = _sidecar(path) if config.resume and os.path.exists(path) else None
        if old is not None and old.get("request_fingerprint") == prints[i]:
            manifests[i] = {**old, "resume_skipped": True, "resume_output_path": path}
        else:
            pending.append(i)
    results = {m.name: _answers(store, m, pending, config, strict) if pending and config.save_embeddings else {}
               for m in models}
    for i in pending:
        arrays: Dict[str, np.ndarray] = {}
        manifest = {"created_at": _utc_ts(), "point_index": i, "status": "ok", "backend": common["backend"],
                    "device": common["device"], "models": [], "spatial": _spec_json(spatials[i]),
                    "temporal": common["temporal"], "output": common["output"], "package": "rsembed_store",
                    "request_fingerprint": prints[i]}
        for m in models:
            entry = _model_entry(m, None)
            entry["input"] = None
            got = results[m.name].get(i)
            if isinstance(got, Exception):
                entry.update(status="failed", error=repr(got), embedding=None, meta=None)
            elif got is None:
                entry.update(embedding=None, meta=None)
            else:
                key = f"embedding__{sanitize_key(m.name)}"
                arrays[key] = got.data
                entry["embedding"] = {"npz_key": key, "dtype": str(got.data.dtype), "shape": list(got.data.shape),
                                      "sha1": _sha1(got.data)}
                entry["meta"] = jsonable(got.meta)
            manifest["models"].append(entry)
        manifest["status"] = _status(manifest["models"])
        manifest["summary"] = _summary(manifest["models"])
        manifests[i] = write_arrays(config.format, paths[i], arrays, manifest, config.save_manifest)
    return [manifests[i] for i in range(len(spatials))]


def _combined(store, models, spatials, temporal, output, target, config, strict, common):
    if not target.out_file:
        raise SpecError("ExportTarget.combined requires out_file.")
    ext = FORMATS[config.format]
    path = target.out_file if target.out_file.endswith(ext) else target.out_file + ext
    fp = fingerprint(models, temporal, output, config, spatials=spatials)
    if config.resume and os.path.exists(path):
        old = _sidecar(path)
        if old is not None and old.get("request_fingerprint") == fp and old.get("status") != "running":
            return {**old, "resume_skipped": True, "resume_output_path": path}
    n = len(spatials)
    manifest = {"created_at": _utc_ts(), "status": "ok", "backend": common["backend"], "device": common["device"],
                "models": [], "n_items": n, "temporal": common["temporal"], "output": common["output"],
                "spatials": [_spec_json(s) for s in spatials], "package": "rsembed_store",
                "request_fingerprint": fp}
    arrays: Dict[str, np.ndarray] = {}
    for m in models:
        entry = _model_entry(m, None)
        entry["inputs"] = None
        got = _answers(store, m, list(range(n)), config, strict) if config.save_embeddings else {}
        ok = [i for i in range(n) if i in got and not isinstance(got[i], Exception)]
        errors = {i: repr(got[i]) for i in range(n) if isinstance(got.get(i), Exception)}
        if not config.save_embeddings:
            entry["embeddings"] = None
        elif len(ok) == n:
            key = f"embeddings__{sanitize_key(m.name)}"
            arrays[key] = np.stack([got[i].data for i in range(n)], axis=0)
            entry["embeddings"] = {"npz_key": key, "shape": list(arrays[key].shape), "dtype": str(arrays[key].dtype)}
        elif ok:
            keys = [f"embedding__{sanitize_key(m.name)}__{i:05d}" for i in ok]
            for k, i in zip(keys, ok):
                arrays[k] = got[i].data
            entry["embeddings"] = {"npz_keys": keys, "indices": ok}
        else:
            entry["embeddings"] = None
        entry["metas"] = [jsonable(got[i].meta) if i in ok else None for i in range(n)]
        if errors:
            entry["failed_indices"] = sorted(errors)
            entry["errors_by_index"] = {str(i): e for i, e in errors.items()}
            entry["status"] = "partial" if ok else "failed"
            if not ok:
                entry["error"] = next(iter(errors.values()))
        manifest["models"].append(entry)
    manifest["status"] = _status(manifest["models"])
    manifest["summary"] = _summary(manifest["models"])
    return write_arrays(config.format, path, arrays, manifest, config.save_manifest)


# ------------------------------------------------------------------ reading back


@dataclass
class ModelResult:
    """rs-embed's ``ModelResult``: one model's embeddings over all points (NaN rows where it failed)."""

    name: str
    status: str
    embeddings: Optional[np.ndarray]
    inputs: Optional[np.ndarray]
    meta: List[dict]
    error: Optional[str] = None


@dataclass
class ExportResult:
    """rs-embed's ``ExportResult`` of :func:`load_export`."""

    layout: str
    spatials: List[dict]
    temporal: Optional[dict]
    n_items: int
    status: str
    models: Dict[str, ModelResult]
    manifest: dict

    def embedding(self, model: str) -> np.ndarray:
        if model not in self.models:
            raise KeyError(f"Model {model!r} not found in export. Available models: {sorted(self.models)}")
        result = self.models[model]
        if result.embeddings is None:
            raise ValueError(f"Model {model!r} has no embeddings (status={result.status!r}). Error: {result.error}")
        return result.embeddings

    @property
    def ok_models(self) -> List[str]:
        return [n for n, r in self.models.items() if r.status == "ok"]

    @property
    def failed_models(self) -> List[str]:
        return [n for n, r in self.models.items() if r.status == "failed"]


def _load_arrays(path: str) -> Dict[str, np.ndarray]:
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as payload:
            return {k: np.asarray(payload[k]) for k in payload.files}
    return netcdf.read(path)[0]


def _stack(rows: List[Optional[np.ndarray]]) -> Optional[np.ndarray]:
    sample = next((a for a in rows if a is not None), None)
    if sample is None:
        return None
    fill = np.full(sample.shape, np.nan, dtype=np.float32)
    return np.stack([a.astype(np.float32) if a is not None else fill for a in rows], axis=0)


def load_export(path) -> ExportResult:
    """Read an export of :func:`export_batch` (or rs-embed's npz and classic-NetCDF exports):
    a file path for a combined export, a directory for a per-item one."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Export path does not exist: {path!r}")
    if os.path.isdir(path):
        return _load_per_item(path)
    base, ext = os.path.splitext(path)
    if ext == ".json":
        path = next((base + e for e in (".npz", ".nc") if os.path.exists(base + e)), None)
        if path is None:
            raise FileNotFoundError(f"no .npz or .nc beside the manifest {base + ext!r}")
    manifest = _sidecar(path)
    if manifest is None:
        raise FileNotFoundError(f"no readable manifest {os.path.splitext(path)[0] + '.json'!r} beside {path!r}")
    arrays = _load_arrays(path)
    n = int(manifest.get("n_items", 0))
    models = {}
    for entry in manifest.get("models") or []:
        ref = entry.get("embeddings") or {}
        key = ref.get("npz_key") or f"embeddings__{sanitize_key(entry['model'])}"
        if key in arrays:
            emb = arrays[key].astype(np.float32)
        else:
            rows: List[Optional[np.ndarray]] = [None] * n
            for k, i in zip(ref.get("npz_keys") or [], ref.get("indices") or []):
                rows[int(i)] = arrays.get(k)
            emb = _stack(rows)
        metas = [m if isinstance(m, dict) else {} for m in (entry.get("metas") or [])]
        models[entry["model"]] = ModelResult(entry["model"], entry.get("status", "failed"), emb, None,
                                             metas + [{}] * (n - len(metas)), entry.get("error"))
    return ExportResult("combined", list(manifest.get("spatials") or []), manifest.get("temporal"), n,
                        str(manifest.get("status", "ok")), models, manifest)


def _load_per_item(directory: str) -> ExportResult:
    loaded = []
    for fname in sorted(os.listdir(directory)):
        base, ext = os.path.splitext(fname)
        if ext not in (".npz", ".nc"):
            continue
        manifest = _sidecar(os.path.join(directory, fname))
        if manifest is None or not isinstance(manifest.get("point_index"), int):
            continue
        loaded.append((manifest["point_index"], _load_arrays(os.path.join(directory, fname)), manifest))
    if not loaded:
        raise ValueError(f"No per-item export files found in {directory!r}.")
    loaded.sort(key=lambda t: t[0])
    n = loaded[-1][0] + 1
    spatials: List[dict] = [{} for _ in range(n)]
    rows: Dict[str, List[Optional[np.ndarray]]] = {}
    metas: Dict[str, List[dict]] = {}
    statuses: Dict[str, List[str]] = {}
    errors: Dict[str, Optional[str]] = {}
    for i, arrays, manifest in loaded:
        spatials[i] = manifest.get("spatial") or {}
        for entry in manifest.get("models") or []:
            name = entry["model"]
            ref = entry.get("embedding") or {}
            arr = arrays.get(ref.get("npz_key") or f"embedding__{sanitize_key(name)}")
            rows.setdefault(name, [None] * n)[i] = arr
            metas.setdefault(name, [{} for _ in range(n)])[i] = entry.get("meta") or {}
            statuses.setdefault(name, []).append(entry.get("status", "failed"))
            if entry.get("status") == "failed":
                errors.setdefault(name, entry.get("error"))
    models = {}
    for name, r in rows.items():
        st = statuses[name]
        status = "ok" if all(s == "ok" for s in st) else "failed" if all(s == "failed" for s in st) else "partial"
        models[name] = ModelResult(name, status, _stack(r), None, metas[name], errors.get(name))
    first = loaded[0][2]
    status = "ok" if all(m.status == "ok" for m in models.values()) else "partial"
    return ExportResult("per_item", spatials, first.get("temporal"), n, status, models, first)


__all__ = ["ExportResult", "ModelResult", "export_batch", "load_export"]
