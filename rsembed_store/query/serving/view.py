"""Reads through a tier and its delta: look-ups and nearest-neighbour search, merged as one snapshot.

A :class:`View` pairs an immutable :class:`~.tier.Tier` (rows at version V)
with the :class:`~.delta.Delta` of one later version L: it answers exactly as
version L would, with the tier rows that L replaced or removed masked out and
the rows written after V searched exactly. The plan for a filtered search
depends on how many rows the filter keeps: up to :data:`EXACT_MAX_ROWS` they
are scanned exactly (that is faster than a graph walk that must skip most of
what it meets); more go through the graph with the filter as an allow-list.
"""

from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from ...embedding import Embedding
from .delta import Delta
from .filters import Filters
from .order import Selection
from .rows import Rows, distances, key_bytes, top_k
from .tier import Tier
from .tier import _faiss as _faiss_module

EXACT_MAX_ROWS = 60_000
MAX_EF = 1024

Candidate = Tuple[float, bytes, Rows, int]


class View:
    """One consistent snapshot of a space for reading (immutable; safe from many threads)."""

    def __init__(self, tier: Tier, delta: Delta, fetch_grids: Callable[[Sequence[int]], List[dict]]):
        self.tier, self.delta = tier, delta
        self.version = delta.version
        self._fetch_grids = fetch_grids

    # ------------------------------------------------------------ look-ups

    def _locate(self, keys: Sequence[str]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """Each key's current row: its tier position and its delta position (-1 where not there; the
        delta positions are None when the delta is empty). A key is in at most one of the two."""
        kb = key_bytes(keys)
        pos = self.tier.positions(kb)
        if self.delta.removed is not None:
            held = pos >= 0
            pos[held] = np.where(self.delta.removed[pos[held]], -1, pos[held])
        if not self.delta.rows.n:
            return pos, None
        dpos = self.delta.positions(kb)
        pos[dpos >= 0] = -1  # written again after the tier's version (read_delta also masks these)
        return pos, dpos

    def find(self, keys: Sequence[str]) -> List[Optional[Tuple[Rows, int]]]:
        """Where each key's current row lives ((rows, position)), None where not stored."""
        pos, dpos = self._locate(keys)
        tier_rows = self.tier.rows
        out: List[Optional[Tuple[Rows, int]]] = [None if p < 0 else (tier_rows, p) for p in pos.tolist()]
        if dpos is not None:
            for j in np.flatnonzero(dpos >= 0).tolist():
                out[j] = (self.delta.rows, int(dpos[j]))
        return out

    def lookup(self, keys: Sequence[str]) -> List[Optional[Embedding]]:
        """The current row of each key as an Embedding (grids read from Lance), None where not stored."""
        pos, dpos = self._locate(keys)
        out: List[Optional[Embedding]] = [None] * len(pos)
        for rows, at in ((self.tier.rows, pos), (self.delta.rows, dpos)):
            if at is None:
                continue
            mine = np.flatnonzero(at >= 0)
            if not len(mine):
                continue
            positions = at[mine]
            addrs = rows.addr[positions[rows.has_grid[positions]]].tolist()
            grids = dict(zip(addrs, self._fetch_grids(addrs))) if addrs else None
            for j, emb in zip(mine.tolist(), rows.embeddings(positions, grids)):
                out[j] = emb
        return out

    def contains(self, keys: Sequence[str]) -> List[bool]:
        pos, dpos = self._locate(keys)
        held = pos >= 0 if dpos is None else (pos >= 0) | (dpos >= 0)
        return held.tolist()

    # ------------------------------------------------------------ search

    def search(self, q: np.ndarray, k: int, *, filters: Optional[Filters] = None,
               exclude: Optional[str] = None) -> Tuple[List[Candidate], dict]:
        """The ``k`` nearest current rows to ``q`` that pass ``filters``, nearest first (ties by key),
        and how the search ran."""
        tier, delta = self.tier, self.delta
        own = key_bytes([exclude]) if exclude else None
        own_pos = int(tier.positions(own)[0]) if own is not None else -1
        plan = {"path": "serving", "tier_version": tier.version, "delta_rows": delta.rows.n,
                "removed_rows": delta.n_removed}
        if filters:
            sel = filters.selection(tier.rows, tier.space_order)
            if delta.removed is not None:
                sel.exclude(delta.removed_positions)
            if own_pos >= 0:
                sel.exclude(np.array([own_pos], dtype=np.int64))
            found = self._tier_filtered(q, k, sel, plan)
        else:
            allowed = ~delta.removed if delta.removed is not None else None
            found = self._tier_candidates(q, k, allowed, own_pos, plan)
        if delta.rows.n:
            found += self._delta_candidates(q, k, filters, own)
        found.sort(key=lambda c: (c[0], c[1]))
        return found[:k], plan

    def _tier_candidates(self, q, k, allowed, own_pos, plan) -> List[Candidate]:
        tier = self.tier
        if allowed is not None and own_pos >= 0:
            allowed = allowed.copy()
            allowed[own_pos] = False
        n_allowed = tier.n if allowed is None else int(allowed.sum())
        plan["rows_allowed"] = n_allowed - (1 if allowed is None and own_pos >= 0 else 0)
        if n_allowed == 0:
            plan.update(index=None, exact=True)
            return []
        if tier.index is None or (allowed is not None and n_allowed <= EXACT_MAX_ROWS):
            positions = np.flatnonzero(allowed) if allowed is not None else None
            dist = tier.exact(q, positions)
            if positions is None and own_pos >= 0:
                dist[own_pos] = np.inf
            best = top_k(dist, tier.rows.keys, k, positions)
            chosen = best if positions is None else positions[best]
            plan.update(index=None, exact=True)
            return [(float(dist[b]), bytes(tier.rows.keys[c]), tier.rows, int(c))
                    for b, c in zip(best, chosen) if np.isfinite(dist[b])]
        ef = tier.ef or 64
        if allowed is None:
            count = k + (1 if own_pos >= 0 else 0)
            D, I = tier.graph(q, count, ef=ef)
        else:
            ef = filtered_ef(ef, tier.n, n_allowed)
            D, I = tier.graph(q, k, allowed=allowed, ef=ef)
        plan.update(index="hnsw", exact=False, ef=int(max(ef, k)))
        out = [(float(d), bytes(tier.rows.keys[i]), tier.rows, int(i))
               for d, i in zip(D[0], I[0]) if i >= 0 and i != own_pos]
        if len(out) < min(k, n_allowed) and allowed is not None:
            # the graph ran out of allowed rows to reach: scan them exactly instead
            positions = np.flatnonzero(allowed)
            dist = tier.exact(q, positions)
            best = top_k(dist, tier.rows.keys, k, positions)
            plan.update(index=None, exact=True, widened=True)
            return [(float(dist[b]), bytes(tier.rows.keys[positions[b]]), tier.rows, int(positions[b]))
                    for b in best]
        return out[:k]

    def _tier_filtered(self, q, k, sel: Selection, plan) -> List[Candidate]:
        """The nearest of the tier rows ``sel`` keeps: scanned exactly in place when few, else through the
        graph with them as an allow-list."""
        tier = self.tier
        kept = sel.kept
        plan["rows_allowed"] = kept
        if not kept:
            plan.update(index=None, exact=True)
            return []
        if tier.index is None or kept <= EXACT_MAX_ROWS:
            return self._exact_at(q, k, sel, plan)
        ef = filtered_ef(tier.ef or 64, tier.n, kept)
        D, I = tier.graph(q, k, allowed=sel.bitmap(tier.n), ef=ef)
        plan.update(index="hnsw", exact=False, ef=int(max(ef, k)))
        out = [(float(d), bytes(tier.rows.keys[i]), tier.rows, int(i)) for d, i in zip(D[0], I[0]) if i >= 0]
        if len(out) < min(k, kept):  # the graph ran out of allowed rows to reach: scan them instead
            plan["widened"] = True
            return self._exact_at(q, k, sel, plan)
        return out

    def _exact_at(self, q, k, sel: Selection, plan) -> List[Candidate]:
        tier = self.tier
        dist = tier.scan(q, sel)
        best = top_k(dist, tier.rows.keys, k, sel.positions)
        best = best[np.isfinite(dist[best])]
        plan.update(index=None, exact=True)
        return [(float(dist[b]), bytes(tier.rows.keys[p]), tier.rows, int(p))
                for b, p in zip(best.tolist(), sel.positions(best).tolist())]

    def _delta_candidates(self, q, k, filters, own) -> List[Candidate]:
        rows = self.delta.rows
        mask = filters.mask(rows) if filters else np.ones(rows.n, dtype=bool)
        if own is not None:
            mask &= rows.keys != own[0]
        positions = np.flatnonzero(mask)
        if not len(positions):
            return []
        dist = distances(rows.vectors[positions], q, self.tier.metric)
        best = top_k(dist, rows.keys, k, positions)
        return [(float(dist[b]), bytes(rows.keys[positions[b]]), rows, int(positions[b])) for b in best]

    def search_many(self, Q: np.ndarray, k: int, *, filters: Optional[Filters] = None) -> Tuple[list, dict]:
        """:meth:`search` for each row of ``Q``; unfiltered queries on a graph tier run as one batch."""
        tier = self.tier
        if tier.index is None or filters or self.delta.removed is not None or self.delta.rows.n:
            results = [self.search(q, k, filters=filters) for q in Q]
            return [r[0] for r in results], (results[0][1] if results else {"path": "serving"})
        D, I = _spread(lambda part: tier.graph(part, k, ef=tier.ef), Q)
        rows = tier.rows  # (the key slot of a candidate only breaks ties while merging; nothing merges here)
        out = [[(d, None, rows, i) for d, i in zip(drow, irow) if i >= 0]
               for drow, irow in zip(D.tolist(), I.tolist())]
        return out, {"path": "serving", "tier_version": tier.version, "index": "hnsw", "exact": False,
                     "ef": int(max(tier.ef or 64, k)), "delta_rows": 0, "removed_rows": 0}


def filtered_ef(ef: int, n: int, allowed: int) -> int:
    """The graph's search beam when only ``allowed`` of its ``n`` rows may be returned: wider as fewer pass
    (by the square root of the share left out, at most 4x). Measured at 1M x 64 with the tuned beam
    128: 20 % kept, beam 286, recall@10 0.98; 10 % kept, beam 405, 0.97 (docs/benchmarks-serving.md)."""
    return min(MAX_EF, max(ef, int(math.ceil(ef * min(4.0, math.sqrt(n / max(allowed, 1)))))))


def _spread(search, Q: np.ndarray, chunk: int = 256):
    """``search`` over ``Q`` in chunks on one thread per core (FAISS releases the GIL while it searches; its
    own OpenMP threads are a process-wide setting that other code may have lowered)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    workers = min(os.cpu_count() or 1, max(1, len(Q) // chunk))
    if workers == 1:
        return search(Q)
    parts = [Q[i:i + chunk] for i in range(0, len(Q), chunk)]

    def one_thread(part):
        # each worker is one thread: left at their default, FAISS's OpenMP teams (one per worker) would
        # put two threads on every core (2,900 against 4,000 queries/s with OMP_WAIT_POLICY=PASSIVE)
        _faiss_module().omp_set_num_threads(1)
        return search(part)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = list(pool.map(one_thread, parts))
    return np.concatenate([d for d, _ in done]), np.concatenate([i for _, i in done])
