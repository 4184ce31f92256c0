"""Searches answered by the serving tier: whether it can, and the results it gives.

:func:`served_view` decides, per search, whether the tier answers exactly what
the Lance path would (the space's own metric, filters it evaluates itself) and
returns the view to search; :func:`result_from` turns the view's candidates into
a :class:`~rsembed_store.query.search.SearchResult`; :func:`search_many` runs
many query vectors at once.
"""

from __future__ import annotations

import time
from typing import List, Optional

import numpy as np

from ...errors import VectorError
from ..results import LazyRows
from ..search import SearchResult, as_vector, check_k, check_metric, search
from .filters import plan as plan_filters


def served_view(store, info, metric: str, temporal, within, where):
    """(view, filters) when the serving tier can answer exactly this search, else None (the Lance path)."""
    serving = getattr(store, "serving", None)
    if serving is None or metric != info.metric:
        return None
    filters = plan_filters(temporal, within, where, info.h3_res)
    if filters is None:
        return None
    view = serving.view(info.space)
    return (view, filters) if view is not None else None


def result_from(found, info, metric: str, k: int, plan: dict, t0: float) -> SearchResult:
    return results_from([found], info, metric, k, plan, t0)[0]


def results_from(found_lists, info, metric: str, k: int, plan: dict, t0: float, *,
                 lazy: bool = False) -> List[SearchResult]:
    """One SearchResult per list of candidates; the rows of all of them are read in one pass per source
    (the tier's rows, the delta's), so a batch of 2,000 queries gathers each column once, not 2,000 times.

    ``lazy``: each result holds its keys and distances now and its row dicts are made, for the whole
    batch in one pass, when first read (:class:`~rsembed_store.query.results.LazyRows`).
    """
    made: list = []

    def make():
        if not made:
            made.append(_rows_of(found_lists))
        return made[0]

    if lazy:
        keys = _keys_of(found_lists)
        seconds = time.perf_counter() - t0
        out = []
        for q, found in enumerate(found_lists):
            rows = LazyRows(keys[q], [c[0] for c in found], lambda q=q: (
                [row for row, _ in make()[q]], [text for _, text in make()[q]]))
            out.append(SearchResult(rows=rows, space=info.space, model=info.model, metric=metric, k=k,
                                    filter=None, plan=dict(plan), seconds=seconds))
        return out
    placed = make()
    seconds = time.perf_counter() - t0
    return [SearchResult(rows=[row for row, _ in rows], space=info.space, model=info.model, metric=metric, k=k,
                         filter=None, plan=dict(plan), seconds=seconds, canonical=[text for _, text in rows])
            for rows in placed]


def _rows_of(found_lists) -> List[list]:
    """(row dict, request JSON) of every candidate, per list; each source's rows read in one go."""
    by_source = {}
    for q, found in enumerate(found_lists):
        for j, (distance, _, source, i) in enumerate(found):
            by_source.setdefault(id(source), (source, []))[1].append((q, j, i, distance))
    placed = [[None] * len(found) for found in found_lists]
    for source, items in by_source.values():
        got, texts = source.results([i for _, _, i, _ in items], [d for _, _, _, d in items])
        for (q, j, _, _), row, text in zip(items, got, texts):
            placed[q][j] = (row, text)
    return placed


def _keys_of(found_lists) -> List[List[str]]:
    """The hex keys of every candidate, per list (one hex conversion per source)."""
    by_source = {}
    for q, found in enumerate(found_lists):
        for j, (_, _, source, i) in enumerate(found):
            by_source.setdefault(id(source), (source, []))[1].append((q, j, i))
    keys = [[""] * len(found) for found in found_lists]
    for source, items in by_source.values():
        hexes = source.keys[np.fromiter((i for _, _, i in items), dtype=np.int64, count=len(items))].tobytes().hex()
        for n, (q, j, _) in enumerate(items):
            keys[q][j] = hexes[64 * n:64 * n + 64]
    return keys


def search_many(store, model: str, vectors, *, k: int = 10, temporal=None, within=None,
                where: Optional[str] = None, metric: Optional[str] = None,
                revision: Optional[str] = None) -> List[SearchResult]:
    """:func:`search` for many query vectors at once (one result per row of ``vectors``).

    On the serving tier, unfiltered queries run as one batch through the graph
    (FAISS spreads them over the cores); otherwise each is searched in turn.
    """
    t0 = time.perf_counter()
    k = check_k(k)
    info = store.space_for(model, revision)
    metric = check_metric(metric if metric is not None else info.metric)
    try:
        Q = np.asarray(vectors, dtype=np.float64)
    except (TypeError, ValueError):
        raise VectorError(f"vectors must be a list of vectors of dimension {info.dim}") from None
    if Q.ndim != 2 or Q.shape[1] != info.dim:
        raise VectorError(f"vectors must have shape (n, {info.dim}); got {Q.shape}")
    with np.errstate(over="ignore", invalid="ignore"):  # every row checked at once; the first bad one named
        Q32 = Q.astype(np.float32)
        bad = ~np.isfinite(Q32).all(axis=1)
    if bad.any():
        first = int(np.argmax(bad))
        as_vector(Q[first], info.dim, f"vectors[{first}]")  # raises, saying why
    if metric == "cosine":
        zero = np.flatnonzero(~Q.any(axis=1))
        if len(zero):
            raise VectorError(f"vectors[{zero[0]}] is all zeros: it has no direction, so cosine distance is "
                              "undefined")
    served = served_view(store, info, metric, temporal, within, where)
    if served is not None:
        view, filters = served
        found, plan = view.search_many(Q32, k, filters=filters)
        return results_from(found, info, metric, k, {"like": "vector", **plan}, t0, lazy=True)
    return [search(store, model, q, k=k, temporal=temporal, within=within, where=where, metric=metric,
                   revision=revision) for q in Q]
