"""rsembed_store.h3int: int64 H3 arithmetic against the h3 library, and the DuckDB macros against it."""

from __future__ import annotations

import math
import random

import duckdb
import h3
import numpy as np
import pytest

from rsembed_store import h3int
from rsembed_store.errors import SpecError


def _random_cells(n: int, seed: int) -> list:
    """``n`` valid int cells at random places and resolutions 0..15 (pentagons included)."""
    rng = random.Random(seed)
    cells = [h3.str_to_int(p) for p in h3.get_pentagons(rng.randrange(16))][:2]
    while len(cells) < n:
        lat, lon = math.degrees(math.asin(rng.uniform(-1, 1))), rng.uniform(-180, 180)
        cells.append(h3.str_to_int(h3.latlng_to_cell(lat, lon, rng.randrange(16))))
    return cells


CELLS = _random_cells(400, seed=19)


# ---------------------------------------------------------------- parsing


def test_cell_id_accepts_every_spelling_of_one_cell():
    cell = "8928308280fffff"
    n = int(cell, 16)
    for spelling in (cell, cell.upper(), "0x" + cell, " 0" + cell + " ", n, np.int64(n), np.uint64(n)):
        assert h3int.cell_id(spelling) == cell
        assert h3int.cell_int(spelling) == n


@pytest.mark.parametrize("bad", [-1, 0, 2**64, 2**70, "zz", "", "0x", "8928308280fffff0", 1.5, True, None, [1]])
def test_cell_id_refuses_bad_values_by_name(bad):
    with pytest.raises(SpecError) as info:
        h3int.cell_id(bad, "within cell")
    assert "within cell" in str(info.value) and "8928308280fffff" in str(info.value)


def test_cell_int_takes_an_h3cell_spec():
    from rsembed_store import H3Cell

    spec = H3Cell("8928308280fffff")
    assert h3int.cell_int(spec) == spec.cell_int


# ---------------------------------------------------------------- arithmetic against h3


def test_resolution_and_parent_match_h3():
    for c in CELLS:
        text = h3.int_to_str(c)
        assert h3int.resolution(c) == h3.get_resolution(text)
        for r in range(h3int.resolution(c) + 1):
            assert h3int.parent(c, r) == h3.str_to_int(h3.cell_to_parent(text, r))
        with pytest.raises(ValueError):
            h3int.parent(c, h3int.resolution(c) + 1)


def test_children_range_holds_exactly_the_descendants():
    rng = random.Random(7)
    for c in CELLS[:80]:
        own = h3int.resolution(c)
        r = min(15, own + rng.randrange(0, 4))
        lo, hi = h3int.children_range(c, r)
        kids = [h3.str_to_int(k) for k in h3.cell_to_children(h3.int_to_str(c), r)]
        assert min(kids) == lo and max(kids) == hi
        # the children of the neighbours stay outside
        for n in h3.grid_ring(h3.int_to_str(c), 1):
            for k in h3.cell_to_children(n, min(r, own + 1)):
                kk = h3.str_to_int(k) if r == own + 1 else h3int.child_min(h3.str_to_int(k), r)
                assert not lo <= kk <= hi
        if own > 0:
            with pytest.raises(ValueError):
                h3int.children_range(c, own - 1)


def test_next_cell_is_the_following_valid_cell():
    for c in CELLS[:60]:
        r = h3int.resolution(c)
        nxt = h3int.next_cell(c, r)
        assert nxt > c
        if r > 0 and not h3.is_pentagon(h3.cell_to_parent(h3.int_to_str(c), r - 1)):
            siblings = sorted(h3.str_to_int(s) for s in h3.cell_to_children(h3.cell_to_parent(h3.int_to_str(c), r - 1), r))
            later = [s for s in siblings if s > c]
            if later:
                assert nxt == later[0]


def test_cell_ranges_merge_adjacent_siblings_only():
    cell = h3.latlng_to_cell(46.2, 11.2, 8)
    sibs = [h3.str_to_int(c) for c in h3.cell_to_children(h3.cell_to_parent(cell, 7), 8)]
    assert h3int.cell_ranges(sibs, 12) == [h3int.children_range(h3.str_to_int(h3.cell_to_parent(cell, 7)), 12)]
    assert len(h3int.cell_ranges(sibs[:2] + sibs[3:], 12)) == 2
    fine = h3.str_to_int(h3.cell_to_center_child(cell, 13))
    assert h3int.cell_ranges([fine], 12) == [(h3int.parent(fine, 12),) * 2]


def test_ranges_and_prefix_sql_select_the_same_rows():
    rng = random.Random(3)
    res = 9
    base = h3.latlng_to_cell(46.0, 11.0, 6)
    rows = [h3.str_to_int(c) for c in h3.cell_to_children(h3.cell_to_parent(base, 5), res)]
    area = [h3.str_to_int(c) for c in rng.sample(h3.cell_to_children(h3.cell_to_parent(base, 5), 7), 12)]
    area.append(h3.str_to_int(h3.cell_to_center_child(base, 11)))
    con = duckdb.connect()
    con.execute("CREATE TABLE t(h3 BIGINT)")
    con.executemany("INSERT INTO t VALUES (?)", [[r] for r in rows])
    by_ranges = con.execute(f"SELECT h3 FROM t WHERE {h3int.ranges_sql(h3int.cell_ranges(area, res))}").fetchall()
    by_prefix = con.execute(f"SELECT h3 FROM t WHERE {h3int.prefix_sql(area, res)}").fetchall()
    want = {r for r in rows if any(h3int.at_res(a, res) == r or
                                   (h3int.resolution(a) <= res and h3int.parent(r, h3int.resolution(a)) == a)
                                   for a in area)}
    assert want and {r for (r,) in by_ranges} == want == {r for (r,) in by_prefix}


# ---------------------------------------------------------------- the SQL macros agree with Python


@pytest.fixture(scope="module")
def macros():
    con = duckdb.connect()
    for name, (args, body) in h3int.SQL_MACROS.items():
        con.execute(f"CREATE MACRO {name}({args}) AS {body}")
    con.execute("CREATE TABLE cells(c BIGINT)")
    con.executemany("INSERT INTO cells VALUES (?)", [[c] for c in CELLS])
    return con


def test_macros_agree_with_python_on_random_cells(macros):
    rows = macros.execute(
        """SELECT c, r, h3_resolution(c), h3_parent(c, r), h3_child_min(c, r), h3_child_max(c, r),
                  h3_to_string(c), h3_from_string(h3_to_string(c))
           FROM cells, range(-1, 17) AS t(r)"""
    ).fetchall()
    assert len(rows) == len(CELLS) * 18
    for c, r, res, par, lo, hi, text, back in rows:
        assert res == h3int.resolution(c)
        assert text == h3int.to_string(c) == h3.int_to_str(c) and back == h3int.from_string(text) == c
        if 0 <= r <= res:
            assert par == h3int.parent(c, r)
        else:
            assert par is None
            with pytest.raises(ValueError):
                h3int.parent(c, r)
        if res <= r <= 15:
            assert (lo, hi) == h3int.children_range(c, r)
        else:
            assert lo is None and hi is None
            with pytest.raises(ValueError):
                h3int.children_range(c, r)


def test_the_store_sql_uses_these_macros():
    from rsembed_store.query.sql import H3_MACROS

    assert {k: v for k, v in H3_MACROS.items() if k in h3int.SQL_MACROS} == h3int.SQL_MACROS


def test_cell_ids_is_the_bulk_form_of_cell_id():
    cell = "8928308280fffff"
    values = [cell, cell.upper(), "0x" + cell, int(cell, 16), None, "zz", -5, 2**64, 12345, True, 1.5]
    assert h3int.cell_ids(values) == [cell] * 4 + [None] * 7
    for v in values:
        try:
            expected = h3int.cell_id(v)
        except SpecError:
            expected = None
        assert h3int.cell_ids([v]) == [expected]
