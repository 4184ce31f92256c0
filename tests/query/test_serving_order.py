"""The sorted row order of a serving tier: a filter's runs keep exactly the rows a full test keeps."""

from __future__ import annotations

import numpy as np
import pytest

from rsembed_store.query.serving.filters import Filters
from rsembed_store.query.serving.order import MAX_GROUPS, Selection, SpaceOrder
from rsembed_store.query.serving.rows import key_bytes, top_k


class _Cols:
    """The filter columns of rows (what SpaceOrder and Filters read), already in the tier's order."""

    def __init__(self, **cols):
        self.__dict__.update(cols)
        self.n = len(cols["lon"])


def _rows(rng, n: int, starts: np.ndarray) -> _Cols:
    lon = np.round(rng.uniform(-10, 30, n), 3)  # rounded: many rows share a longitude or latitude
    lat = np.round(rng.uniform(40, 60, n), 3)
    bad = rng.random(n) < 0.01
    lon[bad], lat[bad] = np.nan, np.nan  # rows without a finite centre never pass a box
    start = rng.choice(starts, n).astype(np.int32)
    end = (start + rng.choice([90, 365], n)).astype(np.int32)
    h3 = rng.integers(0, 1000, n).astype(np.int64)
    return _Cols(lon=lon, lat=lat, start=start, end=end, h3=h3)


def _sorted(cols: _Cols):
    perm, order = SpaceOrder.build(cols.lon, cols.lat, cols.start, cols.end)
    return _Cols(**{k: v[perm] for k, v in vars(cols).items() if k != "n"}), order


@pytest.mark.parametrize("n_starts", [3, MAX_GROUPS + 20])  # grouped by window, and too many starts to group
def test_runs_keep_exactly_the_rows_a_full_test_keeps(n_starts):
    rng = np.random.default_rng(n_starts)
    starts = np.sort(rng.choice(np.arange(18000, 20000), n_starts, replace=False))
    rows, order = _sorted(_rows(rng, 20_000, starts))
    assert np.array_equal(np.sort(order.okey), order.okey)
    for trial in range(300):
        box = window = ranges = None
        if trial % 4 != 3:
            w, e = np.sort(rng.uniform(-12, 32, 2))
            s, n = np.sort(rng.uniform(38, 62, 2))
            if trial % 5 == 0:  # edges exactly on stored values: both edges are inclusive
                i, j = rng.integers(rows.n, size=2)
                w, e = sorted((rows.lon[i], rows.lon[j]))
                s, n = sorted((rows.lat[i], rows.lat[j]))
            box = (w, s, e, n)
        if trial % 3:
            lo = int(rng.integers(17900, 20100))
            window = (lo, lo + int(rng.integers(1, 800)))
        if trial % 7 == 0:
            ranges = [(100, 180), (400, 420)]
        f = Filters(window=window, box=box, ranges=ranges)
        if not f:
            continue
        fast = f.select(rows, order)
        assert np.array_equal(fast, np.flatnonzero(f.mask(rows))), (box, window, ranges)


def test_a_reversed_or_empty_box_keeps_nothing():
    rng = np.random.default_rng(1)
    rows, order = _sorted(_rows(rng, 5_000, np.array([18000, 18365])))
    for box in [(20.0, 45.0, 10.0, 50.0), (10.0, 55.0, 20.0, 50.0), (100.0, 0.0, 120.0, 10.0)]:
        assert len(Filters(box=box).select(rows, order)) == 0


def test_sampled_top_k_equals_a_full_sort():
    rng = np.random.default_rng(3)
    for n in (100, 5_000, 60_000):
        dist = rng.random(n).astype(np.float32)
        dist[rng.integers(n, size=n // 10)] = 0.5  # ties, broken by key
        dist[rng.integers(n, size=5)] = np.inf
        keys = key_bytes([f"{i:064x}" for i in rng.permutation(n)])
        for k in (1, 10, 100):
            want = np.lexsort((keys, dist))[:k]
            assert np.array_equal(top_k(dist, keys, k), want)


def test_a_selection_scans_lists_and_masks_the_same_rows():
    rng = np.random.default_rng(5)
    rows, order = _sorted(_rows(rng, 30_000, np.array([18000, 18365, 18730])))
    vectors = rng.standard_normal((rows.n, 8)).astype(np.float32)
    q = rng.standard_normal(8).astype(np.float32)
    for trial in range(60):
        w, e = np.sort(rng.uniform(-12, 32, 2))
        s, n = np.sort(rng.uniform(38, 62, 2))
        if trial % 2:  # narrow boxes: many short runs, gathered rather than read in place
            e, n = w + 0.5, s + 0.3
        f = Filters(window=(18300, 18400) if trial % 3 else None, box=(w, s, e, n))
        want = np.flatnonzero(f.mask(rows))
        sel = f.selection(rows, order)
        gone = rng.choice(rows.n, size=50, replace=False)
        sel.exclude(np.sort(gone))
        want = np.setdiff1d(want, gone)
        assert np.array_equal(sel.kept_positions(), want)
        assert sel.kept == len(want)
        assert np.array_equal(np.flatnonzero(sel.bitmap(rows.n)), want)
        dist = sel.scan(lambda block: block @ q, vectors)
        finite = np.isfinite(dist)
        assert np.array_equal(sel.positions(np.flatnonzero(finite)), want)
        np.testing.assert_allclose(dist[finite], vectors[want] @ q, rtol=1e-5, atol=1e-5)


def test_a_selection_made_of_positions_scans_them_in_their_order():
    rng = np.random.default_rng(8)
    vectors = rng.standard_normal((5_000, 4)).astype(np.float32)
    q = rng.standard_normal(4).astype(np.float32)
    for positions in (np.arange(100, 900), np.sort(rng.choice(5_000, 700, replace=False)),
                      np.r_[np.arange(10, 60), [70], np.arange(2_000, 4_000)], np.empty(0, np.int64)):
        sel = Selection.of_positions(positions)
        assert np.array_equal(sel.positions(), positions)
        np.testing.assert_allclose(sel.products(vectors, q), vectors[positions] @ q, rtol=1e-5, atol=1e-5)
