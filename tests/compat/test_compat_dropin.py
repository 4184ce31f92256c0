"""rs-embed's calls over the store (rsembed_store.compat): look up first, compute misses, keep answers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from rsembed_store import Store
from rsembed_store.compat import (
    BBox,
    FetchSpec,
    OutputSpec,
    PointBuffer,
    TemporalSpec,
    describe_model,
    get_embedding,
    get_embeddings_batch,
    list_models,
    routing,
)
from rsembed_store.errors import SpecError

YEAR = TemporalSpec.year(2023)


def points(manifest, n=3, buffer_m=150):
    w, s, e, n_ = manifest["bounds_lonlat"]
    cy = (s + n_) / 2
    return [PointBuffer(w + (e - w) * (k + 1) / (n + 1), cy, buffer_m) for k in range(n)]


@pytest.fixture
def db(tmp_path, scene_config):
    return Store.open(tmp_path / "db", config=scene_config)


def test_first_call_computes_second_is_a_hit_with_the_same_data(db, small_scene):
    spatial = points(small_scene[1], 1)[0]
    first = get_embedding("spectral", spatial=spatial, temporal=YEAR, store=db)
    again = get_embedding("spectral", spatial=spatial, temporal=YEAR, store=db)
    assert first.cached is False and again.cached is True
    assert first.key == again.key and again.meta["key"] == again.key and again.meta["cached"] is True
    np.testing.assert_array_equal(first.data, again.data)
    assert first.data.dtype == np.float32 and first.data.ndim == 1
    # rs-embed's standard meta keys, with the resolved window and the provider auto chose
    for k in ("model", "type", "backend", "source", "sensor", "temporal", "image_size"):
        assert k in first.meta
    assert first.meta["model"] == "spectral" and first.meta["type"] == "on_the_fly"
    assert first.meta["backend"] == first.provider == "local"
    assert first.meta["temporal"] == {"mode": "range", "start": "2023-01-01", "end": "2024-01-01"}


def test_batch_looks_up_once_and_computes_only_misses(db, small_scene):
    spatials = points(small_scene[1], 3)
    one = get_embedding("spectral", spatial=spatials[1], temporal=YEAR, store=db)
    batch = get_embeddings_batch("spectral", spatials=spatials, temporal=YEAR, store=db)
    assert [e.cached for e in batch] == [False, True, False]
    np.testing.assert_array_equal(batch[1].data, one.data)
    assert all(e.cached for e in get_embeddings_batch("spectral", spatials=spatials, temporal=YEAR, store=db))


def test_grid_output_is_dhw(db, small_scene):
    emb = get_embedding("spectral", spatial=points(small_scene[1], 1)[0], temporal=YEAR,
                        output=OutputSpec.grid(), store=db)
    assert emb.data.ndim == 3 and emb.data.shape[0] == emb.stored.dim


def test_temporal_none_is_rs_embeds_default_window_with_its_warning(db, small_scene):
    spatial = points(small_scene[1], 1)[0]
    with pytest.warns(UserWarning, match="2022-06-01..2022-09-01"):
        reqs = routing_requests("spectral", spatial)
    assert reqs[0].temporal == TemporalSpec.range("2022-06-01", "2022-09-01")


def routing_requests(model, spatial, **kw):
    from rsembed_store.compat.api import build_requests

    args = dict(temporal=None, sensor=None, fetch=None, modality=None, output=OutputSpec.pooled(),
                backend="auto", input_prep=None, model_kwargs={})
    args.update(kw)
    return build_requests(model, [spatial], **args)


def test_defaults_follow_rs_embeds_code(small_scene):
    spatial = points(small_scene[1], 1)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = routing_requests("spectral", spatial)[0]
    assert r.input_prep.mode == "tile"  # rs-embed's package default when input_prep is None
    assert r.provider is None  # backend="auto": chosen per request
    assert routing_requests("spectral", spatial, temporal=YEAR, input_prep="resize")[0].input_prep.mode == "resize"
    with pytest.raises(SpecError, match="input_prep='warp'"):
        routing_requests("spectral", spatial, temporal=YEAR, input_prep="warp")
    assert routing_requests("spectral", spatial, temporal=YEAR, backend="GEE")[0].provider == "gee"


def test_fetch_overrides_the_default_sensor_and_excludes_sensor(small_scene):
    spatial = points(small_scene[1], 1)[0]
    r = routing_requests("spectral", spatial, temporal=YEAR, fetch=FetchSpec(scale_m=20, composite="mosaic"))[0]
    assert r.sensor.scale_m == 20 and r.sensor.composite == "mosaic" and r.sensor.collection == "s2-l2a"
    with pytest.raises(SpecError, match="either sensor=... or fetch="):
        routing_requests("spectral", spatial, temporal=YEAR, fetch=FetchSpec(scale_m=20),
                         sensor=r.sensor)


def test_earth_engine_spelling_of_a_sensor_is_ours():
    from rsembed_store.compat import SensorSpec
    from rsembed_store.registry import model_info

    ee = SensorSpec("COPERNICUS/S2_SR_HARMONIZED", ("B4", "B3", "B2"))
    s = routing.sensor_for(model_info("spectral"), ee, None)
    assert s.collection == "s2-l2a" and s.bands == ("B04", "B03", "B02")


def test_unsupported_settings_are_refused_by_name(small_scene):
    spatial = points(small_scene[1], 1)[0]
    with pytest.raises(SpecError, match="variant"):
        routing_requests("spectral", spatial, temporal=YEAR, model_kwargs={"variant": "large"})
    with pytest.raises(SpecError, match="modality='s1'"):
        routing_requests("spectral", spatial, temporal=YEAR, modality="s1")


def test_model_names_and_aliases():
    assert routing.store_model_name("gse_annual") == "gse"
    assert routing.store_model_name("remoteclip_s2rgb") == "remoteclip"
    assert routing.store_model_name("galileo") == "rsembed:galileo"
    assert routing.store_model_name("anysat") == "anysat"  # native anysat follows rs-embed's contract
    assert "spectral" in list_models() and "gse_annual" in list_models(include_aliases=True)
    assert "anysat" in list_models()
    d = describe_model("spectral")
    assert d["type"] == "on_the_fly" and "pooled" in d["output"]


def test_default_store_is_the_env_var_else_a_user_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("RSEMBED_STORE_DB", str(tmp_path / "envdb"))
    assert routing.default_store_uri() == str(tmp_path / "envdb")
    monkeypatch.delenv("RSEMBED_STORE_DB")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert routing.default_store_uri() == str(tmp_path / "cache" / "rsembed-store")


def test_default_store_is_used_when_none_is_passed(monkeypatch, tmp_path, scene_config, small_scene):
    monkeypatch.setattr(routing, "_default_store", Store.open(tmp_path / "d", config=scene_config))
    emb = get_embedding("spectral", spatial=points(small_scene[1], 1)[0], temporal=YEAR)
    assert routing.get_store().lookup([emb.key])[0] is not None


def test_bbox_and_drop_in_names():
    import rsembed_store.compat as rs_embed

    for name in ("get_embedding", "get_embeddings_batch", "export_batch", "load_export", "list_models",
                 "describe_model", "PointBuffer", "BBox", "TemporalSpec", "SensorSpec", "FetchSpec",
                 "OutputSpec", "InputPrepSpec", "ExportTarget", "ExportConfig", "ExportModelRequest"):
        assert hasattr(rs_embed, name), name
    assert BBox(11.0, 46.0, 11.01, 46.01).bounds() == (11.0, 46.0, 11.01, 46.01)


def test_rs_embeds_own_spec_objects_are_accepted(db, small_scene):
    rs = pytest.importorskip("rs_embed", reason="rs-embed is not importable here (it lives in the models venv)")
    spatial = points(small_scene[1], 1)[0]
    ours = get_embedding("spectral", spatial=spatial, temporal=YEAR, store=db)
    theirs = get_embedding("spectral", spatial=rs.PointBuffer(spatial.lon, spatial.lat, spatial.buffer_m),
                           temporal=rs.TemporalSpec.year(2023), output=rs.OutputSpec.pooled(),
                           fetch=rs.FetchSpec(scale_m=10), input_prep=rs.InputPrepSpec.tile(), store=db)
    assert theirs.cached and theirs.key == ours.key
    sensor = rs.SensorSpec("COPERNICUS/S2_SR_HARMONIZED", ("B2", "B3", "B4", "B8", "B11", "B12"))
    r = routing.sensor_for(routing_info("spectral"), sensor, None)
    assert r.collection == "s2-l2a" and r.bands[0] == "B02"


def routing_info(name):
    from rsembed_store.registry import model_info

    return model_info(name)


def test_every_public_name_is_documented_for_rs_embed_users():
    from pathlib import Path

    import rsembed_store.compat as rs_embed

    page = (Path(__file__).resolve().parents[2] / "docs" / "rs-embed-users.md").read_text(encoding="utf-8")
    missing = [n for n in rs_embed.__all__ if n not in page and n not in ("Embedding", "default_store_uri",
                                                                          "get_store", "NoProviderError")]
    assert not missing, missing
    assert "RSEMBED_STORE_DB" in page and "RSEMBED_STORE_STRICT_PROVIDER" in page
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert "docs/rs-embed-users.md" in readme


def test_bridged_model_settings_are_written_in_the_model_id():
    from rsembed_store.errors import UnknownModelError
    from rsembed_store.ingest.models.rsembed_bridge import settings_suffix, split_name

    name = routing.with_settings("rsembed:dofa", {"variant": "large", "k": 2})
    assert name == 'rsembed:dofa[{"k":2,"variant":"large"}]'
    assert split_name(name) == ("rsembed:dofa", {"k": 2, "variant": "large"})
    assert split_name("rsembed:dofa") == ("rsembed:dofa", None) and settings_suffix({}) == ""
    with pytest.raises(UnknownModelError, match="JSON object"):
        split_name("rsembed:dofa[variant=large]")
