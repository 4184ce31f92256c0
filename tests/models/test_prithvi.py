"""``prithvi`` (Prithvi-EO-2.0-100M-TL through terratorch) with seeded random weights.

The checkpoint is a seeded random terratorch PrithviMAE of the 100M-TL shape, encoder
and decoder: the format of the published ``Prithvi_EO_V2_100M_TL.pt``. Inference runs
on a 32 px variant (2 x 2 patches per frame) to keep CPU time small; the network and
its weights are the full 100M-TL ones (its position embedding is a fixed sin/cos
function of the input size).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
backbones = pytest.importorskip("terratorch.models.backbones.prithvi_vit")

from rsembed_store import Request, Store  # noqa: E402
from rsembed_store.errors import SpecError  # noqa: E402
from rsembed_store.ingest.models import prithvi  # noqa: E402
from rsembed_store.ingest.models.weights import WeightsError, use_published, use_weights  # noqa: E402
from rsembed_store.ingest.providers.base import Pixels  # noqa: E402
from rsembed_store.keys import ResolvedRequest, resolve  # noqa: E402
from rsembed_store.model import FramePlan  # noqa: E402
from rsembed_store.registry import model_class, register_model  # noqa: E402
from rsembed_store.specs import OutputSpec, PointBuffer, SensorSpec, TemporalSpec  # noqa: E402

SMALL = 32
WINDOW = TemporalSpec.range("2023-01-01", "2024-01-01")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    mae = backbones.prithvi_eo_v2_100_tl_mae(pretrained=False, num_frames=4)
    path = tmp_path_factory.mktemp("prithvi") / prithvi.FILE
    torch.save(mae.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def small(checkpoint):
    """The use_weights variant, shrunk to 32 px input; registered as 'prithvi' for the module."""
    variant = use_weights("prithvi", checkpoint)
    cls = type("SmallPrithvi", (variant,), {"info": replace(variant.info, input_size=SMALL)})
    register_model("prithvi", cls)
    yield cls
    use_published("prithvi")


def series(seed=3, size=SMALL):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.02, 0.4, (1, len(prithvi.BANDS), size, size))
    season = np.array([0.8, 1.0, 1.2, 0.9])[:, None, None, None]
    return (base * season).astype(np.float32)


def pixels(arr, valid=None):
    t, _, h, w = arr.shape
    return Pixels(array=arr, bands=prithvi.BANDS, valid=np.ones((t, h, w), bool) if valid is None else valid,
                  roi_mask=np.ones((h, w), bool), crs="EPSG:32632", transform=(0.0, 30.0, 0.0, 0.0, 0.0, -30.0))


def request(cls, output=None):
    temporal = cls.resolve_temporal(WINDOW)
    return ResolvedRequest(model=cls.info.id, revision=cls.info.revision, provider="local",
                           spatial=PointBuffer(11.0, 46.0, 480), temporal=temporal, sensor=cls.resolve_sensor(None),
                           output=cls.resolve_output(output), input_prep=cls.resolve_input_prep(None),
                           frames=cls.resolve_frames(temporal))


def test_declared_contract():
    info = model_class("prithvi").info
    assert (info.dim, info.frames, info.input_size, info.default_sensor.bands) == (
        768, 4, 224, ("B02", "B03", "B04", "B8A", "B11", "B12"))
    assert info.default_sensor.scale_m == 30
    r = resolve(Request("prithvi", PointBuffer(11.0, 46.0, 480), TemporalSpec.year(2023)))
    assert r.frames == FramePlan.split(WINDOW, 4)


def test_the_published_class_refuses_unpinned_weights():
    with pytest.raises(WeightsError, match="not pinned.*use_weights"):
        prithvi.PrithviModel({"device": "cpu"})


def test_a_published_shape_checkpoint_loads_with_no_missing_or_unexpected_keys(small, checkpoint):
    net = small({"device": "cpu"}).net  # build() raises on any missing or unexpected key
    state = torch.load(checkpoint, weights_only=True)
    assert any(k.startswith("decoder.") for k in state)  # the MAE format: the decoder is dropped
    assert set(net.state_dict()) == {k[len("encoder."):] for k in state if k.startswith("encoder.")}


def test_a_wrong_checkpoint_is_refused(small, tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"encoder.cls_token": torch.zeros(1, 1, 768)}, bad)
    cls = use_weights("prithvi", bad)
    try:
        with pytest.raises(WeightsError, match="is not a Prithvi-EO-2.0-100M-TL checkpoint"):
            cls({"device": "cpu"})
    finally:
        register_model("prithvi", small)


def test_golden_output_matches_terratorchs_own_forward(small, checkpoint):
    model = small({"device": "cpu"})
    x = series()
    req = request(small)
    emb = model.embed(pixels(x), req)
    # the reference: terratorch's own loader and forward on the same input, normalised by hand
    net = backbones.prithvi_eo_v2_100_tl(pretrained=True, ckpt_path=str(checkpoint), num_frames=4).eval()
    z = (x * 10000.0 - np.array(prithvi.MEAN)[None, :, None, None]) / np.array(prithvi.STD)[None, :, None, None]
    frames = torch.from_numpy(z.astype(np.float32)).permute(1, 0, 2, 3)[None]  # (1, C, T, H, W)
    # frame middles of 2023 in 4 frames (edges Jan 1, Apr 2, Jul 2, Oct 1, Jan 1; 91, 91, 91, 92 days):
    # start + days // 2 = Feb 15, May 17, Aug 16, Nov 16 = days of year 46, 137, 228, 320
    when = torch.tensor([[[2023.0, 46], [2023, 137], [2023, 228], [2023, 320]]])
    with torch.inference_mode():
        tokens = net.forward_features(frames, temporal_coords=when, location_coords=torch.tensor([[46.0, 11.0]]))
    expected = tokens[-1][0, 1:].reshape(4, 4, 768).mean(0).mean(0).numpy()
    assert emb.vector.shape == (768,)
    np.testing.assert_allclose(emb.vector, expected, rtol=1e-4, atol=1e-4)
    # and the dates matter: the same pixels a year later give another vector
    later = replace(req, frames=FramePlan.split(TemporalSpec.range("2024-01-01", "2025-01-01"), 4))
    assert not np.allclose(model.embed(pixels(x), later).vector, emb.vector, atol=1e-5)


def test_grid_is_the_2x2_cells_and_a_gap_is_filled_from_the_nearest_frame(small):
    model = small({"device": "cpu"})
    x = series()
    grid = model.embed(pixels(x), request(small, OutputSpec.grid(30))).grid
    assert grid.shape == (768, 2, 2) and np.isfinite(grid).all()
    # frame 2 missing its top half, filled from frame 1 (nearest, earlier on the tie with frame 3)
    holed, valid = x.copy(), np.ones((4, SMALL, SMALL), bool)
    holed[2, :, :16], valid[2, :16] = 0.0, False
    filled = x.copy()
    filled[2, :, :16] = x[1, :, :16]
    a = model.embed(pixels(holed, valid), request(small)).vector
    b = model.embed(pixels(filled), request(small)).vector
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_pixels_without_frames_are_refused(small):
    model = small({"device": "cpu"})
    flat = Pixels(array=series()[0], bands=prithvi.BANDS, valid=np.ones((SMALL, SMALL), bool),
                  roi_mask=np.ones((SMALL, SMALL), bool), crs="EPSG:32632", transform=(0, 30, 0, 0, 0, -30))
    with pytest.raises(Exception, match="4 frame"):
        model.embed(flat, request(small))


def test_a_window_shorter_than_four_days_is_refused():
    with pytest.raises(SpecError, match="4 frames"):
        resolve(Request("prithvi", PointBuffer(11.0, 46.0, 480), TemporalSpec.range("2023-01-01", "2023-01-03")))


def test_end_to_end_on_the_synthetic_scene(small, tmp_path_factory):
    import json

    from rsembed_store.ingest.providers.local import LocalProvider, forget
    from rsembed_store.testing.scenes import SceneSpec, generate_scene

    out = tmp_path_factory.mktemp("prithvi-scene")
    spec = SceneSpec(size_px=128, n_dates=4, n_patches=8, seed=2)
    generate_scene(out, spec)
    index = LocalProvider.build_index(out / "scenes")  # the index names each file's bands: the scene's
    entries = json.loads(index.read_text())  # NIR band B08 stands in for the narrow NIR B8A here
    for entry in entries:
        entry["bands"] = ["B8A" if b == "B08" else b for b in entry["bands"]]
    index.write_text(json.dumps(entries))
    forget(out / "scenes")
    store = Store.open(out / "db")
    # the default sensor is HLS; this synthetic scene is Sentinel-2 L2A shaped, read as S2 explicitly
    s2 = SensorSpec("s2-l2a", prithvi.BANDS, scale_m=30, cloudy_pct=30, composite="median")
    req = Request("prithvi", PointBuffer(spec.center_lon, spec.center_lat, 480), TemporalSpec.year(2023), sensor=s2)
    config = {"sources": {"s2-l2a": str(out / "scenes")}}
    emb = store.get(req, config=config)
    assert emb.vector.shape == (768,) and np.isfinite(emb.vector).all() and not emb.cached
    again = store.get(req, config=config)
    assert again.cached and again.key == emb.key == resolve(req).key
    np.testing.assert_allclose(again.vector, emb.vector)
