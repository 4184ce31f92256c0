"""The order a tier keeps its rows in, so that the rows a filter keeps lie in a few contiguous runs.

A filtered search that scans the rows it keeps is bounded by memory traffic:
gathering 50,000 rows' vectors scattered over a 1M-row matrix cost about 7 ms
(each row a cache and TLB miss), the same rows lying in runs about 1 ms. So a
tier's rows are sorted, once, when it is built:

1. by **window group**: the rows' distinct window starts, when a space has at
   most :data:`MAX_GROUPS` of them (annual or seasonal windows); a time window
   filter keeps the groups that start before it ends and end after it starts,
   and tests each row's end date only in groups where some rows pass and some
   do not;
2. by **longitude strip**: :func:`strips_for` strips holding equal numbers of
   rows (quantiles of the space's longitudes); a box keeps the strips its
   longitudes touch, and only the two strips at its edges need each row's
   longitude tested;
3. by **latitude** inside a strip, so a box's latitudes are one run per
   strip, found by binary search on an exact integer key (the block and the
   latitude's rank among the space's latitudes; no rounding at the edges).

Rows without a finite centre sit in a strip of their own that no box keeps.
The structure is a few small arrays plus one int64 key per row; it is saved
with the tier. Written by hand because it is a sort and a few binary searches
over numpy arrays, nothing an index library would add.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

MAX_GROUPS = 64  # more distinct window starts than this: one group, windows tested row by row
_SHIFT = np.int64(32)


def strips_for(n: int) -> int:
    """How many longitude strips for ``n`` rows: about sqrt(n / 4), so a strip holds a few hundred rows at 1M."""
    return int(np.clip(round(np.sqrt(max(n, 1) / 4)), 1, 1024))


class SpaceOrder:
    """Where each (window group, longitude strip) block of a sorted tier starts, and the rows' sort keys."""

    def __init__(self, arrays: Dict[str, np.ndarray]):
        self.group_starts = arrays["group_starts"]  # int32, sorted; empty: rows are not grouped by window
        self.group_min_end = arrays["group_min_end"]  # int32 per group
        self.group_max_end = arrays["group_max_end"]
        self.edges = arrays["edges"]  # float64, the S - 1 longitudes between strips
        self.lats = arrays["lats"]  # float64, the distinct finite latitudes, sorted
        self.okey = arrays["okey"]  # int64 per row: block << 32 | latitude rank (sorted)
        self.strips = len(self.edges) + 1
        self.groups = max(1, len(self.group_starts))
        self.block_starts = np.searchsorted(self.okey, np.arange(self.groups * (self.strips + 1) + 1,
                                                                 dtype=np.int64) << _SHIFT)

    def arrays(self) -> Dict[str, np.ndarray]:
        return {"group_starts": self.group_starts, "group_min_end": self.group_min_end,
                "group_max_end": self.group_max_end, "edges": self.edges, "lats": self.lats, "okey": self.okey}

    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays().values()) + self.block_starts.nbytes)

    @classmethod
    def build(cls, lon: np.ndarray, lat: np.ndarray, start: np.ndarray,
              end: np.ndarray) -> Tuple[np.ndarray, "SpaceOrder"]:
        """The permutation that sorts rows (``sorted[i] = rows[perm[i]]``) and the order of the sorted rows."""
        n = len(lon)
        finite = np.isfinite(lon) & np.isfinite(lat)
        strips = strips_for(n)
        edges = (np.quantile(lon[finite], np.linspace(0.0, 1.0, strips + 1)[1:-1]) if finite.any()
                 else np.zeros(strips - 1)).astype(np.float64)
        strip = np.where(finite, np.searchsorted(edges, np.where(finite, lon, 0.0), side="right"), len(edges) + 1)
        starts = np.unique(start)
        if len(starts) <= MAX_GROUPS:
            group = np.searchsorted(starts, start)
            group_starts = starts.astype(np.int32)
        else:
            group = np.zeros(n, dtype=np.int64)
            group_starts = np.empty(0, np.int32)
        lats = np.unique(lat[finite]).astype(np.float64)
        rank = np.where(finite, np.searchsorted(lats, np.where(finite, lat, 0.0)), 0)
        block = group.astype(np.int64) * (len(edges) + 2) + strip
        perm = np.lexsort((rank, block))
        okey = (block[perm] << _SHIFT) | rank[perm].astype(np.int64)
        n_groups = max(1, len(group_starts))
        min_end = np.full(n_groups, np.iinfo(np.int32).max, dtype=np.int64)
        max_end = np.full(n_groups, np.iinfo(np.int32).min, dtype=np.int64)
        np.minimum.at(min_end, group, end.astype(np.int64))
        np.maximum.at(max_end, group, end.astype(np.int64))
        return perm, cls({"group_starts": group_starts, "group_min_end": min_end.astype(np.int32),
                          "group_max_end": max_end.astype(np.int32), "edges": edges, "lats": lats,
                          "okey": okey})

    # ------------------------------------------------------------ selecting

    def runs(self, window: Optional[Tuple[int, int]], box: Optional[Tuple[float, float, float, float]]):
        """Contiguous runs ``[a, z)`` that hold every row passing ``window`` and ``box`` (and few others), with
        per run whether its rows' longitudes, and their window, must still be tested."""
        S1 = self.strips + 1
        if window is not None and len(self.group_starts):
            # groups that start before the window ends, less those whose every row ends before it starts
            groups = np.arange(int(np.searchsorted(self.group_starts, window[1], side="left")))
            groups = groups[self.group_max_end[groups] > window[0]]
            end_check = self.group_min_end[groups] <= window[0]
        else:
            groups = np.arange(self.groups)
            end_check = np.full(len(groups), window is not None)
        if box is None:
            a = self.block_starts[groups * S1]
            z = self.block_starts[(groups + 1) * S1]
            return a, z, np.zeros(len(a), dtype=bool), end_check
        w, s, e, n = box
        r0 = int(np.searchsorted(self.lats, s, side="left"))
        r1 = int(np.searchsorted(self.lats, n, side="right"))
        if w > e or r0 >= r1 or not len(groups):
            empty = np.empty(0, np.int64)
            return empty, empty, np.empty(0, bool), np.empty(0, bool)
        s0 = int(np.searchsorted(self.edges, w, side="right"))
        s1 = int(np.searchsorted(self.edges, e, side="right"))
        strips = np.arange(s0, s1 + 1)
        blocks = ((groups[:, None] * S1 + strips[None, :]).ravel()) << _SHIFT
        a = np.searchsorted(self.okey, blocks | r0, side="left")
        z = np.searchsorted(self.okey, blocks | r1, side="left")
        lon_check = np.tile((strips == s0) | (strips == s1), len(groups))
        return a, z, lon_check, np.repeat(end_check, len(strips))

    def select(self, rows, window, box, ranges_mask=None) -> "Selection":
        """The rows (of the tier these keys order) inside ``window`` and ``box`` as a :class:`Selection`;
        ``ranges_mask(positions)`` tests anything else (H3 cells) on the candidates."""
        a, z, lon_check, end_check = self.runs(window, box)
        keep = z > a
        sel = Selection(a[keep], z[keep])
        lon_check, end_check = lon_check[keep], end_check[keep]
        if not sel.count:
            return sel
        drop = None
        if box is not None and lon_check.any():
            # only the strips at the box's two edges: a few runs, tested in place
            drop = np.zeros(sel.count, dtype=bool)
            for r in np.flatnonzero(lon_check).tolist():
                lon = rows.lon[sel.a[r]:sel.z[r]]
                o = sel.offsets[r]
                drop[o:o + len(lon)] = (lon < box[0]) | (lon > box[2])
        if (window is not None and end_check.any()) or ranges_mask is not None:
            pos = sel.positions()
            fine = np.ones(sel.count, dtype=bool)
            if window is not None and end_check.any():
                test = np.repeat(end_check, sel.z - sel.a)
                at = pos[test]
                ok = rows.end[at] > window[0]
                if not len(self.group_starts):
                    ok &= rows.start[at] < window[1]
                fine[test] = ok
            if ranges_mask is not None:
                fine &= ranges_mask(pos)
            drop = ~fine if drop is None else (drop | ~fine)
        sel.drop = drop if drop is not None and drop.any() else None
        return sel


class Selection:
    """The rows a filter keeps: ascending runs ``[a, z)`` of a tier's positions, less the rows that
    ``drop`` marks (a bool per row of the runs, laid end to end; None: none dropped).

    Kept as runs, the rows are scanned in place (:meth:`scan`: no gather), handed to the graph as a
    bitmap made in one pass (:meth:`bitmap`), or listed (:meth:`positions`).
    """

    def __init__(self, a: np.ndarray, z: np.ndarray, drop: Optional[np.ndarray] = None):
        self.a, self.z, self.drop = a.astype(np.int64), z.astype(np.int64), drop
        lengths = self.z - self.a
        self.offsets = np.cumsum(lengths) - lengths
        self.count = int(lengths.sum())  # rows in the runs, dropped ones included

    @classmethod
    def of_positions(cls, positions: np.ndarray) -> "Selection":
        """The runs that ascending tier ``positions`` make (consecutive positions are one run)."""
        positions = np.asarray(positions, dtype=np.int64)
        if not len(positions):
            return cls(positions, positions)
        breaks = np.flatnonzero(np.diff(positions) != 1) + 1
        first = np.concatenate([[0], breaks])
        last = np.concatenate([breaks, [len(positions)]]) - 1
        return cls(positions[first], positions[last] + 1)

    @property
    def kept(self) -> int:
        return self.count - (int(self.drop.sum()) if self.drop is not None else 0)

    def exclude(self, positions: np.ndarray) -> None:
        """Drop the rows at tier ``positions`` (removed rows, the query's own row) where the runs hold them."""
        if not len(positions) or not self.count:
            return
        r = np.searchsorted(self.a, positions, side="right") - 1
        inside = (r >= 0) & (positions < self.z[np.clip(r, 0, None)])
        if not inside.any():
            return
        r, p = r[inside], positions[inside]
        if self.drop is None:
            self.drop = np.zeros(self.count, dtype=bool)
        self.drop[self.offsets[r] + p - self.a[r]] = True

    def positions(self, at: Optional[np.ndarray] = None) -> np.ndarray:
        """Tier positions of every row of the runs (dropped ones included), or of the rows at indexes ``at``
        of the runs laid end to end."""
        if at is None:
            lengths = self.z - self.a
            return np.repeat(self.a - self.offsets, lengths) + np.arange(self.count, dtype=np.int64)
        r = np.searchsorted(self.offsets, at, side="right") - 1
        return self.a[r] + (at - self.offsets[r])

    def kept_positions(self) -> np.ndarray:
        pos = self.positions()
        return pos if self.drop is None else pos[~self.drop]

    def bitmap(self, n: int) -> np.ndarray:
        """A bool per tier row (``n`` rows): kept or not."""
        bounds = np.empty(2 * len(self.a) + 2, dtype=np.int64)
        bounds[0], bounds[-1] = 0, n
        bounds[1:-1:2], bounds[2:-1:2] = self.a, self.z
        values = np.zeros(len(bounds) - 1, dtype=bool)
        values[1::2] = True
        mask = np.repeat(values, np.diff(bounds))
        if self.drop is not None:
            mask[self.positions(np.flatnonzero(self.drop))] = False
        return mask

    def scan(self, distances, vectors: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """``distances(block)`` of every row of the runs, laid end to end (inf where dropped).

        Runs of 32 rows or more are read in place; shorter ones are gathered ``chunk`` rows at a time
        (a call a run would cost more than the copy it saves).
        """
        return self._each(lambda block, out: out.__setitem__(slice(None), distances(block)), vectors, chunk,
                          np.inf)

    def products(self, vectors: np.ndarray, q: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """``vectors @ q`` for every row of the runs, laid end to end (-inf where dropped), written straight
        into one array (a 5 % filter of 1M rows is ~200 runs: temporaries per run cost a third of the scan)."""
        return self._each(lambda block, out: np.matmul(block, q, out=out), vectors, chunk, -np.inf)

    def _each(self, fill, vectors: np.ndarray, chunk: int, dropped: float) -> np.ndarray:
        out = np.empty(self.count, dtype=np.float32)
        if self.count and self.count >= 32 * len(self.a):
            for a, z, o in zip(self.a.tolist(), self.z.tolist(), self.offsets.tolist()):
                fill(vectors[a:z], out[o:o + z - a])
        elif self.count:
            pos = self.positions()
            for start in range(0, self.count, chunk):
                part = pos[start:start + chunk]
                fill(vectors[part], out[start:start + len(part)])
        if self.drop is not None:
            out[self.drop] = dropped
        return out
