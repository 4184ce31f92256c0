"""`rsembed-store export --format npz|netcdf` read by rs-embed's own ``load_export`` (run with the models venv)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pyarrow as pa
import pytest

from rsembed_store.io.importer import import_table
from rsembed_store.store import Store


def _rs_load_export():
    if importlib.util.find_spec("rs_embed") is None:
        pytest.skip("rs-embed is not importable here (it lives in the models venv)")
    from rs_embed import load_export

    return load_export


def _points(n=40, dim=6, seed=1):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return pa.table({"lon": rng.uniform(5, 15, n), "lat": rng.uniform(44, 54, n), "buffer_m": rng.uniform(50, 900, n),
                     "year": rng.integers(2019, 2023, n),
                     "embedding": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), dim)})


@pytest.mark.parametrize("fmt,suffix", [("npz", ".npz"), ("netcdf", ".nc")])
def test_load_export_reads_our_export_and_it_imports_back(tmp_path, fmt, suffix):
    rs_load = _rs_load_export()
    if fmt == "netcdf" and importlib.util.find_spec("xarray") is None:
        pytest.skip("rs-embed reads NetCDF with xarray, which is not importable here")
    store = Store.open(str(tmp_path / "db"))
    res = import_table(store, _points(), model="rs.check", revision="2")
    out = tmp_path / f"run{suffix}"
    assert store.export(res.space, out, format=fmt).rows == 40
    theirs = rs_load(str(out))
    assert (theirs.layout, theirs.n_items, theirs.status) == ("combined", 40, "ok")
    emb = theirs.embedding("imported:rs.check")
    assert emb.shape == (40, 6) and emb.dtype == np.float32
    stored = {r["key"]: r for r in store.to_arrow(res.space).to_pylist()}
    for i, meta in enumerate(theirs.models["imported:rs.check"].meta):
        row = stored[meta["key"]]
        assert np.array_equal(emb[i], np.asarray(row["vector"], np.float32))
        assert theirs.spatials[i] == json.loads(row["request"])["spatial"]
    fresh = Store.open(str(tmp_path / "fresh"))
    back = import_table(fresh, str(out), model="rs.check", revision="2")
    assert back.inserted == 40
    a = store.to_arrow(res.space, columns=["key", "vector"]).sort_by("key")
    b = fresh.to_arrow(res.space, columns=["key", "vector"]).sort_by("key")
    assert a.equals(b)


@pytest.mark.parametrize("fmt", ["npz", "netcdf"])
def test_we_import_what_rs_embeds_own_writer_wrote(tmp_path, fmt):
    _rs_load_export()
    from rs_embed.writers import write_arrays

    if fmt == "netcdf" and importlib.util.find_spec("xarray") is None:
        pytest.skip("rs-embed writes NetCDF with xarray, which is not importable here")
    rng = np.random.default_rng(2)
    emb = rng.standard_normal((5, 4)).astype(np.float32)
    spatials = [{"type": "PointBuffer", "lon": 10.0 + i / 10, "lat": 45.0, "buffer_m": 240.0, "crs": "EPSG:4326"}
                for i in range(5)]
    manifest = {"status": "ok", "n_items": 5, "spatials": spatials,
                "temporal": {"mode": "range", "start": "2022-01-01", "end": "2023-01-01"},
                "models": [{"model": "remoteclip", "status": "ok", "embeddings": {"npz_key": "embeddings__remoteclip"},
                            "metas": [{} for _ in range(5)]}]}
    written = write_arrays(fmt=fmt, out_path=str(tmp_path / "theirs"), arrays={"embeddings__remoteclip": emb},
                           manifest=manifest, save_manifest=True)
    path = written.get("npz_path") or written.get("nc_path")
    store = Store.open(str(tmp_path / "db"))
    res = import_table(store, path, model="theirs", revision="1")
    assert (res.inserted, res.kinds) == (5, {"PointBuffer": 5})
    got = store.to_arrow(res.space, columns=["lon", "vector", "start_date"]).sort_by("lon")
    np.testing.assert_array_equal(np.stack(got.column("vector").to_numpy(zero_copy_only=False)), emb)
    assert {d.isoformat() for d in got.column("start_date").to_pylist()} == {"2022-01-01"}
