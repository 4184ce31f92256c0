"""export_batch in rs-embed's layouts, every vector from the store; load_export reads it back.

The layout is checked against rs-embed 0.3.1's writer and loader contract as its
source states it (rs_embed/writers.py, pipelines/point_payload.py,
pipelines/combined_flow.py, load.py); where rs-embed is importable, its own
``load_export`` reads our files too (test_rs_embeds_own_load_export_reads_them).
"""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest

from rsembed_store import Store
from rsembed_store.compat import (
    ExportConfig,
    ExportTarget,
    OutputSpec,
    PointBuffer,
    TemporalSpec,
    export_batch,
    get_embeddings_batch,
    load_export,
)
from rsembed_store.compat import netcdf

YEAR = TemporalSpec.year(2023)
MODELS = ["spectral", "mosaiks"]


def points(manifest, n=3, buffer_m=150):
    w, s, e, n_ = manifest["bounds_lonlat"]
    cy = (s + n_) / 2
    return [PointBuffer(w + (e - w) * (k + 1) / (n + 1), cy, buffer_m) for k in range(n)]


@pytest.fixture
def db(tmp_path, scene_config):
    return Store.open(tmp_path / "db", config=scene_config)


def no_compute(monkeypatch):
    """Make any computation fail the test: an export of cached answers must compute nothing."""
    from rsembed_store.query import get as get_mod

    def refuse(self, r, config):
        raise AssertionError(f"computed {r.model} {r.key[:12]} during an export of cached answers")

    monkeypatch.setattr(get_mod.Getter, "_compute", refuse)


@pytest.mark.parametrize("fmt", ["npz", "netcdf"])
def test_combined_export_of_cached_answers_computes_nothing(db, small_scene, tmp_path, monkeypatch, fmt):
    spatials = points(small_scene[1])
    want = {m: np.stack([e.data for e in get_embeddings_batch(m, spatials=spatials, temporal=YEAR, store=db)])
            for m in MODELS}
    no_compute(monkeypatch)
    out = export_batch(spatials=spatials, temporal=YEAR, models=MODELS,
                       target=ExportTarget.combined(str(tmp_path / "run")), config=ExportConfig(format=fmt), store=db)
    ext = ".npz" if fmt == "npz" else ".nc"
    assert out["status"] == "ok" and out["n_items"] == 3
    assert os.path.exists(tmp_path / f"run{ext}") and os.path.exists(tmp_path / "run.json")
    back = load_export(tmp_path / f"run{ext}")
    for m in MODELS:
        np.testing.assert_array_equal(back.embedding(m), want[m])
        assert all(meta["cached"] for meta in back.models[m].meta)
    assert back.spatials[0] == {"lon": spatials[0].lon, "lat": spatials[0].lat, "buffer_m": 150.0,
                                "crs": "EPSG:4326"}


def test_combined_layout_is_rs_embeds(db, small_scene, tmp_path):
    spatials = points(small_scene[1], 2)
    out = export_batch(spatials=spatials, temporal=YEAR, models=["spectral"],
                       target=ExportTarget.combined(str(tmp_path / "run.npz")), store=db)
    manifest = json.loads((tmp_path / "run.json").read_text())
    assert manifest == json.loads(json.dumps(out))
    # rs-embed's combined manifest fields (pipelines/checkpoint.py + combined_flow.py + writers.py)
    for key in ("created_at", "status", "backend", "device", "models", "n_items", "temporal", "output",
                "spatials", "summary", "request_fingerprint", "npz_path", "npz_keys", "manifest_path"):
        assert key in manifest, key
    assert manifest["temporal"] == {"mode": "year", "year": 2023, "start": None, "end": None}
    assert manifest["output"] == {"mode": "pooled", "pooling": "mean", "grid_orientation": "north_up"}
    entry = manifest["models"][0]
    assert entry["model"] == "spectral" and entry["status"] == "ok"
    assert entry["embeddings"]["npz_key"] == "embeddings__spectral"
    with np.load(tmp_path / "run.npz") as z:
        assert sorted(z.files) == ["embeddings__spectral"] == manifest["npz_keys"]
        assert z["embeddings__spectral"].shape == tuple(entry["embeddings"]["shape"]) and \
            z["embeddings__spectral"].shape[0] == 2
    assert len(entry["metas"]) == 2 and entry["metas"][0]["model"] == "spectral"


@pytest.mark.parametrize("fmt", ["npz", "netcdf"])
def test_per_item_layout_and_resume(db, small_scene, tmp_path, monkeypatch, fmt):
    spatials = points(small_scene[1], 3)
    target = ExportTarget.per_item(str(tmp_path / "items"))
    first = export_batch(spatials=spatials[:2], temporal=YEAR, models=MODELS, target=target,
                         config=ExportConfig(format=fmt, resume=True), store=db)
    ext = ".npz" if fmt == "npz" else ".nc"
    assert sorted(os.listdir(tmp_path / "items")) == sorted(
        [f"p0000{i}{e}" for i in range(2) for e in (ext, ".json")])
    m0 = json.loads((tmp_path / "items" / "p00000.json").read_text())
    assert m0["point_index"] == 0 and m0["spatial"]["lon"] == spatials[0].lon
    assert m0["models"][0]["embedding"]["npz_key"] == "embedding__spectral"
    assert m0["request_fingerprint"] == first[0]["request_fingerprint"]
    # resume: the two written items are skipped (nothing is even looked up for them), the third is written
    calls = []
    from rsembed_store.compat import export as export_mod

    real = export_mod._answers
    monkeypatch.setattr(export_mod, "_answers", lambda store, m, idx, *a: calls.append(idx) or real(store, m, idx, *a))
    again = export_batch(spatials=spatials, temporal=YEAR, models=MODELS, target=target,
                         config=ExportConfig(format=fmt, resume=True), store=db)
    assert [a.get("resume_skipped", False) for a in again] == [True, True, False]
    assert calls == [[2], [2]]
    back = load_export(tmp_path / "items")
    assert back.layout == "per_item" and back.n_items == 3 and back.embedding("spectral").shape[0] == 3
    # another request (another window) is not "already written": it rewrites the items
    other = export_batch(spatials=spatials, temporal=TemporalSpec.range("2023-03-01", "2023-10-01"),
                         models=MODELS, target=target, config=ExportConfig(format=fmt, resume=True), store=db)
    assert not any(a.get("resume_skipped") for a in other)


def test_combined_resume_skips_the_same_request_only(db, small_scene, tmp_path):
    spatials = points(small_scene[1], 2)
    target = ExportTarget.combined(str(tmp_path / "run"))
    export_batch(spatials=spatials, temporal=YEAR, models=["spectral"], target=target, store=db)
    again = export_batch(spatials=spatials, temporal=YEAR, models=["spectral"], target=target,
                         config=ExportConfig(resume=True), store=db)
    assert again["resume_skipped"] is True
    more = export_batch(spatials=points(small_scene[1], 3), temporal=YEAR, models=["spectral"], target=target,
                        config=ExportConfig(resume=True), store=db)
    assert not more.get("resume_skipped") and more["n_items"] == 3


def test_a_failed_point_is_reported_not_written(db, small_scene, tmp_path):
    far = PointBuffer(100.0, 0.0, 150)  # no scene there, and Earth Engine is not configured
    spatials = points(small_scene[1], 2) + [far]
    out = export_batch(spatials=spatials, temporal=YEAR, models=["spectral"],
                       target=ExportTarget.combined(str(tmp_path / "run")),
                       config=ExportConfig(continue_on_error=True), store=db)
    entry = out["models"][0]
    assert entry["status"] == "partial" and entry["failed_indices"] == [2]
    assert "NoProviderError" in entry["errors_by_index"]["2"]
    assert entry["embeddings"]["indices"] == [0, 1]
    back = load_export(tmp_path / "run.npz")
    emb = back.embedding("spectral")
    assert emb.shape[0] == 3 and np.isnan(emb[2]).all() and not np.isnan(emb[:2]).any()
    with pytest.raises(Exception, match="no provider"):
        export_batch(spatials=spatials, temporal=YEAR, models=["spectral"],
                     target=ExportTarget.combined(str(tmp_path / "strict")), store=db)
    assert not os.path.exists(tmp_path / "strict.npz")


def test_grid_export_has_point_band_y_x(db, small_scene, tmp_path):
    spatials = points(small_scene[1], 2)
    export_batch(spatials=spatials, temporal=YEAR, models=["spectral"], output=OutputSpec.grid(),
                 target=ExportTarget.combined(str(tmp_path / "g")), config=ExportConfig(format="netcdf"), store=db)
    variables, attrs = netcdf.read(str(tmp_path / "g.nc"))
    assert variables["embeddings__spectral"].ndim == 4 and attrs["Conventions"] == "CF-1.8"
    assert attrs["n_items"] == 2


def test_netcdf_dimension_names_follow_rs_embeds_writer():
    from rsembed_store.compat.export import _netcdf_dims

    sizes = {}
    assert _netcdf_dims("embeddings__a", np.zeros((3, 8)), sizes) == ("point", "dim")
    assert _netcdf_dims("embeddings__b", np.zeros((3, 4)), sizes) == ("point", "dim__embeddings_b")
    assert _netcdf_dims("embedding__c", np.zeros((4, 2, 2)), {}) == ("band", "y", "x")


def test_bad_arguments_name_the_value(db, small_scene, tmp_path):
    from rsembed_store.errors import SpecError

    sp = points(small_scene[1], 1)
    with pytest.raises(SpecError, match="'zarr'"):
        export_batch(spatials=sp, temporal=YEAR, models=["spectral"], target=ExportTarget.combined(str(tmp_path / "x")),
                     config=ExportConfig(format="zarr"), store=db)
    with pytest.raises(SpecError, match="non-empty"):
        export_batch(spatials=[], temporal=YEAR, models=["spectral"], target=ExportTarget.combined("x"), store=db)
    with pytest.raises(SpecError, match="both"):
        export_batch(spatials=sp, temporal=YEAR, models=["spectral"], target=ExportTarget.combined("x"),
                     config=ExportConfig(input_prep="resize"), input_prep="tile", store=db)


def _xarray_reads_classic_netcdf() -> bool:
    try:
        import xarray  # noqa: F401
    except Exception:  # noqa: BLE001 - e.g. installed without pandas (--no-deps)
        return False
    return any(importlib.util.find_spec(m) is not None for m in ("scipy", "netCDF4"))


def _rs_embed_load_export():
    if importlib.util.find_spec("rs_embed") is None:
        pytest.skip("rs-embed is not importable here (it lives in the models venv: pip install --no-deps "
                    "--ignore-requires-python rs-embed==0.3.1)")
    from rs_embed import load_export as rs_load

    return rs_load


@pytest.mark.parametrize("layout", ["combined", "per_item"])
@pytest.mark.parametrize("fmt", ["npz", "netcdf"])
def test_rs_embeds_own_load_export_reads_them(db, small_scene, tmp_path, layout, fmt):
    rs_load = _rs_embed_load_export()
    if fmt == "netcdf" and not _xarray_reads_classic_netcdf():
        pytest.skip("rs-embed reads NetCDF exports with xarray (and scipy or netCDF4 for classic NetCDF), "
                    "which is not importable here")
    spatials = points(small_scene[1], 3)
    target = (ExportTarget.combined(str(tmp_path / "run")) if layout == "combined"
              else ExportTarget.per_item(str(tmp_path / "items")))
    export_batch(spatials=spatials, temporal=YEAR, models=MODELS, target=target, config=ExportConfig(format=fmt),
                 store=db)
    path = tmp_path / ("run" + (".npz" if fmt == "npz" else ".nc")) if layout == "combined" else tmp_path / "items"
    theirs, ours = rs_load(path), load_export(path)
    assert theirs.layout == layout and theirs.n_items == 3 and theirs.status == "ok"
    assert sorted(theirs.ok_models) == sorted(MODELS)
    for m in MODELS:
        np.testing.assert_array_equal(theirs.embedding(m), ours.embedding(m))
        assert [x["key"] for x in theirs.models[m].meta] == [x["key"] for x in ours.models[m].meta]
    assert theirs.spatials == ours.spatials
