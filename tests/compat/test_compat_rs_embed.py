"""One rs-embed script run twice, with rs-embed and with the drop-in (only the import line changed).

The model is an embedder registered through rs-embed's own ``register`` (a fixed projection of
band means, no weights), reached by rs-embed directly and by the store through the
``rsembed:<name>`` bridge. rs-embed's provider is the one thing faked (Earth Engine is beyond
the machine): it hands rs-embed the very pixels the store's local provider reads for the same
ROI and window, so both runs see the same pixels and must give the same arrays.
"""

from __future__ import annotations

import numpy as np
import pytest

rs = pytest.importorskip("rs_embed", reason="rs-embed is not importable here (it lives in the models venv: "
                         "pip install --no-deps --ignore-requires-python rs-embed==0.3.1)")

from rs_embed.core.embedding import Embedding as RsEmbedding  # noqa: E402
from rs_embed.core.registry import register  # noqa: E402
from rs_embed.core.types import EmbedderCapabilities  # noqa: E402
from rs_embed.embedders.base import EmbedderBase  # noqa: E402
from rs_embed.providers import register_provider  # noqa: E402

import rsembed_store.compat as compat  # noqa: E402
from rsembed_store import InputPrepSpec, PointBuffer, Request, Store, TemporalSpec, resolve  # noqa: E402
from rsembed_store.ingest.providers.local import LocalProvider  # noqa: E402

S2 = "COPERNICUS/S2_SR_HARMONIZED"
RS_BANDS = ("B2", "B3", "B4", "B8")
OUR_BANDS = ("B02", "B03", "B04", "B08")
D = 5
PROJECTION = np.random.default_rng(11).normal(size=(D, len(RS_BANDS))).astype(np.float32)
NAME = "compattest_bandmean"
CALLS = {"n": 0}


@register(NAME)
class _BandMean(EmbedderBase):
    capabilities = EmbedderCapabilities(input_chw=True, model_config_single=True, model_config_batch=True,
                                        model_config_batch_inputs=True)

    def describe(self):
        return {"type": "on_the_fly", "backend": ["provider"], "inputs": {"collection": S2, "bands": list(RS_BANDS)},
                "temporal": {"mode": "range"}, "output": ["pooled"], "dim": D, "weights": None,
                "defaults": {"scale_m": 10, "cloudy_pct": 30, "composite": "median"}}

    def get_embedding(self, *, spatial, temporal, sensor, output, backend, device="auto", input_chw=None,
                      model_config=None):
        CALLS["n"] += 1
        if input_chw is None:  # rs-embed's own path: the embedder fetches through rs-embed's provider
            from rs_embed.embedders.meta import temporal_to_range
            from rs_embed.providers import get_provider

            input_chw = get_provider("gee").fetch_sensor_patch_chw(
                spatial=spatial, temporal=temporal_to_range(temporal), sensor=rs.SensorSpec(S2, RS_BANDS))
        x = np.asarray(input_chw, np.float32) * 1e-4
        gain = float((model_config or {}).get("gain", 1.0))  # a model setting (rs-embed's **model_kwargs)
        return RsEmbedding(data=gain * (PROJECTION @ x.reshape(x.shape[0], -1).mean(axis=1)), meta={"toy": True})


SCRIPT = """
sp = [rs_embed.PointBuffer(lon=lon, lat=lat, buffer_m=320) for lon, lat in PLACES]
t = rs_embed.TemporalSpec.range("2023-01-01", "2024-01-01")
gained = rs_embed.get_embedding(MODEL, spatial=sp[0], temporal=t, input_prep="resize", gain=2.5)
embs = rs_embed.get_embeddings_batch(MODEL, spatials=sp, temporal=t, input_prep="resize")
one = rs_embed.get_embedding(MODEL, spatial=sp[0], temporal=t, input_prep="resize")
rs_embed.export_batch(spatials=sp, temporal=t, models=[MODEL], target=rs_embed.ExportTarget.combined(OUT),
                      config=rs_embed.ExportConfig(save_inputs=False, show_progress=False, num_workers=1),
                      input_prep="resize")
back = rs_embed.load_export(OUT + ".npz")
"""


def run(import_line: str, **names) -> dict:
    ns = dict(names)
    exec(import_line + "\n" + SCRIPT, ns)
    return ns


@pytest.fixture
def fake_rs_provider(scene_config, monkeypatch):
    """rs-embed's 'gee' provider, answering with the store's local pixels (DN, no data -> fill)."""
    from rs_embed.providers import _PROVIDER_REGISTRY

    class LocalPixels:
        name = "gee"

        def ensure_ready(self):
            pass

        def fetch_sensor_patch_chw(self, *, spatial, temporal, sensor, to_float_image=False):
            r = resolve(Request(f"rsembed:{NAME}", PointBuffer(spatial.lon, spatial.lat, spatial.buffer_m),
                                TemporalSpec.range(temporal.start, temporal.end), input_prep=InputPrepSpec.resize()))
            px = LocalProvider(scene_config).fetch(r)
            x = px.array[[px.bands.index(b) for b in OUR_BANDS]] / 1e-4
            return np.where(px.valid, x, sensor.fill_value).astype(np.float32)

    monkeypatch.setitem(_PROVIDER_REGISTRY, "gee", lambda **kw: LocalPixels())
    yield


def test_the_same_script_gives_the_same_arrays_and_the_drop_in_rerun_is_all_hits(
        tmp_path, small_scene, scene_config, fake_rs_provider, monkeypatch):
    w, s, e, n = small_scene[1]["bounds_lonlat"]
    places = [(w + (e - w) * f, (s + n) / 2) for f in (0.3, 0.6)]
    db = Store.open(tmp_path / "db", config=scene_config)
    monkeypatch.setattr(compat.routing, "_default_store", db)
    theirs = run("import rs_embed", PLACES=places, MODEL=NAME, OUT=str(tmp_path / "theirs"))
    ours = run("from rsembed_store import compat as rs_embed", PLACES=places, MODEL=NAME, OUT=str(tmp_path / "ours"))
    for a, b in zip(theirs["embs"], ours["embs"]):
        np.testing.assert_allclose(np.asarray(a.data), b.data, rtol=1e-5, atol=1e-6)
        common = set(a.meta) & set(b.meta)  # the meta fields both define agree
        assert common and all(a.meta[k] == b.meta[k] for k in common), (a.meta, b.meta)
    np.testing.assert_allclose(np.asarray(theirs["one"].data), ours["one"].data, rtol=1e-5, atol=1e-6)
    # model settings pass through the bridge and are part of the key (the model id names them)
    np.testing.assert_allclose(np.asarray(theirs["gained"].data), ours["gained"].data, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["gained"].data, 2.5 * ours["one"].data, rtol=1e-5)
    assert ours["gained"].meta["store_model"] == f'rsembed:{NAME}[{{"gain":2.5}}]'
    assert ours["gained"].key != ours["one"].key
    assert ours["one"].cached  # the batch before it stored the answer
    # the exported files: same arrays, and rs-embed's load_export reads both
    np.testing.assert_allclose(theirs["back"].embedding(NAME), ours["back"].embedding(NAME), rtol=1e-5, atol=1e-6)
    assert rs.load_export(str(tmp_path / "ours.npz")).n_items == 2
    # the drop-in's second run is all cache hits and computes nothing
    before = CALLS["n"]
    again = run("from rsembed_store import compat as rs_embed", PLACES=places, MODEL=NAME,
                OUT=str(tmp_path / "again"))
    assert all(e.cached for e in again["embs"]) and again["one"].cached and CALLS["n"] == before


@pytest.mark.parametrize("name", ["get_embedding", "get_embeddings_batch", "export_batch", "list_models",
                                  "describe_model", "load_export"])
def test_signatures_are_rs_embeds(name):
    """Every parameter of rs-embed's function is ours, same kind and same default (ours may add
    keyword-only ``store`` and ``strict_provider``)."""
    import inspect

    theirs = inspect.signature(getattr(rs, name)).parameters
    ours = inspect.signature(getattr(compat, name)).parameters
    for pname, p in theirs.items():
        assert pname in ours, f"{name} lacks {pname}"
        q = ours[pname]
        assert q.kind == p.kind, (name, pname)
        if p.default is not inspect.Parameter.empty:
            assert repr(q.default) == repr(p.default) or q.default == p.default or \
                type(q.default).__name__ == type(p.default).__name__, (name, pname, q.default, p.default)
    assert set(ours) - set(theirs) <= {"store", "strict_provider"}


@pytest.mark.parametrize("cls", ["ExportConfig", "ExportTarget", "ExportModelRequest", "FetchSpec"])
def test_export_and_fetch_types_have_rs_embeds_fields_and_defaults(cls):
    from dataclasses import fields

    theirs = {f.name: f.default for f in fields(getattr(rs, cls))}
    ours = {f.name: f.default for f in fields(getattr(compat, cls))}
    assert theirs == ours


# ------------------------------------------------------------------ a multi-frame rs-embed model


from rs_embed.core.specs import ModelInputSpec  # noqa: E402

FRAMES_SEEN = []


@register("compattest_frames")
class _FrameDiff(EmbedderBase):
    """Declares a 3-frame input contract, as galileo/agrifm/olmoearth do; embeds last minus first frame."""

    capabilities = EmbedderCapabilities(input_chw=True)
    input_spec = ModelInputSpec(collection=S2, bands=RS_BANDS, temporal_mode="multi", n_frames=3)

    def describe(self):
        return {"type": "on_the_fly", "backend": ["provider"], "inputs": {"collection": S2, "bands": list(RS_BANDS)},
                "temporal": {"mode": "range"}, "output": ["pooled"], "dim": D, "weights": None,
                "defaults": {"scale_m": 10, "cloudy_pct": 30, "composite": "median"}}

    def get_embedding(self, *, spatial, temporal, sensor, output, backend, device="auto", input_chw=None,
                      model_config=None):
        x = np.asarray(input_chw, np.float32) * 1e-4
        FRAMES_SEEN.append(x.shape)
        means = x.reshape(x.shape[0], x.shape[1], -1).mean(axis=2)  # (T, C)
        return RsEmbedding(data=PROJECTION @ (means[-1] - means[0]), meta={"frames": int(x.shape[0])})


def test_a_multi_frame_model_gets_its_frames_through_the_bridge(tmp_path, scene_config):
    db = Store.open(tmp_path / "db", config=scene_config)
    roi = PointBuffer(11.0, 46.0, 320)
    stored = db.get("rsembed:compattest_frames", roi, TemporalSpec.year(2023))
    r = stored.request
    assert r.frames is not None and r.frames.count == 3 and '"frames"' in r.canonical
    assert len(FRAMES_SEEN[-1]) == 4 and FRAMES_SEEN[-1][0] == 3  # (T, C, H, W) reached the model
    px = LocalProvider(scene_config).fetch(r)
    dn = np.where(px.valid[:, None], px.array[:, [px.bands.index(b) for b in OUR_BANDS]] / 1e-4, 0.0)
    start, end = (d.isoformat() for d in r.temporal.window())
    theirs = rs.get_embedding_from_data(
        "compattest_frames", rs.UserData(data=dn.astype(np.float32), collection=S2, bands=RS_BANDS,
                                         spatial=rs.PointBuffer(roi.lon, roi.lat, roi.buffer_m),
                                         temporal=rs.TemporalSpec.range(start, end)),
        input_prep="resize")
    np.testing.assert_allclose(stored.vector, np.asarray(theirs.data), rtol=1e-5, atol=1e-6)
    assert np.abs(stored.vector).max() > 0  # the frames differ: a single composite would give zeros
