"""Similarity search against a real store: exact answers, filters pushed down to Lance, errors.

Every filtered search is checked against a numpy brute force over the rows the
filter should keep, so a filter that keeps too much or too little fails.
"""

import json
from dataclasses import replace

import h3
import numpy as np
import pytest

from rsembed_store import BBox, Embedding, H3Cell, PointBuffer, Request, Store, TemporalSpec, resolve
from rsembed_store.errors import SpecError, UnknownModelError, UnknownSpaceError, VectorError
from rsembed_store.h3int import cell_ranges
from rsembed_store.query.search import NotStoredError, SearchResult, explain, search
from rsembed_store.query.within import MAX_DIRECT_RANGES

W, S, E, N = 11.0, 46.0, 11.6, 46.5  # where the rows lie
WINDOWS = [
    TemporalSpec.year(2020),
    TemporalSpec.year(2021),
    TemporalSpec.year(2022),
    TemporalSpec.range("2020-11-01", "2021-02-01"),  # straddles 2020/2021
    TemporalSpec.range("2021-06-01", "2021-07-01"),
]


def _make(n=500, seed=0):
    rng = np.random.default_rng(seed)
    embs = []
    for i in range(n):
        lon, lat = rng.uniform(W, E), rng.uniform(S, N)
        if i % 7 == 0:  # some rows are H3 cells (their h3 is the cell's centre child)
            spatial = H3Cell(h3.latlng_to_cell(lat, lon, 9))
        else:
            spatial = PointBuffer(lon, lat, 100)
        r = resolve(Request("toy", spatial, WINDOWS[i % len(WINDOWS)]))
        embs.append(Embedding(request=r, vector=rng.standard_normal(8).astype(np.float32)))
    return embs


@pytest.fixture(scope="module", params=["serving", "lance"])
def held(tmp_path_factory, request):
    """A store with one toy space of 500 rows, and the rows as numpy arrays (read back from the store).

    Every test runs twice: reads through the serving tier (in memory) and through Lance alone.
    """
    config = {"serving": {"enabled": request.param == "serving", "background": False}}
    store = Store.open(tmp_path_factory.mktemp("search") / "db", config=config)
    embs = _make()
    store.put_many(embs)
    space = store.space_for("toy").space
    t = store.to_arrow(space, columns=["key", "vector", "lon", "lat", "h3", "start_date", "end_date", "year"])
    rows = {
        "key": np.array(t.column("key").to_pylist()),
        "vector": np.stack(t.column("vector").to_pylist()).astype(np.float32),
        "lon": np.array(t.column("lon").to_pylist()),
        "lat": np.array(t.column("lat").to_pylist()),
        "h3": np.array(t.column("h3").to_pylist(), dtype=np.int64),
        "start": np.array(t.column("start_date").to_pylist(), dtype="datetime64[D]"),
        "end": np.array(t.column("end_date").to_pylist(), dtype="datetime64[D]"),
        "year": np.array(t.column("year").to_pylist()),
    }
    return store, embs, rows


def on_lance(result) -> bool:
    """Whether a search ran on the Lance path (whose filter string the test may inspect)."""
    return result.plan.get("path") != "serving"


def distances(X, q, metric):
    X = X.astype(np.float64)
    q = np.asarray(q, dtype=np.float64)
    if metric == "cosine":
        return 1 - X @ q / (np.linalg.norm(X, axis=1) * np.linalg.norm(q))
    if metric == "l2":
        return ((X - q) ** 2).sum(axis=1)
    return 1 - X @ q  # Lance's dot distance


def brute(rows, q, k, metric="cosine", mask=None, drop=None):
    """The expected keys (nearest first) and their distances among ``mask`` rows."""
    keep = np.ones(len(rows["key"]), bool) if mask is None else mask.copy()
    if drop is not None:
        keep &= rows["key"] != drop
    d = distances(rows["vector"][keep], q, metric)
    keys = rows["key"][keep]
    order = sorted(range(len(keys)), key=lambda i: (d[i], keys[i]))[:k]
    return [str(keys[i]) for i in order], [float(d[i]) for i in order]


def check(result, rows, q, k, metric="cosine", mask=None, drop=None, tol=1e-5):
    """The result equals the brute force: same rows, same distances, same order (up to float32 near-ties)."""
    want_keys, want_d = brute(rows, q, k, metric, mask, drop)
    got_keys = [r["key"] for r in result]
    got_d = [r["distance"] for r in result]
    assert len(got_keys) == len(want_keys)
    np.testing.assert_allclose(got_d, want_d, rtol=1e-4, atol=tol)
    dist_of = dict(zip(want_keys, want_d))
    cut = want_d[-1] if want_d else 0.0
    for g, w, dg, dw in zip(got_keys, want_keys, got_d, want_d):
        if g != w:  # only a near-tie may swap places, or fall at the cut
            assert abs(dg - dw) < tol, (g, w, dg, dw)
            assert g in dist_of or abs(dg - cut) < tol


# ---------------------------------------------------------------- exact answers


@pytest.mark.parametrize("metric", ["cosine", "l2", "dot"])
def test_exact_results_equal_numpy_brute_force(held, metric):
    store, _, rows = held
    q = np.random.default_rng(1).standard_normal(8)
    result = search(store, "toy", q, k=15, metric=metric)
    assert isinstance(result, SearchResult) and len(result) == 15 and result.metric == metric
    assert result.plan["exact"] is True  # no vector index yet
    check(result, rows, q, 15, metric)
    d = [r["distance"] for r in result]
    assert d == sorted(d)


def test_like_a_key_an_embedding_or_a_request(held):
    store, embs, rows = held
    e = embs[3]
    by_key = search(store, "toy", e.key, k=5)
    check(by_key, rows, e.vector, 5, drop=e.key)
    assert e.key not in by_key.keys
    assert not on_lance(by_key) or f"key != '{e.key}'" in by_key.filter  # excluded in the filter
    by_emb = search(store, "toy", e, k=5)
    assert by_emb.keys == by_key.keys
    with_self = search(store, "toy", e, k=5, exclude_self=False)
    assert with_self.keys[0] == e.key and with_self[0]["distance"] == pytest.approx(0, abs=1e-5)
    # a request: looked up without computing, or answered by the given cache-first get
    by_request = search(store, "toy", e.request.to_request(), k=5)
    assert by_request.keys == by_key.keys
    asked = []

    def get(request):
        asked.append(request.key)
        return store.lookup_many([request.key], space=request.space)[0]

    assert search(store, "toy", e.request, k=5, get=get).keys == by_key.keys and asked == [e.key]


def test_result_rows_arrow_and_json(held):
    store, embs, rows = held
    result = search(store, "toy", embs[0].key, k=4)
    row = result[0]
    assert set(row) == {"key", "distance", "lon", "lat", "h3", "cell", "start_date", "end_date", "year", "request"}
    assert h3.is_valid_cell(row["h3"]) and h3.get_resolution(row["h3"]) == 12
    assert row["request"]["model"] == {"id": "toy", "revision": "toy-v1"}
    assert len(list(iter(result))) == len(result) == 4
    table = result.to_arrow()
    assert table.column_names == ["key", "distance", "lon", "lat", "h3", "cell", "start_date", "end_date", "year",
                                  "request"]
    assert table.column("key").to_pylist() == result.keys
    assert json.loads(table.column("request")[0].as_py()) == row["request"]
    assert table.column("request")[0].as_py() == store.lookup_many([row["key"]])[0].request.canonical
    json.dumps(result.to_dicts())  # JSON-ready
    json.dumps(result.to_dict())
    cells = [r for r in search(store, "toy", embs[0].key, k=100) if r["cell"]]
    assert cells and all(h3.get_resolution(r["cell"]) == 9 for r in cells)


def test_ties_are_broken_by_key(tmp_path):
    store = Store.open(tmp_path / "db")
    same = np.ones(8, np.float32)
    embs = [Embedding(request=resolve(Request("toy", PointBuffer(11 + i / 100, 46, 100), TemporalSpec.year(2021))),
                      vector=same) for i in range(12)]
    store.put_many(embs)
    for k in (1, 5, 11):
        result = search(store, "toy", same, k=k)
        assert result.keys == sorted(e.key for e in embs)[:k]


# ---------------------------------------------------------------- filters


def test_temporal_filter_keeps_overlapping_windows(held):
    store, embs, rows = held
    q = embs[10].vector
    for window, lo, hi in [(TemporalSpec.range("2021-01-15", "2021-03-01"), "2021-01-15", "2021-03-01"),
                           (TemporalSpec.year(2022), "2022-01-01", "2023-01-01"),
                           ("2020-12-31/2021-01-01", "2020-12-31", "2021-01-01"),
                           ({"mode": "year", "year": 2020}, "2020-01-01", "2021-01-01")]:
        mask = (rows["start"] < np.datetime64(hi)) & (rows["end"] > np.datetime64(lo))
        result = search(store, "toy", q, k=400, temporal=window, exclude_self=False)
        assert len(result) == mask.sum() > 0
        check(result, rows, q, 400, mask=mask)


def test_within_bbox(held):
    store, embs, rows = held
    box = BBox(11.1, 46.1, 11.35, 46.3)
    mask = (rows["lon"] >= box.minlon) & (rows["lon"] <= box.maxlon) & (rows["lat"] >= box.minlat) & \
        (rows["lat"] <= box.maxlat)
    q = embs[0].vector
    result = search(store, "toy", q, k=500, within=box, exclude_self=False)
    assert len(result) == mask.sum() > 20
    check(result, rows, q, 500, mask=mask)
    # the dict form and a PointBuffer (its square) work too
    assert search(store, "toy", q, k=500, within=box.to_dict(), exclude_self=False).keys == result.keys


def test_within_bbox_small_against_the_extent_uses_the_h3_index_and_stays_exact(held):
    store, embs, rows = held
    hints = {"minlon": W - 10, "minlat": S - 10, "maxlon": E + 10, "maxlat": N + 10}
    from rsembed_store.query.within import bbox_clause

    box = BBox(11.1, 46.1, 11.35, 46.3)
    sql = bbox_clause(box, 12, hints)
    assert "h3 BETWEEN" in sql and "lon >=" in sql
    space = store.space_for("toy").space
    kept = set(store.to_arrow(space, columns=["key"], filter=sql).column("key").to_pylist())
    mask = (rows["lon"] >= box.minlon) & (rows["lon"] <= box.maxlon) & (rows["lat"] >= box.minlat) & \
        (rows["lat"] <= box.maxlat)
    assert kept == set(rows["key"][mask])


def _inside(lon, lat, ring):
    """Ray casting: is (lon, lat) inside the closed ring?"""
    inside = np.zeros(len(lon), bool)
    for (x1, y1), (x2, y2) in zip(ring, ring[1:]):
        crosses = ((y1 > lat) != (y2 > lat)) & (lon < (x2 - x1) * (lat - y1) / (y2 - y1 + 1e-300) + x1)
        inside ^= crosses
    return inside


def test_within_polygon_is_exact(held):
    store, embs, rows = held
    outer = [[11.05, 46.05], [11.55, 46.1], [11.4, 46.45], [11.2, 46.3], [11.05, 46.05]]
    hole = [[11.25, 46.15], [11.35, 46.15], [11.35, 46.25], [11.25, 46.25], [11.25, 46.15]]
    polygon = {"type": "Polygon", "coordinates": [outer, hole]}
    mask = _inside(rows["lon"], rows["lat"], outer) & ~_inside(rows["lon"], rows["lat"], hole)
    q = embs[1].vector
    result = search(store, "toy", q, k=500, within=polygon, exclude_self=False)
    assert len(result) == mask.sum() > 20
    check(result, rows, q, 500, mask=mask)
    # a Feature, and a MultiPolygon of two parts
    feature = {"type": "Feature", "properties": {}, "geometry": polygon}
    assert search(store, "toy", q, k=500, within=feature, exclude_self=False).keys == result.keys
    east = [[11.45, 46.3], [11.59, 46.3], [11.59, 46.49], [11.45, 46.49], [11.45, 46.3]]
    multi = {"type": "MultiPolygon", "coordinates": [[outer, hole], [east]]}
    mask2 = mask | _inside(rows["lon"], rows["lat"], east)
    result2 = search(store, "toy", q, k=500, within=multi, exclude_self=False)
    check(result2, rows, q, 500, mask=mask2)
    assert "ST_Within" in result2.filter


def test_within_coarse_cells(held):
    store, embs, rows = held
    q = embs[2].vector
    cell = h3.latlng_to_cell(46.25, 11.3, 6)  # ~36 km2, a fair share of the rows
    parent = np.array([h3.str_to_int(h3.cell_to_parent(h3.int_to_str(int(c)), 6)) for c in rows["h3"]])
    mask = parent == h3.str_to_int(cell)
    for given in (cell, [cell], [h3.str_to_int(cell)], [H3Cell(cell)]):
        result = search(store, "toy", q, k=500, within=given, exclude_self=False)
        assert len(result) == mask.sum() > 5
        check(result, rows, q, 500, mask=mask)
    assert not on_lance(result) or "h3 BETWEEN" in result.filter


def test_within_fine_cells_match_their_parent_at_the_space_resolution(held):
    store, embs, rows = held
    q = embs[2].vector
    picked = rows["h3"][[5, 17, 40]]
    fine = [h3.cell_to_children(h3.int_to_str(int(c)), 14)[3] for c in picked]  # res 14, inside the row's cell
    mask = np.isin(rows["h3"], picked)
    result = search(store, "toy", q, k=500, within=[fine[0], h3.str_to_int(fine[1]), H3Cell(fine[2])],
                    exclude_self=False)
    assert len(result) == mask.sum() >= 3
    check(result, rows, q, 500, mask=mask)


def test_many_cells_are_tested_while_scanning(held):
    store, embs, rows = held
    q = embs[4].vector
    picked = [h3.int_to_str(int(c)) for c in rows["h3"][: 3 * MAX_DIRECT_RANGES : 3]]
    coarse = [h3.cell_to_parent(h3.int_to_str(int(c)), 10) for c in rows["h3"][100:160:3]]
    cells = picked + coarse
    assert len(cell_ranges([h3.str_to_int(c) for c in cells], 12)) > MAX_DIRECT_RANGES
    parent10 = np.array([h3.str_to_int(h3.cell_to_parent(h3.int_to_str(int(c)), 10)) for c in rows["h3"]])
    mask = np.isin(rows["h3"], [h3.str_to_int(c) for c in picked]) | \
        np.isin(parent10, [h3.str_to_int(c) for c in coarse])
    result = search(store, "toy", q, k=500, within=cells, exclude_self=False)
    assert not on_lance(result) or ">>" in result.filter  # the prefix form, not dozens of ranges
    assert len(result) == mask.sum()
    check(result, rows, q, 500, mask=mask)


def test_where_is_anded_in(held):
    store, embs, rows = held
    q = embs[6].vector
    mask = (rows["year"] == 2021) & (rows["lon"] > 11.3)
    result = search(store, "toy", q, k=500, where="year = 2021 AND lon > 11.3", exclude_self=False)
    assert len(result) == mask.sum() > 0
    check(result, rows, q, 500, mask=mask)
    # an OR inside where stays inside its parentheses
    box = BBox(11.0, 46.0, 11.2, 46.2)
    inbox = (rows["lon"] >= 11.0) & (rows["lon"] <= 11.2) & (rows["lat"] >= 46.0) & (rows["lat"] <= 46.2)
    mask = inbox & ((rows["year"] == 2020) | (rows["year"] == 2022))
    result = search(store, "toy", q, k=500, within=box, where="year = 2020 OR year = 2022", exclude_self=False)
    check(result, rows, q, 500, mask=mask)


def test_all_filters_together_and_exclude_self(held):
    store, embs, rows = held
    e = embs[8]
    box = BBox(11.0, 46.0, 11.5, 46.4)
    mask = (rows["lon"] >= box.minlon) & (rows["lon"] <= box.maxlon) & (rows["lat"] >= box.minlat) & \
        (rows["lat"] <= box.maxlat) & (rows["start"] < np.datetime64("2022-01-01")) & \
        (rows["end"] > np.datetime64("2021-01-01")) & (rows["year"] != 2020)
    result = search(store, "toy", e.key, k=50, within=box, temporal=TemporalSpec.year(2021), where="year != 2020")
    check(result, rows, e.vector, 50, mask=mask, drop=e.key)
    assert e.key not in result.keys
    assert not on_lance(result) or "_rowid !=" in result.filter  # the own row, excluded in the filter


# ---------------------------------------------------------------- errors


def test_clear_errors(held):
    store, embs, rows = held
    with pytest.raises(VectorError, match="dimension 3.*dimension 8"):
        search(store, "toy", [1.0, 2.0, 3.0])
    with pytest.raises(VectorError, match="NaN"):
        search(store, "toy", [1.0] * 7 + [float("nan")])
    with pytest.raises(VectorError, match=r"beyond the float32 range .* 1e\+39 at index \(7,\)"):
        search(store, "toy", [1.0] * 7 + [1e39])  # finite, but inf once cast to float32
    with pytest.raises(VectorError, match="zeros"):
        search(store, "toy", [0.0] * 8)
    with pytest.raises(VectorError):
        search(store, "toy", [[1.0] * 8, [1.0] * 8])
    with pytest.raises(UnknownModelError, match="nope"):
        search(store, "nope", [1.0] * 8)
    with pytest.raises(UnknownSpaceError, match="toyyear"):
        search(store, "toyyear", [1.0] * 4)  # a registered model with nothing stored
    with pytest.raises(SpecError, match="metric='manhattan'"):
        search(store, "toy", [1.0] * 8, metric="manhattan")
    with pytest.raises(SpecError, match="k=0"):
        search(store, "toy", [1.0] * 8, k=0)
    with pytest.raises(NotStoredError, match="0000000000"):
        search(store, "toy", "0" * 64)
    with pytest.raises(SpecError, match="not a key"):
        search(store, "toy", "hello")
    missing = resolve(Request("toy", PointBuffer(12.5, 47.5, 100), TemporalSpec.year(2021)))
    with pytest.raises(NotStoredError, match=missing.key):
        search(store, "toy", missing)
    with pytest.raises(SpecError, match="not accepted"):
        search(store, "toy", [1.0] * 8, within=3.5)
    with pytest.raises(SpecError, match="not a valid H3"):
        search(store, "toy", [1.0] * 8, within=["zz"])
    with pytest.raises(SpecError, match="LineString"):
        search(store, "toy", [1.0] * 8, within={"type": "LineString", "coordinates": [[0, 0], [1, 1]]})


@pytest.mark.parametrize("where, why", [
    ("year = = 2021", "refused by LanceDB"),
    ("no_such_column = 1", "not a stored column"),
    ("year = 2021; DROP TABLE x", "';'"),
    ("year IN (SELECT 1)", "'SELECT'"),
    ("year = 2021) OR (1 = 1", "parentheses"),
    ("year = 2021 -- comment", "comments"),
    ("", "non-empty"),
])
def test_bad_where_is_refused_naming_the_filter(held, where, why):
    store, _, _ = held
    with pytest.raises(SpecError, match=why) as err:
        search(store, "toy", [1.0] * 8, where=where)
    if where:
        assert repr(where)[1:-1].split(";")[0][:10] in str(err.value)


def test_an_unknown_or_internal_column_is_named_with_the_columns_one_may_filter_on(held):
    store, _, _ = held
    for where, name in (("nosuchcol = 1", "nosuchcol"), ("year = 2021 AND Bogus > 2", "Bogus"),
                        ("_rowid = 1", "_rowid"), ('"_rowaddr" > 0', "_rowaddr"), ("_distance < 1", "_distance")):
        with pytest.raises(SpecError) as err:
            search(store, "toy", [1.0] * 8, where=where)
        message = str(err.value)
        assert f"names {name!r}" in message and err.value.field == "where", message
        listed = message.split("the columns you may filter on: ")[1]
        assert all(c in listed for c in ("'year'", "'provider'", "'start_date'", "'h3'", "'lon'")), message
        assert "_row" not in listed and "'vector'" not in listed and "_distance" not in listed, message
        assert ".rs:" not in message and "/home/" not in message, message
    # a literal that looks like an internal column is only a string
    assert len(search(store, "toy", [1.0] * 8, where="provider != '_rowid'", k=2)) == 2


def test_lance_errors_lose_their_rust_source_paths(held):
    store, _, _ = held
    with pytest.raises(SpecError) as err:
        search(store, "toy", [1.0] * 8, where="year = 'abc'")
    message = str(err.value)
    assert "could not convert" in message and ".rs:" not in message and "Invalid user input" not in message


def test_cli_and_http_name_the_where_input(held):
    from click.testing import CliRunner

    from rsembed_store.cli import main

    store, _, _ = held
    res = CliRunner().invoke(main, ["--db", store.uri, "search", "-m", "toy", "--like-key", held[1][0].key,
                                    "--where", "nosuchcol = 1"])
    assert res.exit_code == 2 and res.stderr.startswith("error: --where: "), res.output
    assert "'nosuchcol', which is not a stored column" in res.stderr and "'year'" in res.stderr
    assert ".rs:" not in res.stderr and "_rowaddr" not in res.stderr

    import asyncio

    import httpx

    from rsembed_store.query.service import create_app

    async def send():
        transport = httpx.ASGITransport(app=create_app(store), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://rsembed-store") as client:
            return await client.post("/search", json={"model": "toy", "like": {"vector": [1.0] * 8},
                                                      "where": "nosuchcol = 1"})

    answer = asyncio.run(send())
    assert answer.status_code == 422, answer.text
    err = answer.json()["error"]
    assert err["code"] == "spec_error" and err["field"] == "where" and "nosuchcol" in err["message"]


def test_keywords_inside_quotes_are_fine(held):
    store, _, _ = held
    result = search(store, "toy", [1.0] * 8, where="provider != 'select; drop'", k=3)
    assert len(result) == 3


def test_search_never_mixes_spaces(tmp_path):
    store = Store.open(tmp_path / "db")
    v1 = _make(60, seed=1)
    v2 = [Embedding(request=replace(e.request, revision="toy-v2", canonical="", key=""), vector=e.vector * 2)
          for e in _make(40, seed=2)]
    small = [Embedding(request=resolve(Request("toyyear", PointBuffer(11.2, 46.2 + i / 100, 100),
                                               TemporalSpec.year(2020))),
                       vector=np.arange(4, dtype=np.float32) + i) for i in range(5)]
    store.put_many(v1 + v2 + small)
    assert len(store.spaces()) == 3
    q = np.ones(8)
    keys1 = {e.key for e in v1}
    keys2 = {e.key for e in v2}
    assert set(search(store, "toy", q, k=100).keys) == keys1
    assert set(search(store, "toy", q, k=100, revision="toy-v2").keys) == keys2
    with pytest.raises(VectorError, match="never mixed"):
        search(store, "toy", v2[0])  # an embedding of toy-v2 in the toy-v1 space
    with pytest.raises(NotStoredError):
        search(store, "toy", v2[0].key)  # its key is not in toy-v1
    with pytest.raises(VectorError, match="dimension 8.*dimension 4"):
        search(store, "toyyear", q)
    with pytest.raises(VectorError, match="never mixed"):
        search(store, "toyyear", v1[0].request)
    assert len(search(store, "toyyear", small[0].key, k=10)) == 4


def test_explain_shows_the_filter_pushed_into_lance_or_the_tier_it_would_use(held):
    store, embs, _ = held
    plan = explain(store, "toy", embs[0].key, within=BBox(11.1, 46.1, 11.3, 46.3), temporal=TemporalSpec.year(2021))
    if plan["path"] == "serving":
        assert plan["filters"]["box"] == (11.1, 46.1, 11.3, 46.3) and plan["filters"]["window_days"]
        assert plan["tier"]["path"] == "serving" and plan["tier"]["rows"] == store.count(plan["space"])
        return
    assert "lon >=" in plan["filter"] and "start_date" in plan["filter"]
    assert "lon >=" in plan["lance_plan"] or "lon@" in plan["lance_plan"]
    assert plan["exact"] is True


# ---------------------------------------------------------------- CLI


def test_cli_search_like_key(held):
    from click.testing import CliRunner

    from rsembed_store.cli import main

    store, embs, rows = held
    e = embs[0]
    runner = CliRunner()
    res = runner.invoke(main, ["--db", store.uri, "search", "-m", "toy", "--like-key", e.key, "-k", "3",
                               "--during", "2021", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    mask = (rows["start"] < np.datetime64("2022-01-01")) & (rows["end"] > np.datetime64("2021-01-01"))
    assert [r["key"] for r in data["results"]] == brute(rows, e.vector, 3, mask=mask, drop=e.key)[0]
    text = runner.invoke(main, ["--db", store.uri, "search", "-m", "toy", "--like-key", e.key, "-k", "2",
                                "--within-bbox", "11.0,46.0,11.6,46.5"])
    assert text.exit_code == 0 and "space toy__toy-v1" in text.output
    bad = runner.invoke(main, ["--db", store.uri, "search", "-m", "toy", "--like-key", e.key, "--year", "2021"])
    assert bad.exit_code == 2 and "--during" in bad.output
    miss = runner.invoke(main, ["--db", store.uri, "search", "-m", "toy", "--like-point", "12.5,47.5",
                                "--buffer-m", "100", "--year", "2021", "--no-compute"])
    assert miss.exit_code == 2 and "not stored" in miss.output
    e1 = embs[1]  # a PointBuffer row of 2021
    hit = e1.request.spatial
    ok = runner.invoke(main, ["--db", store.uri, "search", "-m", "toy", "--like-point", f"{hit.lon},{hit.lat}",
                              "--buffer-m", str(hit.buffer_m), "--year", "2021", "--no-compute", "--json"])
    assert ok.exit_code == 0, ok.output
    got = [r["key"] for r in json.loads(ok.output)["results"]]
    assert got == brute(rows, e1.vector, 10, drop=e1.key)[0]
