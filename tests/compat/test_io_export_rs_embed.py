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
