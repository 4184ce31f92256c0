"""rs-embed's combined npz + manifest: the layout rs_embed.load_export reads, and the round trip."""

import json
import os

import numpy as np
import pytest
from io_data import mixed_table

from rsembed_store import TemporalSpec
from rsembed_store.io.importer import import_table
from rsembed_store.io.npz import sanitize_key
from rsembed_store.store import Store


@pytest.fixture
def filled(store):
    res = import_table(store, mixed_table(900), model="np.out", revision="1")
    return store, res.space


def test_layout_is_what_load_export_reads(filled, tmp_path):
    store, space = filled
    out = tmp_path / "run.npz"
    res = store.export(space, out, format="npz", batch_rows=128)
    assert res.rows == 900 and sorted(os.listdir(tmp_path)) == ["db", "run.json", "run.npz"]
    manifest = json.loads((tmp_path / "run.json").read_text())
    assert (manifest["n_items"], manifest["status"], len(manifest["spatials"])) == (900, "ok", 900)
    assert manifest["temporal"] is None  # the rows have several windows: each item's is in its meta
    (entry,) = manifest["models"]
    assert entry["model"] == "imported:np.out" and entry["status"] == "ok"
    assert entry["embeddings"]["npz_key"] == "embeddings__" + sanitize_key("imported:np.out") == \
        "embeddings__imported_np_out"
    with np.load(out) as arrays:
        emb = arrays[entry["embeddings"]["npz_key"]]
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


def test_round_trip_through_npz(filled, tmp_path):
    store, space = filled
    store.export(space, tmp_path / "rt.npz", format="npz")
    fresh = Store.open(str(tmp_path / "fresh"))
    res = import_table(fresh, str(tmp_path / "rt.npz"), model="np.out", revision="1")
    assert res.inserted == 900 and res.space == space
    cols = ["key", "request", "vector", "start_date", "end_date", "cell", "spatial_type"]
    a = store.to_arrow(space, columns=cols).sort_by("key")
    b = fresh.to_arrow(space, columns=cols).sort_by("key")
    for c in cols:
        assert a.column(c).equals(b.column(c)), c


def test_npz_without_manifest_is_refused(tmp_path, store):
    np.savez(tmp_path / "lone.npz", embeddings__x=np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="no manifest"):
        import_table(store, str(tmp_path / "lone.npz"), model="lone", revision="1")
