"""What changed in a space since a tier's Lance version: rows to add, tier rows to forget.

Lance never rewrites a committed data file in place. Between the tier's
version ``V`` and a later version ``L``:

- a fragment that exists in ``L`` but not in ``V`` (or whose data files
  changed) holds rows written after ``V``: they are read whole, as the delta;
- a fragment of ``V`` that is gone in ``L`` (compacted, or every row deleted)
  takes all its tier rows with it;
- a fragment whose deletion file changed lost some rows (an upsert replaced
  them, or a delete removed them): its row addresses in ``L`` say which tier
  rows are still there.

So a row committed by any process after ``V`` is in the delta, and a row
replaced or removed after ``V`` is masked out of the tier: neither depends on
who wrote it or how.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from .rows import ARRAYS, COLUMNS, Rows, empty_rows, find_keys, key_bytes, key_prefixes
from .tier import Tier, fragment_layout


class Delta:
    """Rows newer than a tier (searched exactly) and the tier rows no longer current (immutable).

    ``pieces`` (fragment id -> (its layout, its rows)) and ``checks`` (tier
    fragment id -> (its layout, the positions it lost)) let the next version's
    delta reuse what did not change, so a steady stream of small writes costs
    each read only the new fragments.
    """

    def __init__(self, version: int, rows: Rows, removed: Optional[np.ndarray],
                 pieces: Optional[Dict[int, Tuple[list, Rows]]] = None,
                 checks: Optional[Dict[int, Tuple[list, np.ndarray]]] = None):
        self.version = int(version)
        self.rows = rows
        self.removed = removed  # bool mask over the tier's rows, or None when nothing was removed
        self.n_removed = int(removed.sum()) if removed is not None else 0
        self.removed_positions = np.flatnonzero(removed) if removed is not None else np.empty(0, np.int64)
        self.pieces = pieces or {}
        self.checks = checks or {}
        # the delta's own key index (as the tier's): a batch look-up is one vectorised search
        self._order = np.argsort(rows.keys, kind="stable")
        self._sorted_keys = rows.keys[self._order]
        self._prefixes = key_prefixes(self._sorted_keys)

    def positions(self, keys: np.ndarray) -> np.ndarray:
        """Delta row positions of 32-byte ``keys`` (``S32`` array), -1 where not held."""
        return find_keys(self._sorted_keys, self._prefixes, self._order, keys)


def empty_delta(tier: Tier) -> Delta:
    return Delta(tier.version, empty_rows(tier.rows.dim, tier.rows.model, tier.rows.revision, tier.rows.zdict),
                 None)


def read_delta(tier: Tier, ds, previous: Optional[Delta] = None) -> Delta:
    """The delta of ``tier`` at the Lance dataset ``ds`` (a later version of the same space), reusing
    what ``previous`` (the delta of an earlier version) read of fragments that have not changed since."""
    now = fragment_layout(ds)
    fragments = {int(f.fragment_id): f for f in ds.get_fragments()}
    prev_pieces = previous.pieces if previous is not None else {}
    prev_checks = previous.checks if previous is not None else {}
    removed = np.zeros(tier.n, dtype=bool)
    frag_of = (tier.rows.addr >> np.uint64(32)).astype(np.int64)
    checks: Dict[int, Tuple[list, np.ndarray]] = {}
    for fid, (files, deletion) in tier.layout.items():
        if fid not in now or now[fid][0] != files:
            removed |= frag_of == fid  # gone or rewritten: its current rows (if any) are in the delta
        elif now[fid][1] != deletion:
            cached = prev_checks.get(fid)
            if cached is not None and cached[0] == now[fid]:
                lost = cached[1]
            else:
                live = fragments[fid].to_table(columns=["key"], with_row_address=True).column("_rowaddr")
                mine = np.flatnonzero(frag_of == fid)
                lost = mine[~np.isin(tier.rows.addr[mine], live.to_numpy().astype(np.uint64))]
            checks[fid] = (now[fid], lost)
            removed[lost] = True
    pieces: Dict[int, Tuple[list, Rows]] = {}
    for fid, entry in sorted(now.items()):
        if fid in tier.layout and tier.layout[fid][0] == entry[0]:
            continue  # a tier fragment (its lost rows are handled above)
        cached = prev_pieces.get(fid)
        if cached is not None and cached[0] == entry:
            pieces[fid] = cached
            continue
        table = ds.scanner(columns=COLUMNS, with_row_address=True, fragments=[fragments[fid]]).to_table()
        pieces[fid] = (entry, Rows.from_arrow(table, dim=tier.rows.dim, model=tier.rows.model,
                                              revision=tier.rows.revision, zdict=tier.rows.zdict))
    rows = concat([p[1] for p in pieces.values()], tier) if pieces else empty_rows(
        tier.rows.dim, tier.rows.model, tier.rows.revision, tier.rows.zdict)
    # a key written again after V lives in the delta now, whatever its tier row's fragment says
    if rows.n:
        again = tier.positions(rows.keys)
        removed[again[again >= 0]] = True
    return Delta(ds.version, rows, removed if removed.any() else None, pieces, checks)


def concat(parts: List[Rows], tier: Tier) -> Rows:
    """One Rows of several (their blobs joined, offsets shifted)."""
    if len(parts) == 1:
        return parts[0]
    arrays = {}
    for name in ARRAYS:
        if name in ("req_offsets", "meta_offsets"):
            blob = name.replace("offsets", "blob")
            shifted, base = [np.zeros(1, np.int64)], 0
            for p in parts:
                shifted.append(getattr(p, name)[1:] + base)
                base += len(getattr(p, blob))
            arrays[name] = np.concatenate(shifted)
        else:
            arrays[name] = np.concatenate([getattr(p, name) for p in parts])
    return Rows(arrays, zdict=tier.rows.zdict, model=tier.rows.model, revision=tier.rows.revision)


__all__ = ["Delta", "empty_delta", "read_delta", "key_bytes"]
