"""Bulk import: keys equal resolve()'s, rows as put_many would store them, bad input refused whole."""

import json

import h3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from io_data import mixed_table, vectors

from rsembed_store import BBox, H3Cell, PointBuffer, Request, TemporalSpec, resolve
from rsembed_store.errors import SpecError, VectorError
from rsembed_store.io.importer import import_table
from rsembed_store.io.model import declare_imported
from rsembed_store.space import _spatial_summary


def _request(row: dict, model: str) -> Request:
    kind = row["spatial_type"]
    sp = (PointBuffer(row["lon"], row["lat"], row["buffer_m"]) if kind == "PointBuffer" else
          BBox(row["minlon"], row["minlat"], row["maxlon"], row["maxlat"]) if kind == "BBox" else H3Cell(row["cell"]))
    return Request(model, sp, TemporalSpec.year(int(row["year"])))


def test_keys_and_rows_equal_resolve_and_put_many(store):
    t = mixed_table(900)
    res = import_table(store, t, model="mixed", revision="r1", batch_rows=250)
    assert (res.rows, res.inserted, res.kinds) == (900, 900, {"PointBuffer": 300, "BBox": 300, "H3Cell": 300})
    stored = {r["key"]: r for r in store.to_arrow(res.space).to_pylist()}
    for i, row in enumerate(t.to_pylist()):
        r = resolve(_request(row, "imported:mixed"))
        got = stored[r.key]  # the key resolve() gives is stored
        assert got["request"] == r.canonical
        want = _spatial_summary(r.spatial, store.h3_res)
        for name, w in zip(("spatial_type", "lon", "lat", "minlon", "minlat", "maxlon", "maxlat", "h3", "cell",
                            "cell_res"), want):
            if isinstance(w, float):
                assert got[name] == pytest.approx(w, rel=0, abs=1e-9), (i, name)
            else:
                assert got[name] == w, (i, name)
        start, end = r.temporal.window()
        assert (got["start_date"], got["end_date"], got["year"]) == (start, end, start.year)
        assert np.array_equal(np.asarray(got["vector"], np.float32), np.asarray(row["embedding"], np.float32))
    found = store.lookup([_request(t.slice(5, 1).to_pylist()[0], "imported:mixed")])[0]
    assert found is not None and np.array_equal(found.vector, np.asarray(t.column("embedding")[5].as_py(), np.float32))


def test_year_model_keys_the_year_a_window_starts_in(store):
    n = 50
    rng = np.random.default_rng(3)
    start = np.datetime64("2020-03-01") + rng.integers(0, 900, n).astype("timedelta64[D]")
    t = pa.table({"lon": rng.uniform(0, 1, n), "lat": rng.uniform(0, 1, n), "date": start,
                  "vector": vectors(rng.standard_normal((n, 4)).astype(np.float32))})
    res = import_table(store, t, model="annual", revision="2024", temporal="year", buffer_m=50)
    keys = set(store.to_arrow(res.space).column("key").to_pylist())
    for row in t.to_pylist():
        r = resolve(Request("imported:annual", PointBuffer(row["lon"], row["lat"], 50),
                            TemporalSpec.range(row["date"].isoformat(), "9998-01-01")))
        assert r.temporal.to_dict() == {"mode": "year", "year": row["date"].year}
        assert r.key in keys


def test_date_and_range_windows(store):
    rng = np.random.default_rng(4)
    n = 40
    d = np.datetime64("2021-01-01") + rng.integers(0, 700, n).astype("timedelta64[D]")
    t = pa.table({"cell": [h3.latlng_to_cell(1.0 * i, 2.0, 7) for i in range(n)], "start_date": d,
                  "end_date": d + rng.integers(1, 90, n).astype("timedelta64[D]"),
                  "emb": vectors(rng.standard_normal((n, 4)).astype(np.float32))})
    res = import_table(store, t, model="ranges", revision="1")
    keys = set(store.to_arrow(res.space).column("key").to_pylist())
    for row in t.to_pylist():
        r = resolve(Request("imported:ranges", H3Cell(row["cell"]),
                            TemporalSpec.range(row["start_date"].isoformat(), row["end_date"].isoformat())))
        assert r.key in keys


def _geoparquet(path, wkb_values, extra):
    t = pa.table({**extra, "geometry": pa.array(wkb_values, pa.binary())})
    geo = {"version": "1.1.0", "primary_column": "geometry",
           "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Point"]}}}
    pq.write_table(t.replace_schema_metadata({"geo": json.dumps(geo)}), path)


def test_geoparquet_points_and_polygons(store, tmp_path):
    import struct

    rng = np.random.default_rng(5)
    n = 30
    lon, lat = rng.uniform(-5, 5, n), rng.uniform(40, 45, n)
    v = rng.standard_normal((n, 4)).astype(np.float32)
    big = [struct.pack(">BIdd", 0, 1, x, y) for x, y in zip(lon, lat)]  # big-endian too
    little = [struct.pack("<BIdd", 1, 1, x, y) for x, y in zip(lon, lat)]
    _geoparquet(tmp_path / "p.parquet", little[:15] + big[15:], {"year": np.full(n, 2022), "embedding": vectors(v)})
    res = import_table(store, str(tmp_path / "p.parquet"), model="pts", revision="1", buffer_m=120)
    keys = set(store.to_arrow(res.space).column("key").to_pylist())
    assert all(resolve(Request("imported:pts", PointBuffer(x, y, 120), TemporalSpec.year(2022))).key in keys
               for x, y in zip(lon, lat))
    rect = [struct.pack("<BIII10d", 1, 3, 1, 5, x, y, x + 0.1, y, x + 0.1, y + 0.2, x, y + 0.2, x, y)
            for x, y in zip(lon, lat)]
    _geoparquet(tmp_path / "b.parquet", rect, {"year": np.full(n, 2022), "embedding": vectors(v)})
    res = import_table(store, str(tmp_path / "b.parquet"), model="boxes", revision="1")
    keys = set(store.to_arrow(res.space).column("key").to_pylist())
    assert all(resolve(Request("imported:boxes", BBox(x, y, x + 0.1, y + 0.2), TemporalSpec.year(2022))).key in keys
               for x, y in zip(lon, lat))


def test_idempotent_and_update(store, mixed):
    first = import_table(store, mixed, model="again", revision="1")
    before = store.to_arrow(first.space).sort_by("key")
    second = import_table(store, mixed, model="again", revision="1")
    assert (second.inserted, second.updated, second.existing) == (0, 0, 900)
    after = store.to_arrow(first.space).sort_by("key")
    assert after.num_rows == 900 and after.column("created_at").equals(before.column("created_at"))
    third = import_table(store, mixed, model="again", revision="1", update=True)
    assert (third.inserted, third.updated) == (0, 900)


def test_repeated_keys_in_a_batch_keep_the_first(store):
    t = mixed_table(6)
    t = pa.concat_tables([t, t.slice(0, 2)]).combine_chunks()  # one batch
    res = import_table(store, t, model="dups", revision="1")
    assert (res.rows, res.inserted, res.duplicates) == (8, 6, 2)


def test_record_batch_stream_is_read_once(store, mixed):
    reader = pa.RecordBatchReader.from_batches(mixed.schema, mixed.to_batches(max_chunksize=100))
    seen = []
    res = import_table(store, reader, model="stream", revision="1", batch_rows=256, progress=seen.append)
    assert res.inserted == 900 and store.count(res.space) == 900 and sum(seen) == 900


def test_dry_run_writes_nothing(store, mixed):
    res = import_table(store, mixed, model="dry", revision="1", dry_run=True)
    assert res.dry_run and res.rows == 900 and res.inserted == 0
    assert not [s for s in store.spaces() if s.model == "imported:dry"]


def _bad(t: pa.Table, name: str, i: int, value):
    col = t.column(name).to_pylist()
    col[i] = value
    return t.set_column(t.schema.get_field_index(name), name, pa.array(col, t.schema.field(name).type))


@pytest.mark.parametrize("change,error,text", [
    (lambda t: _bad(t, "lon", 696, 200.0), SpecError, "row 696: lon=200.0 is out of range"),
    (lambda t: _bad(t, "lat", 3, -91.0), SpecError, "row 3: lat=-91.0"),
    (lambda t: _bad(t, "buffer_m", 699, 0.0), SpecError, "row 699: buffer_m=0.0"),
    (lambda t: _bad(t, "maxlon", 700, -30.0), SpecError, "row 700: BBox needs minlon < maxlon"),
    (lambda t: _bad(t, "cell", 602, "8f00"), SpecError, "row 602: cell='8f00' is not a valid H3 cell"),
    (lambda t: _bad(t, "year", 650, 0), SpecError, "row 650: year=0.0 is not accepted"),
    (lambda t: _bad(t, "spatial_type", 651, "Circle"), SpecError, "row 651: spatial_type='Circle'"),
    (lambda t: _bad(t, "embedding", 800, [float("nan")] * 8), VectorError, "row 800: vector has NaN/inf"),
    (lambda t: _bad(t, "embedding", 801, [1e39] * 8), VectorError, "row 801: vector has NaN/inf"),
    (lambda t: t.set_column(10, "embedding", pa.array([[0.0] * (8 if i != 802 else 7) for i in range(900)])),
     VectorError, "row 802: vector has 7 values"),
    (lambda t: t.drop_columns(["embedding"]), VectorError, "no vector column"),
])
def test_bad_input_is_refused_with_its_row_and_nothing_written(store, mixed, change, error, text):
    with pytest.raises(error, match=text.replace("(", r"\(").replace("[", r"\[")):
        import_table(store, change(mixed), model="bad", revision="1", batch_rows=256)
    assert not [s for s in store.spaces() if s.model == "imported:bad"]


def test_wrong_dimension_for_an_existing_space(store, mixed):
    import_table(store, mixed, model="dimmed", revision="1")
    other = mixed_table(10, dim=5)
    with pytest.raises((VectorError, SpecError), match="5"):
        import_table(store, other, model="dimmed", revision="1")
    assert store.count(store.space_for("imported:dimmed", "1").space) == 900


def test_declaration_is_checked_and_kept():
    declare_imported("decl", revision="1", dim=4)
    with pytest.raises(SpecError, match="dim=4"):
        declare_imported("decl", revision="1", dim=5)
    with pytest.raises(SpecError, match="model name"):
        declare_imported("bad name", revision="1", dim=4)
    with pytest.raises(SpecError, match="metric"):
        declare_imported("decl2", revision="1", dim=4, metric="hamming")


def test_declaration_comes_back_from_the_store(store):
    import datetime as dt

    from rsembed_store import registry
    from rsembed_store.io.model import declare_from_store

    t = pa.table({"centre_lat": [1.0, 2.0], "centre_lon": [3.0, 4.0],
                  "timestamp": pa.array([dt.datetime(2020, 5, 1, 12, tzinfo=dt.timezone.utc)] * 2,
                                        pa.timestamp("us", tz="UTC")),
                  "embedding": [[1.0, 2.0], [3.0, 4.0]]})
    res = import_table(store, t, model="again-later", revision="r9", temporal="year", metric="l2", buffer_m=5000)
    assert res.columns["columns"]["date"] == "timestamp" and res.columns["columns"]["lon"] == "centre_lon"
    with registry._lock:  # as in a new process: the model is not declared
        registry._MODELS.pop("imported:again-later")
        registry._model_classes.pop("imported:again-later")
    info = declare_from_store(store, "again-later")
    assert (info.revision, info.dim, info.metric, info.temporal) == ("r9", 2, "l2", "year")
    r = resolve(Request("imported:again-later", PointBuffer(3.0, 1.0, 5000), TemporalSpec.year(2020)))
    assert r.key in set(store.to_arrow(res.space).column("key").to_pylist())


def test_geometry_in_another_crs_or_encoding_is_refused(store, tmp_path):
    import struct

    v = vectors(np.ones((2, 4), np.float32))
    pts = [struct.pack("<BIdd", 1, 1, 500000.0, 4_000_000.0)] * 2
    t = pa.table({"year": [2022, 2022], "embedding": v, "geometry": pa.array(pts, pa.binary())})
    geo = {"version": "1.1.0", "primary_column": "geometry",
           "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Point"],
                                    "crs": {"type": "ProjectedCRS", "name": "WGS 84 / UTM zone 32N",
                                            "id": {"authority": "EPSG", "code": 32632}}}}}
    pq.write_table(t.replace_schema_metadata({"geo": json.dumps(geo)}), tmp_path / "utm.parquet")
    with pytest.raises(SpecError, match="EPSG.*32632.*accepted: OGC:CRS84 or EPSG:4326"):
        import_table(store, str(tmp_path / "utm.parquet"), model="utm", revision="1", buffer_m=10)
    geo["columns"]["geometry"] = {"encoding": "point", "geometry_types": ["Point"]}
    native = pa.table({"year": [2022, 2022], "embedding": v,
                       "geometry": pa.StructArray.from_arrays([pa.array([1.0, 2.0]), pa.array([3.0, 4.0])],
                                                              ["x", "y"])})
    pq.write_table(native.replace_schema_metadata({"geo": json.dumps(geo)}), tmp_path / "native.parquet")
    with pytest.raises(SpecError, match="encoded as 'point'.*accepted: WKB"):
        import_table(store, str(tmp_path / "native.parquet"), model="utm", revision="1", buffer_m=10)
    assert not [s for s in store.spaces() if s.model == "imported:utm"]


def test_empty_batches_and_an_empty_input(store):
    t = mixed_table(30)
    empty = t.slice(0, 0)
    parts = [*empty.to_batches(), *t.to_batches(), pa.RecordBatch.from_pylist([], schema=t.schema)]
    reader = pa.RecordBatchReader.from_batches(t.schema, parts)
    assert import_table(store, reader, model="gaps", revision="1").inserted == 30
    res = import_table(store, empty, model="nothing", revision="1", dry_run=True)
    assert res.rows == 0 and res.inserted == 0


@pytest.mark.parametrize("start,end,text", [
    (["2021-01-01", "2021-05-01"], ["2021-02-01", "2021-05-01"], "row 1: the window needs start < end"),
    (["2021-01-01", "9999-12-31"], ["2021-02-01", "9999-12-31"], "row 1: start date 9999-12-31 is out of range"),
    (["2021-01-01", "2021-13-01"], ["2021-02-01", "2021-14-01"], "column 'start_date' .* cannot be read as dates"),
])
def test_bad_windows_are_refused(store, start, end, text):
    t = pa.table({"cell": [h3.latlng_to_cell(1.0, 2.0, 7)] * 2, "start_date": start, "end_date": end,
                  "embedding": vectors(np.ones((2, 4), np.float32))})
    with pytest.raises(SpecError, match=text):
        import_table(store, t, model="dates", revision="1")
    assert not [s for s in store.spaces() if s.model == "imported:dates"]


def test_extra_columns_are_kept_in_meta_up_to_the_limit(store):
    from rsembed_store.io.extras import MAX_COLUMNS

    base = mixed_table(60)
    n = base.num_rows
    rng = np.random.default_rng(5)
    tile = [f'tile "{i}"\\x' if i % 7 == 0 else f"t{i}" for i in range(n)]  # quotes, backslashes: escaped
    cloud = rng.uniform(0, 1, n)
    cloud[3] = np.nan
    t = base.append_column("tile_id", pa.array(tile)).append_column("cloud", pa.array(cloud))
    t = t.append_column("clear", pa.array(rng.uniform(0, 1, n) > 0.5))
    t = t.append_column("seen", pa.array(np.datetime64("2021-03-04") + np.arange(n).astype("timedelta64[D]")))
    t = t.append_column("tags", pa.array([[1, 2]] * n))  # a list: not a scalar, not kept
    t = t.append_column("id", pa.array(np.arange(n) * 10**12, pa.int64()).dictionary_encode())
    for k in range(MAX_COLUMNS):  # more scalar columns than the limit
        t = t.append_column(f"x{k}", pa.array(np.full(n, k, np.int16)))
    t = t.append_column("key", pa.array(["ours"] * n))  # our own export's derived columns are never kept
    res = import_table(store, t, model="extras", revision="1")
    kept = ["tile_id", "cloud", "clear", "seen", "id"] + [f"x{k}" for k in range(MAX_COLUMNS - 5)]
    assert res.columns["extra"] == kept
    assert res.columns["dropped"] == ["tags"] + [f"x{k}" for k in range(MAX_COLUMNS - 5, MAX_COLUMNS)]
    stored = store.to_arrow(res.space, columns=["request", "meta"]).to_pylist()
    by_key = {}
    for i, row in enumerate(t.to_pylist()):
        by_key[resolve(_request(row, "imported:extras")).canonical] = (i, row)
    for got in stored:
        i, row = by_key[got["request"]]
        cols = json.loads(got["meta"])["columns"]
        assert list(cols) == kept
        assert cols["tile_id"] == tile[i] and cols["clear"] == row["clear"] and cols["id"] == i * 10**12
        assert cols["cloud"] is None if i == 3 else cols["cloud"] == cloud[i]  # NaN has no JSON: null
        assert cols["seen"] == str(np.datetime64("2021-03-04") + i) and cols["x3"] == 3
    got = store.sql("SELECT count(*) AS n FROM embeddings WHERE json_extract_string(meta, '$.columns.tile_id') = 't1'")
    assert got.column("n")[0].as_py() == 1


def _keys(store, space):
    return store.to_arrow(space, columns=["key"]).column("key").to_pylist()


def test_append_path_equals_the_merge_insert_path(store, tmp_path, mixed, caplog):
    from rsembed_store.store import Store

    doubled = pa.concat_tables([mixed, mixed.slice(0, 200)])  # keys repeated in later batches of the file
    fast = import_table(store, doubled, model="same", revision="1", batch_rows=256)
    other = Store.open(str(tmp_path / "other"))
    slow = import_table(other, doubled, model="same", revision="1", batch_rows=256, append=False)
    assert (fast.inserted, fast.existing) == (slow.inserted, slow.existing) == (900, 200)
    cols = ["key", "request", "vector", "h3", "start_date", "meta"]
    a = store.to_arrow(fast.space, columns=cols).sort_by("key")
    b = other.to_arrow(slow.space, columns=cols).sort_by("key")
    assert a.equals(b) and len(set(_keys(store, fast.space))) == 900
    assert not any("another writer" in r.getMessage() for r in caplog.records)  # its own appends only


def test_a_concurrent_writer_during_an_append_leaves_no_key_twice(store, mixed, caplog):
    from rsembed_store.store import Store

    other = Store.open(store.uri)  # another handle, as another process would have
    calls = []

    def meanwhile(n):  # after the first batch is written, another writer stores keys of the second batch
        calls.append(n)
        if len(calls) == 1:
            import_table(other, mixed.slice(300, 100), model="race", revision="1", append=False)

    res = import_table(store, mixed, model="race", revision="1", batch_rows=300, progress=meanwhile)
    keys = _keys(store, res.space)
    assert len(keys) == len(set(keys)) == 900  # every key once, none lost
    assert res.inserted + res.existing == 900 and res.existing >= 100
    assert any("another writer committed" in r.getMessage() for r in caplog.records)


def test_key_prefixes_and_membership():
    import hashlib

    from rsembed_store.io.append import _held, prefixes

    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(500)]
    arr = pa.chunked_array([pa.array(keys[:200]), pa.array(keys[200:])]).slice(3)  # chunks and an offset
    p = prefixes(arr)
    assert p.tolist() == [int(k[:16], 16) for k in keys[3:]]
    seen = np.sort(p[:250])
    assert _held(seen, p).tolist() == [True] * 250 + [False] * (len(p) - 250)
    assert not _held(np.zeros(0, np.uint64), p).any()
