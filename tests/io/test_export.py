"""Export: GeoParquet per the 1.1 spec, filters as search's, atomic writes, and the round trip."""

import json
import os

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from io_data import mixed_table

from rsembed_store import BBox, TemporalSpec
from rsembed_store.cli import main
from rsembed_store.io import exporter, wkb
from rsembed_store.io.importer import import_table
from rsembed_store.store import Store

GEOMETRY_TYPES = {"Point", "LineString", "Polygon", "MultiPoint", "MultiLineString", "MultiPolygon",
                  "GeometryCollection"}


@pytest.fixture
def filled(store):
    res = import_table(store, mixed_table(900), model="out", revision="1")
    return store, res.space


def check_geoparquet(path) -> dict:
    """The file's ``geo`` metadata checked against the GeoParquet 1.1 spec's required fields,
    and the bbox against every geometry."""
    f = pq.ParquetFile(path)
    geo = json.loads(f.metadata.metadata[b"geo"])
    assert geo["version"] == "1.1.0"
    schema = f.schema_arrow
    assert geo["primary_column"] in geo["columns"] and geo["primary_column"] in schema.names
    for name, col in geo["columns"].items():
        assert pa.types.is_binary(schema.field(name).type) or pa.types.is_large_binary(schema.field(name).type)
        assert col["encoding"] == "WKB"
        assert set(col["geometry_types"]) <= GEOMETRY_TYPES
        assert col["crs"]["id"] == {"authority": "OGC", "code": "CRS84"}
        assert col["crs"]["coordinate_system"]["axis"][0]["direction"] == "east"  # longitude first
        assert col.get("edges", "planar") in ("planar", "spherical")
        cov = col["covering"]["bbox"]
        for k in ("xmin", "ymin", "xmax", "ymax"):
            assert cov[k][0] in schema.names and cov[k][1] == k
        t = pq.read_table(path, columns=[name, "bbox"])
        b = wkb.polygon_bounds(t.column(name).combine_chunks())
        assert col["bbox"] == pytest.approx([b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()])
        per_row = np.stack([t.column("bbox").combine_chunks().field(k).to_numpy() for k in cov], axis=1)
        assert np.array_equal(per_row, b)
        kinds = wkb.geometry_kinds(t.column(name).combine_chunks())
        assert set(kinds.tolist()) == {wkb.POLYGON}
    return geo


def test_geoparquet_is_valid_and_readable_by_duckdb(filled, tmp_path):
    store, space = filled
    out = tmp_path / "all.parquet"
    res = store.export(space, out, batch_rows=200)
    assert res.rows == 900
    check_geoparquet(out)
    con = duckdb.connect()
    kv = con.sql(f"SELECT value FROM parquet_kv_metadata('{out}') WHERE key = 'geo'").fetchall()[0][0]
    assert json.loads(kv)["primary_column"] == "geometry"
    n, dim = con.sql(f"SELECT count(*), max(len(vector)) FROM '{out}'").fetchall()[0]
    assert (n, dim) == (900, 8)
    t = pq.read_table(out)
    assert pa.types.is_fixed_size_list(t.schema.field("vector").type)
    stored = store.to_arrow(space).sort_by("key")
    got = t.sort_by("key")
    for c in ("key", "request", "model", "revision", "start_date", "end_date", "year", "lon", "lat"):
        assert got.column(c).equals(stored.column(c).cast(got.schema.field(c).type)), c
    assert got.column("vector").equals(stored.column("vector"))
    hexes = pc.equal(got.column("spatial_type"), "H3Cell")
    import h3

    cells = pc.filter(got.column("cell"), hexes).to_pylist()
    assert cells == [h3.int_to_str(c) for c in pc.filter(stored.column("cell"), hexes).to_pylist()]


def test_plain_parquet_has_no_geo(filled, tmp_path):
    store, space = filled
    store.export(space, tmp_path / "p.parquet", format="parquet")
    f = pq.ParquetFile(tmp_path / "p.parquet")
    assert b"geo" not in (f.metadata.metadata or {}) and "geometry" not in f.schema_arrow.names


def test_filters_select_what_search_would(filled, tmp_path):
    store, space = filled
    stored = store.to_arrow(space)
    r = store.export(space, tmp_path / "y.parquet", temporal=TemporalSpec.year(2020))
    assert r.rows == pc.sum(pc.equal(stored.column("year"), 2020)).as_py() > 0
    r = store.export(space, tmp_path / "w.parquet", where="year >= 2022 AND spatial_type = 'BBox'")
    want = stored.filter((pc.field("year") >= 2022) & (pc.field("spatial_type") == "BBox")).num_rows
    assert r.rows == want > 0
    r = store.export(space, tmp_path / "b.parquet", within=BBox(0, 0, 20, 60))
    keys = set(pq.read_table(tmp_path / "b.parquet").column("key").to_pylist())
    inside = stored.filter((pc.field("lon") >= 0) & (pc.field("lon") <= 20) & (pc.field("lat") >= 0)
                           & (pc.field("lat") <= 60))
    assert keys == set(inside.column("key").to_pylist())
    q = f"SELECT key FROM embeddings WHERE year = 2019 LIMIT 7"
    r = store.export(space, tmp_path / "q.parquet", sql=q)
    assert r.rows == 7


def test_export_is_atomic(filled, tmp_path, monkeypatch):
    store, space = filled
    out = tmp_path / "x.parquet"
    out.write_bytes(b"old")
    calls = {"n": 0}
    real = exporter.to_output

    def failing(batch, geo):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk full")
        return real(batch, geo)

    monkeypatch.setattr(exporter, "to_output", failing)
    with pytest.raises(RuntimeError):
        store.export(space, out, batch_rows=100)
    assert out.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["db", "x.parquet"]


def test_round_trip_same_keys_vectors_and_search(filled, tmp_path):
    store, space = filled
    store.export(space, tmp_path / "rt.parquet")
    fresh = Store.open(str(tmp_path / "fresh"))
    res = import_table(fresh, str(tmp_path / "rt.parquet"), model="out", revision="1")
    assert res.inserted == 900 and res.space == space
    cols = ["key", "request", "spatial_type", "lon", "lat", "minlon", "minlat", "maxlon", "maxlat", "h3", "cell",
            "cell_res", "start_date", "end_date", "year", "vector", "meta"]  # meta: our own columns are no extras
    a = store.to_arrow(space, columns=cols).sort_by("key")
    b = fresh.to_arrow(space, columns=cols).sort_by("key")
    for c in cols:
        if c.startswith(("min", "max")):  # a point buffer's box comes from buffer_m, which the key rounds to 1 mm
            assert np.allclose(a.column(c).to_numpy(), b.column(c).to_numpy(), rtol=0, atol=1e-7), c
        else:
            assert a.column(c).equals(b.column(c)), c  # vectors bitwise: float32 equal arrays
    q = np.random.default_rng(9).standard_normal(8).astype(np.float32)
    for kw in ({}, {"temporal": TemporalSpec.year(2021)}):
        x = store.search("imported:out", q, k=10, **kw)
        y = fresh.search("imported:out", q, k=10, **kw)
        assert [r["key"] for r in x.rows] == [r["key"] for r in y.rows]


def test_cli_export(filled, tmp_path):
    store, space = filled
    out = tmp_path / "cli.parquet"
    res = CliRunner().invoke(main, ["--db", store.uri, "export", "imported:out", "--out", str(out), "--during", "2023",
                                    "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["rows"] == pq.read_table(out).num_rows > 0 and doc["space"] == space
    check_geoparquet(out)
    bad = CliRunner().invoke(main, ["--db", store.uri, "export", "nope", "--out", str(out)])
    assert bad.exit_code == 2 and "no space or model 'nope'" in bad.output


AREA = {"type": "Polygon", "coordinates": [[[-20, -10], [5, -10], [5, 30], [-20, 30], [-20, -10]]]}


def test_cli_export_area_flags_match_python(filled, tmp_path):
    import h3

    store, space = filled
    cell = h3.latlng_to_cell(10.0, 5.0, 1)
    cases = [(["--bbox", "0,0,20,60"], {"within": BBox(0, 0, 20, 60)}),
             (["--h3", cell], {"within": [cell]}),
             (["--where", "year = 2020", "--format", "parquet"], {"where": "year = 2020", "format": "parquet"}),
             (["--within", str(tmp_path / "area.geojson")], {"within": AREA})]
    (tmp_path / "area.geojson").write_text(json.dumps(AREA))
    for i, (flags, kwargs) in enumerate(cases):
        res = CliRunner().invoke(main, ["--db", store.uri, "export", space, "--out", str(tmp_path / f"c{i}.parquet"),
                                        "--json", *flags])
        assert res.exit_code == 0, res.output
        want = store.export(space, tmp_path / f"p{i}.parquet", **kwargs)
        got = pq.read_table(tmp_path / f"c{i}.parquet").column("key").to_pylist()
        assert sorted(got) == sorted(pq.read_table(want.path).column("key").to_pylist())
        assert 0 < len(got) < 900


def test_an_empty_selection_is_a_valid_empty_file(filled, tmp_path):
    store, space = filled
    res = store.export(space, tmp_path / "none.parquet", where="year = 1900")
    assert res.rows == 0
    t = pq.read_table(tmp_path / "none.parquet")
    assert t.num_rows == 0 and t.schema.field("vector").type.list_size == 8
    geo = json.loads(pq.ParquetFile(tmp_path / "none.parquet").metadata.metadata[b"geo"])
    assert geo["primary_column"] == "geometry" and "bbox" not in geo["columns"]["geometry"]
