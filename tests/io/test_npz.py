"""rs-embed's combined npz / netcdf + manifest: the layout rs_embed.load_export reads, and the round trip
(tests/compat/test_compat_export.py reads our files with rs-embed's own load_export)."""

import json
import os

import numpy as np
import pytest
from io_data import mixed_table

from rsembed_store import TemporalSpec
from rsembed_store.io.importer import import_table
from rsembed_store.compat import netcdf
from rsembed_store.io.npz import sanitize_key
from rsembed_store.store import Store


@pytest.fixture
def filled(store):
    res = import_table(store, mixed_table(900), model="np.out", revision="1")
    return store, res.space


SUFFIX = {"npz": ".npz", "netcdf": ".nc"}


def _arrays(path, fmt):
    if fmt == "npz":
        with np.load(path) as arrays:
            return {k: arrays[k] for k in arrays.files}
    variables, attrs = netcdf.read(str(path))
    assert attrs["n_items"] == len(next(iter(variables.values())))
    return variables


@pytest.mark.parametrize("fmt", ["npz", "netcdf"])
def test_layout_is_what_load_export_reads(filled, tmp_path, fmt):
    store, space = filled
    out = tmp_path / f"run{SUFFIX[fmt]}"
    res = store.export(space, out, format=fmt, batch_rows=128)
    assert res.rows == 900 and sorted(os.listdir(tmp_path)) == sorted(["db", "run.json", out.name])
    manifest = json.loads((tmp_path / "run.json").read_text())
    assert (manifest["n_items"], manifest["status"], len(manifest["spatials"])) == (900, "ok", 900)
    assert manifest["temporal"] is None  # the rows have several windows: each item's is in its meta
    (entry,) = manifest["models"]
    assert entry["model"] == "imported:np.out" and entry["status"] == "ok"
    assert entry["embeddings"]["npz_key"] == "embeddings__" + sanitize_key("imported:np.out") == \
        "embeddings__imported_np_out"
    emb = _arrays(out, fmt)[entry["embeddings"]["npz_key"]]
    assert emb.shape == (900, 8) and emb.dtype == np.float32
    stored = {r["key"]: r for r in store.to_arrow(space).to_pylist()}
    for i, meta in enumerate(entry["metas"]):
        row = stored[meta["key"]]
        assert np.array_equal(emb[i], np.asarray(row["vector"], np.float32))
        assert json.loads(meta["request"])["spatial"] == manifest["spatials"][i]
        assert meta["window"] == {"start": row["start_date"].isoformat(), "end": row["end_date"].isoformat()}


def test_one_window_is_the_manifest_temporal(filled, tmp_path):
    store, space = filled
    res = store.export(space, tmp_path / "y.npz", format="npz", temporal=TemporalSpec.year(2020))
    manifest = json.loads((tmp_path / "y.json").read_text())
    assert res.rows == manifest["n_items"] > 0
    assert manifest["temporal"] == {"mode": "range", "start": "2020-01-01", "end": "2021-01-01"}


@pytest.mark.parametrize("fmt", ["npz", "netcdf"])
def test_round_trip_through_npz(filled, tmp_path, fmt):
    store, space = filled
    store.export(space, tmp_path / f"rt{SUFFIX[fmt]}", format=fmt)
    fresh = Store.open(str(tmp_path / "fresh"))
    res = import_table(fresh, str(tmp_path / f"rt{SUFFIX[fmt]}"), model="np.out", revision="1")
    assert res.inserted == 900 and res.space == space
    cols = ["key", "request", "vector", "start_date", "end_date", "cell", "spatial_type", "h3", "meta"]
    a = store.to_arrow(space, columns=cols).sort_by("key")
    b = fresh.to_arrow(space, columns=cols).sort_by("key")
    for c in cols:
        assert a.column(c).equals(b.column(c)), c  # vectors bitwise
    q = np.random.default_rng(4).standard_normal(8).astype(np.float32)
    for kw in ({}, {"temporal": TemporalSpec.year(2022)}):
        x = store.search("imported:np.out", q, k=12, **kw)
        y = fresh.search("imported:np.out", q, k=12, **kw)
        assert [r["key"] for r in x.rows] == [r["key"] for r in y.rows] and len(x.rows) == 12


def test_npz_without_manifest_is_refused(tmp_path, store):
    np.savez(tmp_path / "lone.npz", embeddings__x=np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="no manifest"):
        import_table(store, str(tmp_path / "lone.npz"), model="lone", revision="1")


def test_netcdf_by_format_option_and_a_missing_array(filled, tmp_path, store):
    src, space = filled
    src.export(space, tmp_path / "x.nc", format="netcdf", temporal=TemporalSpec.year(2021))
    os.rename(tmp_path / "x.nc", tmp_path / "x.data")  # no suffix to go by: --format says what it is
    manifest = json.loads((tmp_path / "x.json").read_text())
    fresh = Store.open(str(tmp_path / "fresh2"))
    res = import_table(fresh, str(tmp_path / "x.data"), model="np.out", revision="1", format="netcdf")
    assert res.inserted == manifest["n_items"] > 0
    manifest["models"][0]["embeddings"]["npz_key"] = "embeddings__other"
    (tmp_path / "x.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="no array 'embeddings__other'"):
        import_table(fresh, str(tmp_path / "x.data"), model="np.out", revision="1", format="netcdf")
    with pytest.raises(ValueError, match="format='hdf5' is not accepted"):
        import_table(fresh, str(tmp_path / "x.data"), model="np.out", revision="1", format="hdf5")
