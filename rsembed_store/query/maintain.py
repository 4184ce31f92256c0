"""Maintenance of the spaces: compact files, refresh indexes, tune the vector search.

:func:`maintain` does, for each space:

1. **compaction** of small data files (``compact_files``). Old versions are kept
   (no cleanup), so time travel and tags keep working;
2. **scalar indexes** on the key and the filter columns
   (:data:`rsembed_store.store.SCALAR_INDEXES`): built when missing, otherwise
   brought up to date with the rows written since (``optimize_indices``);
3. once the space holds ``min_rows_for_index`` rows, a **vector index**: built
   when missing (or when the space has more than doubled, or ``force``),
   otherwise extended with the new rows. The index type follows the size of
   the raw vectors: ``IVF_FLAT`` (exact distances inside the probed partitions,
   no quantisation error) while they fit :data:`FLAT_BUDGET_BYTES`, ``IVF_PQ``
   with a refine step beyond. ``num_partitions`` is about ``sqrt(rows)``;
4. **tuning**: ``sample_size`` stored vectors are searched (their own row left
   out, as :func:`~rsembed_store.query.search.search` does) exactly and through
   the index with more and more partitions probed (and, for PQ, a larger refine
   factor) until recall@10 reaches ``target_recall + margin``; the settings,
   the measured recall and latencies are stored in the space's Lance dataset
   config under ``rsembed.search``, where every search reads them. The
   settings travel with the table (local directory or object store).

Rows written after the index was built are searched at once: Lance scans the
unindexed rows exactly and merges them with the index's answer; the next
maintenance folds them into the index.
"""

from __future__ import annotations

import json
import logging
import math
import time
from datetime import datetime, timedelta, timezone
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ..errors import SpecError, StoreError
from .search import SETTINGS_KEY, nearest_query, settings_of

# failures maintenance survives (a concurrent writer won a commit, ...) are logged here with the
# space and what failed; failures it cannot work around raise StoreError
logger = logging.getLogger("rsembed_store.maintain")

VECTOR_INDEX_NAME = "vector_idx"
INDEX_TYPES = ("IVF_FLAT", "IVF_PQ", "IVF_SQ", "IVF_HNSW_SQ")
# raw vectors up to this size get IVF_FLAT (the index then holds a copy of them)
FLAT_BUDGET_BYTES = 4 * 1024**3
RECALL_K = 10


def maintain(store, *, spaces: Optional[Sequence[str]] = None, min_rows_for_index: int = 50_000,
             target_recall: float = 0.95, force: bool = False, index_type: Optional[str] = None,
             sample_size: int = 100, margin: float = 0.02, seed: int = 0,
             prune_older_than: Optional[timedelta] = None,
             log: Optional[Callable[[str], None]] = None) -> dict:
    """Compact, refresh indexes and (re)tune the vector search of each space; returns a JSON-ready report.

    ``spaces``: names (default: every space). ``min_rows_for_index``: below it
    a space is searched exactly and gets no vector index. ``target_recall``:
    the recall@10 the chosen query settings must reach on the sample (plus
    ``margin`` as a safety allowance for queries unlike the sample).
    ``force``: rebuild the scalar and vector indexes. ``index_type``: one of
    :data:`INDEX_TYPES` instead of the automatic choice. ``prune_older_than``
    (a timedelta): afterwards, delete the files of versions older than that,
    never a tagged version and never the latest (time travel to pruned
    versions ends there). Each space's serving tier is rebuilt last, so it
    covers the compacted latest version.
    """
    if prune_older_than is not None and (not isinstance(prune_older_than, timedelta)
                                         or prune_older_than.total_seconds() < 0):
        raise SpecError(f"prune_older_than={prune_older_than!r} must be a non-negative timedelta")
    if isinstance(min_rows_for_index, bool) or not isinstance(min_rows_for_index, int) or min_rows_for_index < 1:
        raise SpecError(f"min_rows_for_index={min_rows_for_index!r} must be a positive integer")
    if not isinstance(target_recall, (int, float)) or not 0 < float(target_recall) <= 1:
        raise SpecError(f"target_recall={target_recall!r} must be a number in (0, 1]")
    if index_type is not None and index_type.upper() not in INDEX_TYPES:
        raise SpecError(f"index_type={index_type!r} is not accepted; use one of {list(INDEX_TYPES)}")
    if isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 1:
        raise SpecError(f"sample_size={sample_size!r} must be a positive integer")
    log = log or (lambda _msg: None)
    held = [s.space for s in store.spaces()]
    if spaces is None:
        names = held
    else:
        names = [spaces] if isinstance(spaces, str) else list(spaces)
        for name in names:
            store.space_info(name)  # UnknownSpaceError names the spaces held
    t0 = time.perf_counter()
    report = {"uri": store.uri, "target_recall": float(target_recall), "min_rows_for_index": min_rows_for_index,
              "spaces": []}
    for name in names:
        report["spaces"].append(
            maintain_space(store, name, min_rows_for_index=min_rows_for_index, target_recall=float(target_recall),
                           force=force, index_type=index_type.upper() if index_type else None,
                           sample_size=sample_size, margin=margin, seed=seed, prune_older_than=prune_older_than,
                           log=log))
    report["seconds"] = round(time.perf_counter() - t0, 3)
    return report


def maintain_space(store, space: str, *, min_rows_for_index: int, target_recall: float, force: bool,
                   index_type: Optional[str], sample_size: int, margin: float, seed: int,
                   log: Callable[[str], None], prune_older_than: Optional[timedelta] = None) -> dict:
    info = store.space_info(space)
    t0 = time.perf_counter()
    out: dict = {"space": space, "metric": info.metric, "dim": info.dim}
    ds = store.dataset(space)
    rows = ds.count_rows()
    out["rows"] = rows
    if rows == 0:
        out.update({"skipped": "empty space", "seconds": 0.0})
        return out

    # 1. compaction (keeps every version: no cleanup)
    t = time.perf_counter()
    before = len(ds.get_fragments())
    try:
        metrics = ds.optimize.compact_files()
        out["compaction"] = {"fragments_before": before, "fragments_removed": int(metrics.fragments_removed),
                             "fragments_added": int(metrics.fragments_added),
                             "seconds": round(time.perf_counter() - t, 3)}
    except Exception as exc:  # e.g. a concurrent writer won the commit; the next run compacts
        logger.warning("maintain %s: compaction failed, left for the next run: %s: %s", space,
                       type(exc).__name__, _first_line(exc))
        out["compaction"] = {"error": _first_line(exc), "seconds": round(time.perf_counter() - t, 3)}
    _refresh(store, space)
    out["compaction"]["fragments_after"] = len(store.dataset(space).get_fragments())
    log(f"{space}: {rows} rows, compacted {before} fragments in {out['compaction']['seconds']} s")

    # 2. scalar indexes
    t = time.perf_counter()
    out["scalar_indexes"] = _scalar_indexes(store, space, force)
    out["scalar_indexes"]["seconds"] = round(time.perf_counter() - t, 3)
    log(f"{space}: scalar indexes {out['scalar_indexes']['action']} in {out['scalar_indexes']['seconds']} s")

    # the space's extent: hints that let searches pick the cheaper of equivalent filter forms
    extent = _extent(store.dataset(space))
    out["extent"] = extent

    # 3. + 4. vector index and its query settings
    if rows < min_rows_for_index:
        out["vector_index"] = {"type": None, "reason": f"{rows} rows < min_rows_for_index={min_rows_for_index}: "
                                                       "searches are exact"}
        record = settings_of(store.dataset(space))
        record.update({"version": 1, "extent": extent, "rows": rows,
                       "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        _write_settings(store, space, record)
    else:
        out["vector_index"] = _vector_index(store, space, info, rows, target_recall=target_recall, force=force,
                                            index_type=index_type, sample_size=sample_size, margin=margin,
                                            seed=seed, log=log, extent=extent)
    if prune_older_than is not None:
        out["prune"] = prune(store, space, prune_older_than)
        log(f"{space}: pruned {out['prune']['versions_removed']} versions, "
            f"{out['prune']['bytes_removed'] / 2**20:.1f} MiB freed")
    if store.serving.enabled:
        t = time.perf_counter()
        out["serving"] = store.serving.build(space)
        log(f"{space}: serving tier {out['serving'].get('kind')} of {out['serving'].get('rows')} rows "
            f"in {time.perf_counter() - t:.1f} s ({out['serving']['path']})")
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def prune(store, space: str, older_than: timedelta) -> dict:
    """Delete the files of versions of ``space`` older than ``older_than`` (never tagged ones, never the
    latest); returns how many versions and bytes went."""
    ds = store.dataset(space)
    before = len(ds.versions())
    stats = ds.cleanup_old_versions(older_than=older_than, error_if_tagged_old_versions=False)
    return {"older_than_s": older_than.total_seconds(), "versions_before": before,
            "versions_removed": int(getattr(stats, "old_versions", 0) or 0),
            "bytes_removed": int(getattr(stats, "bytes_removed", 0) or 0)}


# ---------------------------------------------------------------- scalar indexes


def _indices(table, space: str) -> List:
    """The indexes of a space's table. Not knowing them is an error, not "none": maintenance
    would rebuild every index of a space whose listing merely failed."""
    try:
        return list(table.list_indices())
    except Exception as exc:
        raise StoreError(f"cannot list the indexes of space {space!r}: {type(exc).__name__}: "
                         f"{_first_line(exc)}") from exc


def _scalar_indexes(store, space: str, force: bool) -> dict:
    from ..store import SCALAR_INDEXES

    table = store.table(space)
    have = {}
    for idx in _indices(table, space):
        cols = list(idx.columns)
        if len(cols) == 1 and cols[0] in SCALAR_INDEXES:
            have[cols[0]] = idx.name
    missing = [c for c in SCALAR_INDEXES if c not in have]
    if force or missing:
        built = store.create_scalar_indexes(space)
        _refresh(store, space)
        return {"action": "rebuilt" if force else "built", "columns": built, "missing_before": missing}
    ds = store.dataset(space)
    ds.optimize.optimize_indices(index_names=sorted(have.values()))
    _refresh(store, space)
    return {"action": "updated", "columns": sorted(have)}


# ---------------------------------------------------------------- vector index


def _vector_index_of(table, space: str):
    for idx in _indices(table, space):
        if list(idx.columns) == ["vector"]:
            return idx
    return None


def choose_index(rows: int, dim: int, index_type: Optional[str] = None) -> dict:
    """The index to build for ``rows`` vectors of dimension ``dim`` (type and build parameters)."""
    kind = index_type or ("IVF_FLAT" if rows * dim * 4 <= FLAT_BUDGET_BYTES else "IVF_PQ")
    partitions = max(1, int(round(math.sqrt(rows))))
    if kind == "IVF_HNSW_SQ":  # one graph per partition: few, large partitions
        partitions = max(1, rows // 250_000)
    params = {"type": kind, "num_partitions": partitions}
    if kind == "IVF_PQ":
        params["num_sub_vectors"] = _sub_vectors(dim)
    return params


def _sub_vectors(dim: int) -> int:
    """Sub-vectors of about 8 dimensions each (a divisor of ``dim``)."""
    want = max(1, dim // 8)
    for m in range(want, 0, -1):
        if dim % m == 0:
            return m
    return 1


def _index_config(params: dict, metric: str):
    from lancedb.index import HnswSq, IvfFlat, IvfPq, IvfSq

    kind = params["type"]
    if kind == "IVF_FLAT":
        return IvfFlat(distance_type=metric, num_partitions=params["num_partitions"])
    if kind == "IVF_PQ":
        return IvfPq(distance_type=metric, num_partitions=params["num_partitions"],
                     num_sub_vectors=params["num_sub_vectors"])
    if kind == "IVF_SQ":
        return IvfSq(distance_type=metric, num_partitions=params["num_partitions"])
    return HnswSq(distance_type=metric, num_partitions=params["num_partitions"])


def _vector_index(store, space: str, info, rows: int, *, target_recall: float, force: bool,
                  index_type: Optional[str], sample_size: int, margin: float, seed: int,
                  log: Callable[[str], None], extent: Optional[dict] = None) -> dict:
    table = store.table(space)
    existing = _vector_index_of(table, space)
    settings = settings_of(store.dataset(space))
    old = settings.get("index") or {}
    t = time.perf_counter()
    action, reason = "kept", None
    if existing is None:
        action, reason = "built", "no vector index yet"
    elif force:
        action, reason = "rebuilt", "force"
    elif not old.get("type") or not old.get("num_partitions"):
        action, reason = "rebuilt", "the index has no stored settings (built outside maintain)"
    elif old.get("metric") not in (None, info.metric):
        action, reason = "rebuilt", f"index metric {old.get('metric')!r} is not the space's {info.metric!r}"
    elif index_type and old.get("type") not in (None, index_type):
        action, reason = "rebuilt", f"index type {old.get('type')!r} -> {index_type!r}"
    elif old.get("rows_at_build") and rows > 2 * int(old["rows_at_build"]):
        action, reason = "rebuilt", f"the space grew from {old['rows_at_build']} to {rows} rows"
    if action in ("built", "rebuilt"):
        params = choose_index(rows, info.dim, index_type)
        log(f"{space}: building {params['type']} with {params['num_partitions']} partitions on {rows} rows ...")
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table.create_index("vector", config=_index_config(params, info.metric), replace=True,
                               name=VECTOR_INDEX_NAME)
        params.update({"name": VECTOR_INDEX_NAME, "metric": info.metric, "rows_at_build": rows})
    else:
        params = {k: old[k] for k in ("type", "num_partitions", "num_sub_vectors", "rows_at_build") if k in old}
        params.update({"name": existing.name, "metric": info.metric})
        unindexed = _unindexed(table, existing.name, space)
        if unindexed is None:  # unknown: fold whatever is new in (a no-op when nothing is)
            store.dataset(space).optimize.optimize_indices(index_names=[existing.name])
            action, reason = "updated", "index statistics unreadable: new rows (if any) added to the index"
        elif unindexed:
            store.dataset(space).optimize.optimize_indices(index_names=[existing.name])
            action, reason = "updated", f"{unindexed} rows added to the index"
        else:
            reason = "up to date"
    _refresh(store, space)
    build_s = round(time.perf_counter() - t, 3)
    log(f"{space}: vector index {action} ({reason}) in {build_s} s; tuning for recall@10 >= {target_recall} ...")

    t = time.perf_counter()
    tuned = tune(store, space, info.metric, params, target_recall=target_recall, sample_size=sample_size,
                 margin=margin, seed=seed)
    tune_s = round(time.perf_counter() - t, 3)
    record = {
        "version": 1,
        "index": params,
        "query": tuned["query"],
        "measured": {**{k: tuned[k] for k in ("recall_at_10", "p50_ms", "p99_ms", "queries", "target_met")},
                     "filtered": tuned["filtered"]},
        "target_recall": target_recall,
        "extent": extent,
        "rows": rows,
        "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    _write_settings(store, space, record)
    log(f"{space}: {tuned['query']} -> recall@10 {tuned['recall_at_10']:.3f}, p50 {tuned['p50_ms']:.2f} ms; "
        f"filtered recall@10 {tuned['filtered']['recall_at_10']:.3f}, p50 {tuned['filtered']['p50_ms']:.2f} ms")
    return {
        "action": action,
        "reason": reason,
        **{k: v for k, v in params.items() if k != "name"},
        "query": tuned["query"],
        "recall_at_10": tuned["recall_at_10"],
        "target_met": tuned["target_met"],
        "p50_ms": tuned["p50_ms"],
        "p99_ms": tuned["p99_ms"],
        "queries": tuned["queries"],
        "filtered": tuned["filtered"],
        "tried": tuned["tried"],
        "tried_filtered": tuned["tried_filtered"],
        "build_seconds": build_s,
        "tune_seconds": tune_s,
    }


def _unindexed(table, name: str, space: str) -> Optional[int]:
    """Rows the index ``name`` does not cover yet; None (logged) when its statistics cannot be read."""
    try:
        stats = table.index_stats(name)
        return int(getattr(stats, "num_unindexed_rows", 0) or 0)
    except Exception as exc:
        logger.warning("maintain %s: cannot read the statistics of index %r (%s: %s); updating it anyway",
                       space, name, type(exc).__name__, _first_line(exc))
        return None


def _extent(ds) -> dict:
    """Min/max of lon, lat and the window dates, read batch by batch."""
    import pyarrow.compute as pc

    lo = {"lon": None, "lat": None, "start_date": None}
    hi = {"lon": None, "lat": None, "end_date": None}
    for batch in ds.to_batches(columns=["lon", "lat", "start_date", "end_date"], batch_size=262_144):
        for name in ("lon", "lat", "start_date", "end_date"):
            mm = pc.min_max(batch.column(name)).as_py()
            if name in lo and mm["min"] is not None:
                lo[name] = mm["min"] if lo[name] is None else min(lo[name], mm["min"])
            if name in hi and mm["max"] is not None:
                hi[name] = mm["max"] if hi[name] is None else max(hi[name], mm["max"])
    return {
        "minlon": lo["lon"], "minlat": lo["lat"], "maxlon": hi["lon"], "maxlat": hi["lat"],
        "start": lo["start_date"].isoformat() if lo["start_date"] else None,
        "end": hi["end_date"].isoformat() if hi["end_date"] else None,
    }


def _refresh(store, space: str) -> None:
    """Point the LanceDB table at the latest version after work done on the Lance dataset."""
    try:
        store.table(space).checkout_latest()
    except Exception as exc:  # the next store.table() call checks out the latest version again
        logger.warning("maintain %s: cannot point the table at its latest version: %s: %s", space,
                       type(exc).__name__, _first_line(exc))


def _write_settings(store, space: str, record: dict) -> None:
    text = json.dumps(record, sort_keys=True)
    last = None
    for _ in range(5):  # a concurrent commit may win the race: re-read and try again
        try:
            store.dataset(space).update_config({SETTINGS_KEY: text})
            _refresh(store, space)
            return
        except Exception as exc:
            last = exc
            time.sleep(0.05)
    raise StoreError(f"could not store the search settings of space {space!r}: {_first_line(last)}")


def _first_line(exc) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---------------------------------------------------------------- tuning

# filtered settings are tuned with regions (one H3 cell each, holding at least this share of the
# rows) thinned to a third by a key range (standing in for a time window): a region holds the
# answers of a few themes only, so the best filtered answers of a query often lie in partitions
# far from it -- the hard case for an IVF index
TUNING_REGION_SHARE = 0.05
TUNING_REGIONS = 5
TUNING_THINNING = "key < '55555556'"


def ladder(params: dict) -> List[dict]:
    """Query settings to try for unfiltered searches, cheapest first."""
    kind = params["type"]
    partitions = int(params.get("num_partitions") or 1)
    fractions = (0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.18, 0.25, 0.35, 0.5, 0.75, 1.0)
    probes = sorted({min(partitions, max(1, int(round(partitions * f)))) for f in fractions})
    if kind == "IVF_FLAT":
        return [{"nprobes": n} for n in probes]
    if kind == "IVF_HNSW_SQ":
        return [{"nprobes": partitions, "ef": ef} for ef in (20, 40, 80, 160, 320, 640, 1280)]
    steps = []
    for refine in (5, 10, 20, 40):
        steps.extend({"nprobes": n, "refine_factor": refine} for n in probes)
    return steps


def filtered_ladder(params: dict, query: dict) -> List[dict]:
    """More partitions for filtered searches, starting from the unfiltered settings."""
    partitions = int(params.get("num_partitions") or 1)
    if params["type"] == "IVF_HNSW_SQ":
        return [{**query, "filtered_ef": query["ef"] * f} for f in (1, 2, 4, 8, 16)]
    base = int(query.get("nprobes") or 1)
    probes = sorted({min(partitions, base * f) for f in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)})
    return [{**query, "filtered_nprobes": n} for n in probes]


def sample_queries(ds, n: int, seed: int):
    """``n`` stored rows (keys, h3 cells and vectors) picked at random, reproducibly."""
    rows = ds.count_rows()
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(rows, size=min(n, rows), replace=False))
    tbl = ds.take(idx.tolist(), columns=["key", "h3", "vector"])
    vec = tbl.column("vector").combine_chunks()
    dim = vec.type.list_size
    vectors = vec.values.to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32)
    return tbl.column("key").to_pylist(), tbl.column("h3").to_pylist(), vectors


def exact_neighbours(ds, cells: Sequence[int], vectors: np.ndarray, metric: str, k: int = RECALL_K,
                     filter: Optional[str] = None, spare: int = 32) -> List[List[str]]:
    """The true ``k`` nearest keys of each query outside its own place (its ``h3`` cell), in one exact scan.

    Leaving the whole place out (every year of it), not just the row, makes
    each stored row behave as a query for a new place: otherwise its other
    years, near-duplicates that any index finds, would flatter the recall.
    """
    tbl = ds.to_table(columns=["key", "h3", "_distance"], filter=filter, prefilter=True,
                      nearest={"column": "vector", "q": vectors, "k": k + spare, "metric": metric,
                               "use_index": False})
    per: Dict[int, list] = {}
    for i, key, cell, d in zip(tbl.column("query_index").to_pylist(), tbl.column("key").to_pylist(),
                               tbl.column("h3").to_pylist(), tbl.column("_distance").to_pylist()):
        if cell != cells[i]:
            per.setdefault(i, []).append((d, key))
    return [[key for _, key in sorted(per.get(i, []))[:k]] for i in range(len(cells))]


def measure(ds, cells: Sequence[int], vectors: np.ndarray, truth: Sequence[Sequence[str]], metric: str,
            settings: dict, *, filter: Optional[str] = None, k: int = RECALL_K) -> dict:
    """Recall@k and latencies of the search path (own place left out) under ``settings``."""
    recalls, lat = [], []
    for cell, v, want in zip(cells, vectors, truth):
        nearest, _ = nearest_query(v, k, metric, settings, filtered=filter is not None)
        own = f"h3 != {int(cell)}"
        t = time.perf_counter()
        tbl = ds.to_table(columns=["key", "_distance"], filter=f"{own} AND {filter}" if filter else own,
                          prefilter=True, nearest=nearest)
        lat.append(time.perf_counter() - t)
        got = [kk for _, kk in sorted(zip(tbl.column("_distance").to_pylist(), tbl.column("key").to_pylist()))][:k]
        if want:
            recalls.append(len(set(got) & set(want)) / len(want))
    ms = np.asarray(lat) * 1000
    return {
        "recall_at_10": round(float(np.mean(recalls)) if recalls else 1.0, 4),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "queries": len(cells),
    }


def _walk(steps: List[dict], goal: float, run: Callable[[dict], dict]):
    tried, best = [], None
    for step in steps:
        m = run(step)
        tried.append({**step, "recall_at_10": m["recall_at_10"], "p50_ms": m["p50_ms"]})
        if best is None or m["recall_at_10"] > best[1]["recall_at_10"]:
            best = (step, m)
        if m["recall_at_10"] >= goal:
            return step, m, tried
    return best[0], best[1], tried


def tuning_regions(ds, cells: Sequence[int], res: int, *, share: float = TUNING_REGION_SHARE,
                   count: int = TUNING_REGIONS) -> List[dict]:
    """Up to ``count`` distinct regions around sample rows, each an H3 cell holding >= ``share`` of the rows."""
    from ..h3int import children_range, parent, ranges_sql, resolution, to_string

    total = ds.count_rows()
    regions, seen = [], set()
    for cell in cells:
        if len(regions) >= count:
            break
        cell = int(cell)
        for r in range(min(res, resolution(cell)), -1, -1):
            anc = parent(cell, r)
            sql = ranges_sql([children_range(anc, res)])
            n = ds.count_rows(filter=sql)
            if n >= share * total:
                if anc not in seen:
                    seen.add(anc)
                    thinned = f"{sql} AND {TUNING_THINNING}"
                    regions.append({"filter": thinned, "cell": to_string(anc),
                                    "share": round(ds.count_rows(filter=thinned) / total, 4)})
                break
    return regions


def tune(store, space: str, metric: str, params: dict, *, target_recall: float, sample_size: int = 100,
         margin: float = 0.02, seed: int = 0) -> dict:
    """Walk :func:`ladder` until recall@10 on the sample reaches ``target_recall + margin``, then
    :func:`filtered_ladder` until searches restricted to a region (see :func:`tuning_regions`) do too."""
    ds = store.dataset(space)
    info = store.space_info(space)
    keys, cells, vectors = sample_queries(ds, sample_size, seed)
    goal = min(1.0, target_recall + margin)
    index = {"type": params["type"], "metric": metric}

    truth = exact_neighbours(ds, cells, vectors, metric)
    query, m, tried = _walk(ladder(params), goal, lambda step: measure(
        ds, cells, vectors, truth, metric, {"index": index, "query": step}))

    # filtered: query i searches region i % R (the regions are centred on other sample rows)
    rng = np.random.default_rng(seed + 1)
    regions = tuning_regions(ds, [cells[i] for i in rng.permutation(len(cells))], info.h3_res)
    groups = []
    for j, region in enumerate(regions):
        idx = list(range(j, len(cells), len(regions)))
        sub_cells = [cells[i] for i in idx]
        sub_vec = vectors[idx]
        groups.append((region, sub_cells, sub_vec,
                       exact_neighbours(ds, sub_cells, sub_vec, metric, filter=region["filter"])))

    def run_filtered(step):
        parts = [measure(ds, c, v, t, metric, {"index": index, "query": step}, filter=reg["filter"])
                 for reg, c, v, t in groups]
        n = sum(p["queries"] for p in parts)
        return {"recall_at_10": round(sum(p["recall_at_10"] * p["queries"] for p in parts) / n, 4),
                "p50_ms": round(float(np.median([p["p50_ms"] for p in parts])), 3),
                "p99_ms": round(max(p["p99_ms"] for p in parts), 3), "queries": n}

    if groups:
        query_f, mf, tried_f = _walk(filtered_ladder(params, query), goal, run_filtered)
    else:
        query_f, mf, tried_f = query, dict(m), []
    return {
        "query": query_f,
        **m,
        "target_met": m["recall_at_10"] >= target_recall and mf["recall_at_10"] >= target_recall,
        "filtered": {"regions": [{"cell": r["cell"], "share": r["share"]} for r in regions],
                     **{k: mf[k] for k in ("recall_at_10", "p50_ms", "p99_ms", "queries")}},
        "tried": tried,
        "tried_filtered": tried_f,
    }


__all__ = ["FLAT_BUDGET_BYTES", "INDEX_TYPES", "VECTOR_INDEX_NAME", "choose_index", "exact_neighbours", "ladder",
           "maintain", "measure", "sample_queries", "tune"]
