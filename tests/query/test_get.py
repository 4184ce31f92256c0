"""Cache-first get and batch lookup against a real store and the synthetic source."""

import threading

import numpy as np
import pytest

from rsembed_store import H3Cell, PointBuffer, Request, Store, TemporalSpec
from rsembed_store.errors import NoImageryError, SpecError
from rsembed_store.ingest.models.spectral import SpectralModel
from rsembed_store.model import ModelInfo
from rsembed_store.registry import register_model


def centre(manifest):
    w, s, e, n = manifest["bounds_lonlat"]
    return (w + e) / 2, (s + n) / 2


def test_miss_computes_stores_and_then_hits(tmp_path, small_scene, scene_config):
    _, manifest = small_scene
    store = Store.open(tmp_path / "db", config=scene_config)
    lon, lat = centre(manifest)
    args = ("spectral", PointBuffer(lon, lat, 200), TemporalSpec.year(2023))
    assert store.get(*args, compute=False) is None
    first = store.get(*args)
    assert first.cached is False and first.vector.shape == (SpectralModel.info.dim,)
    second = store.get(*args)
    assert second.cached is True
    np.testing.assert_array_equal(first.vector, second.vector)
    # the same computation asked another way shares the entry
    third = store.get("spectral", PointBuffer(lon, lat, 200), TemporalSpec.range("2023-01-01", "2024-01-01"))
    assert third.cached is True and third.key == first.key
    assert store.count(first.space) == 1


def test_failed_get_raises_and_stores_nothing(tmp_path, small_scene, scene_config):
    _, manifest = small_scene
    store = Store.open(tmp_path / "db", config=scene_config)
    lon, lat = centre(manifest)
    with pytest.raises(NoImageryError, match="2019"):
        store.get("spectral", PointBuffer(lon, lat, 200), TemporalSpec.range("2019-01-01", "2019-03-01"))
    assert store.spaces() == [] or store.count(store.spaces()[0].space) == 0


def test_bad_requests_are_refused_before_any_work(tmp_path):
    store = Store.open(tmp_path / "db")
    with pytest.raises(SpecError, match="lat"):
        store.get("spectral", PointBuffer(11, 95, 200), TemporalSpec.year(2023))
    with pytest.raises(SpecError, match="nope"):
        store.get("nope", PointBuffer(11, 45, 200), TemporalSpec.year(2023))


class _Counting(SpectralModel):
    info = ModelInfo(**{**SpectralModel.info.__dict__, "id": "spectral_count"})
    calls = 0
    gate = threading.Event()

    def embed_batch(self, items, **kw):
        type(self).calls += 1
        type(self).gate.wait(5)  # hold the computation so every caller arrives while it runs
        return super().embed_batch(items, **kw)


def test_concurrent_gets_of_one_key_compute_once(tmp_path, small_scene, scene_config):
    _, manifest = small_scene
    register_model("spectral_count", _Counting)
    store = Store.open(tmp_path / "db", config=scene_config)
    lon, lat = centre(manifest)
    results = []

    def worker():
        results.append(store.get("spectral_count", PointBuffer(lon, lat, 150), TemporalSpec.year(2023)))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    threading.Timer(0.5, _Counting.gate.set).start()
    for t in threads:
        t.join(20)
    assert len(results) == 6 and _Counting.calls == 1
    assert len({r.key for r in results}) == 1
    assert store.count(results[0].space) == 1


def test_lookup_mixes_keys_and_requests_in_order(tmp_path, small_scene, scene_config):
    _, manifest = small_scene
    store = Store.open(tmp_path / "db", config=scene_config)
    lon, lat = centre(manifest)
    a = store.get("spectral", PointBuffer(lon, lat, 150), TemporalSpec.year(2023))
    cell = H3Cell(__import__("h3").latlng_to_cell(lat, lon, 9))
    b = store.get("mosaiks", cell, TemporalSpec.year(2023))
    missing = Request("spectral", PointBuffer(lon, lat, 160), TemporalSpec.year(2023))
    unheld_model = Request("mosaiks", PointBuffer(lon, lat, 150), TemporalSpec.year(2022))
    got = store.lookup([b.key, missing, a.request, unheld_model, "f" * 64])
    assert [g.key if g else None for g in got] == [b.key, None, a.key, None, None]
    assert all(g.cached for g in got if g)
