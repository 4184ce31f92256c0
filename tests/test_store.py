import multiprocessing as mp

import numpy as np
import pyarrow.compute as pc
import pytest

from rsembed_store import (
    Embedding,
    H3Cell,
    OutputSpec,
    PointBuffer,
    Request,
    Store,
    TemporalSpec,
    UnknownSpaceError,
    VectorError,
    resolve,
)
from rsembed_store.errors import StoreError
from toy import toy_embedding


def req(lon=11.0, lat=46.0, year=2022, **kw):
    return resolve(Request("toy", PointBuffer(lon, lat, 100), TemporalSpec.year(year), **kw))


def test_put_then_lookup_in_order_with_misses(store):
    a, b = req(1, 1), req(2, 2)
    ea, eb = toy_embedding(a, 1), toy_embedding(b, 2)
    res = store.put_many([ea, eb])
    assert res.inserted == 2 and res.updated == 0
    got = store.lookup_many([b.key, "0" * 64, a.key])
    assert got[1] is None
    assert got[0].key == b.key and got[2].key == a.key
    np.testing.assert_array_equal(got[0].vector, eb.vector)
    np.testing.assert_array_equal(got[2].vector, ea.vector)
    assert got[0].cached is True
    assert got[0].request == b  # the canonical request round-trips exactly


def test_upsert_replaces_and_never_duplicates(store):
    a = req()
    store.put_many([toy_embedding(a, 1)])
    second = toy_embedding(a, 2)
    res = store.put_many([second, toy_embedding(a, 3), second])  # repeated key in one batch too
    assert res.inserted == 0 and res.updated == 1
    assert store.count(a.space) == 1
    np.testing.assert_array_equal(store.lookup([a.key])[0].vector, second.vector)


def test_grid_rows_are_lossless_and_searchable(store):
    g = resolve(Request("toy", H3Cell("8928308280fffff"), TemporalSpec.year(2021), output=OutputSpec.grid()))
    e = toy_embedding(g, 5, grid=True)
    e.grid[0, 0, 0] = np.nan  # no-data cell
    e = Embedding.from_grid(g, e.grid)
    store.put_many([e])
    back = store.lookup([g.key])[0]
    np.testing.assert_array_equal(back.grid, e.grid)  # NaN positions included
    assert back.grid.dtype == np.float32 and back.grid.shape == (8, 3, 4)
    np.testing.assert_allclose(back.vector, np.nanmean(e.grid.reshape(8, -1), axis=1), rtol=1e-6)


def test_int8_grids_keep_their_dtype(store):
    from rsembed_store.embedding import register_grid_codec

    register_grid_codec("test_int8_div10", lambda a: a.astype(np.float32) / 10)
    g = resolve(Request("toy", PointBuffer(3, 3, 100), TemporalSpec.year(2021), output=OutputSpec.grid()))
    q = np.arange(8 * 2 * 2, dtype=np.int8).reshape(8, 2, 2)
    store.put_many([Embedding.from_grid(g, q, grid_codec="test_int8_div10")])
    back = store.lookup([g.key])[0]
    assert back.grid.dtype == np.int8
    np.testing.assert_array_equal(back.grid, q)
    np.testing.assert_allclose(back.grid_f32(), q / 10)
    np.testing.assert_allclose(back.vector, (q / 10).reshape(8, -1).mean(axis=1), rtol=1e-6)


def test_row_columns_describe_the_request(store):
    h = resolve(Request("toy", H3Cell("8928308280fffff"), TemporalSpec.range("2021-03-01", "2021-06-01")))
    store.put_many([toy_embedding(h)])
    row = store.to_arrow(h.space).to_pylist()[0]
    import h3

    assert row["cell"] == h3.str_to_int("8928308280fffff") and row["cell_res"] == 9
    assert h3.cell_to_parent(h3.int_to_str(row["h3"]), 9) == "8928308280fffff"
    assert str(row["start_date"]) == "2021-03-01" and str(row["end_date"]) == "2021-06-01"
    assert row["year"] == 2021 and row["output"] == "pooled" and row["pooling"] == "mean"
    assert row["provider"] == "local" and row["revision"] == "toy-v1"
    lat, lon = h3.cell_to_latlng("8928308280fffff")
    assert row["lon"] == pytest.approx(lon) and row["lat"] == pytest.approx(lat)
    assert row["minlon"] < row["lon"] < row["maxlon"]


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda e: setattr(e, "vector", np.full(8, np.nan, np.float32)), "NaN/inf"),
        (lambda e: setattr(e, "vector", np.array([1, 2, np.inf, 4, 5, 6, 7, 8], np.float32)), "NaN/inf"),
        (lambda e: setattr(e, "vector", np.ones(5, np.float32)), "dimension 5.*dimension 8"),
        (lambda e: setattr(e, "vector", np.ones((2, 4), np.float32)), r"shape \(D,\)"),
        (lambda e: setattr(e, "grid", np.ones((8, 2, 2), np.float32)), "pooled"),
        # finite as float64, inf once stored as float32
        (lambda e: setattr(e, "vector", np.array([1, 2, 1e39, 4, 5, 6, 7, 8], np.float64)),
         r"vector has 1 value\(s\) beyond the float32 range .* e\.g\. 1e\+39 at index \(2,\), which would be stored "
         "as inf"),
        (lambda e: setattr(e, "vector", np.array([1, 2, 3, 4, 5, 6, 7, -3.5e38])), r"-3\.5e\+38 at index \(7,\)"),
    ],
)
def test_bad_vectors_are_refused_and_nothing_is_written(store, mutate, match):
    good = toy_embedding(req(1, 1))
    store.put_many([good])
    version = store.dataset(good.space).version
    bad = toy_embedding(req(2, 2))
    mutate(bad)
    with pytest.raises(VectorError, match=match):
        store.put_many([toy_embedding(req(3, 3)), bad])  # the good one in the batch is not written either
    assert store.count(good.space) == 1
    assert store.dataset(good.space).version == version


def test_a_float64_grid_beyond_float32_is_refused_and_nothing_is_written(store):
    g = resolve(Request("toy", H3Cell("8928308280fffff"), TemporalSpec.year(2021), output=OutputSpec.grid()))
    good = Embedding.from_grid(g, np.ones((8, 3, 4), np.float64))
    store.put_many([good])
    version = store.dataset(good.space).version
    grid = np.ones((8, 3, 4), np.float64)
    grid[1, 2, 3] = 1e39  # finite here; read back (float32) it would be inf
    bad = Embedding(request=g, vector=np.ones(8, np.float32), grid=grid)
    with pytest.raises(VectorError, match=r"grid has 1 value\(s\) beyond the float32 range .* 1e\+39 at index "
                                          r"\(1, 2, 3\)"):
        store.put_many([bad])
    assert store.dataset(good.space).version == version
    np.testing.assert_array_equal(store.lookup([g.key])[0].grid_f32(), np.ones((8, 3, 4), np.float32))


def test_dimension_mismatch_on_a_new_space_is_refused(store):
    e = toy_embedding(req())
    e.vector = np.ones(9, np.float32)
    store.put_many([e])  # a new space takes the dimension of its first rows ...
    e2 = toy_embedding(req(5, 5))
    with pytest.raises(VectorError, match="9"):
        store.put_many([e2])  # ... and refuses any other


def test_unknown_space_is_a_clear_error(store):
    with pytest.raises(UnknownSpaceError, match="nope__1"):
        store.lookup_many(["a" * 64], space="nope__1")
    with pytest.raises(UnknownSpaceError):
        store.space_info("nope__1")


def test_time_travel_and_tags(store):
    a = req()
    store.put_many([toy_embedding(a, 1)])
    v1 = store.dataset(a.space).version
    store.tag(a.space, "first")
    store.put_many([toy_embedding(a, 2), toy_embedding(req(9, 9), 3)])
    assert store.count(a.space) == 2
    assert store.count(a.space, version=v1) == 1
    assert store.count(a.space, version="first") == 1
    old = store.lookup_many([a.key], space=a.space, version="first")[0]
    np.testing.assert_array_equal(old.vector, toy_embedding(a, 1).vector)
    versions = store.versions(a.space)
    assert [v["version"] for v in versions] == sorted(v["version"] for v in versions)
    assert any("first" in v["tags"] for v in versions)
    with pytest.raises(StoreError, match="nosuchtag"):
        store.count(a.space, version="nosuchtag")


def test_stats_counts_rows_by_output(store):
    store.put_many([toy_embedding(req(1, 1)), toy_embedding(req(2, 2))])
    g = resolve(Request("toy", PointBuffer(3, 3, 100), TemporalSpec.year(2021), output=OutputSpec.grid()))
    store.put_many([toy_embedding(g, grid=True)])
    s = store.stats()
    (space,) = s["spaces"]
    assert space["rows"] == 3 and space["pooled_rows"] == 2 and space["grid_rows"] == 1
    assert space["dim"] == 8 and space["metric"] == "cosine" and space["bytes"] > 0
    assert any(i["columns"] == ["key"] for i in space["indices"])
    assert s["total_rows"] == 3


def test_reopen_sees_the_same_data(tmp_path):
    s1 = Store.open(tmp_path / "db")
    a = req()
    s1.put_many([toy_embedding(a, 4)])
    s2 = Store.open(tmp_path / "db")
    assert s2.lookup([a.key])[0] is not None
    s2.put_many([toy_embedding(req(7, 7))])
    assert s1.count(a.space) == 2  # the first handle reads the latest version


def test_scalar_indexes_build(store):
    store.put_many([toy_embedding(req(i, i)) for i in range(20)])
    space = req().space
    built = store.create_scalar_indexes(space)
    assert {"key", "h3", "start_date", "year"} <= set(built)
    cols = {tuple(i["columns"]) for i in store.stats()["spaces"][0]["indices"]}
    assert ("h3",) in cols and ("year",) in cols


@pytest.mark.slow
def test_concurrent_writers_never_duplicate_a_key(tmp_path):
    """Four spawned processes upsert overlapping new keys at the same instant."""
    import workers

    uri = str(tmp_path / "db")
    Store.open(uri).put_many([toy_embedding(req(-50, -50))])  # the space exists before the race
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=workers.upsert_worker, args=(uri, w, 40, 4, barrier)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    store = Store.open(uri)
    space = req().space
    keys = store.to_arrow(space, columns=["key"]).column("key")
    assert len(keys) == len(pc.unique(keys)), "a key was stored twice"
    assert len(keys) == 1 + 4 * 40 + 4 * 4 * 5


def test_key_index_follows_bulk_writes(store, monkeypatch):
    import rsembed_store.storage as store_mod

    monkeypatch.setattr(store_mod, "KEY_INDEX_SLACK_ROWS", 50)
    store.put_many([toy_embedding(req(0, 0))])  # first write builds the index
    space = req().space
    for batch in range(3):
        store.put_many([toy_embedding(req(batch, 0.01 * i)) for i in range(1, 120)])
    table = store.table(space)
    table.checkout_latest()
    stats = table.index_stats("key_idx")
    assert stats.num_unindexed_rows <= 50, stats
    assert stats.num_indexed_rows >= 300


def test_a_failed_key_index_refresh_is_logged_not_silent(store, monkeypatch, caplog):
    import rsembed_store.scalar_indexes as scalar_indexes

    def broken(*args, **kwargs):
        raise RuntimeError("index busy")

    monkeypatch.setattr(scalar_indexes, "create_scalar", broken)
    with caplog.at_level("WARNING", logger="rsembed_store.store"):
        store.put_many([toy_embedding(req(1.0, 1.0))])
    assert store.lookup_many([req(1.0, 1.0).key])[0] is not None  # the write itself stands
    assert any("key index was not refreshed" in r.getMessage() and "index busy" in r.getMessage()
               for r in caplog.records)
