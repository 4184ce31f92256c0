"""The cache-first engine end to end: synthetic COGs -> local provider -> featuriser -> LanceDB."""

import numpy as np
import pytest

from rsembed_store import BBox, Embedding, H3Cell, Request, Store, TemporalSpec, resolve
from rsembed_store.ingest.engine import Engine, ingest
from rsembed_store.ingest.models.spectral import SpectralModel
from rsembed_store.ingest.plan import plan
from rsembed_store.model import Model, ModelInfo
from rsembed_store.registry import register_model


@pytest.fixture
def scene(small_scene):
    return small_scene


def region_of(manifest, margin=0.003):
    w, s, e, n = manifest["bounds_lonlat"]
    return BBox(w + margin, s + margin, e - margin, n - margin)


def config_of(scene_dir):
    return {"sources": {"s2-l2a": str(scene_dir / "scenes")}}


def test_first_run_computes_second_run_is_all_cached(tmp_path, scene):
    out, manifest = scene
    store = Store.open(tmp_path / "db")
    p = plan(region_of(manifest), 9, TemporalSpec.year(2023), "spectral")
    assert len(p.requests) > 10
    first = ingest(store, p.requests, config_of(out), progress=False)
    assert first.failed == 0, first.failures[:3]
    assert first.computed == len(p.requests) and first.cached == 0
    space = p.requests[0].space
    assert store.count(space) == len(p.requests)
    version = store.dataset(space).version
    again = ingest(store, p.requests, config_of(out), progress=False)
    assert again.cached == len(p.requests) and again.computed == 0
    assert store.dataset(space).version == version  # nothing was written
    stored = store.lookup_many([p.requests[0].key], space=space)[0]
    assert stored.compute_s > 0 and stored.meta["n_scenes"] >= 1


def test_a_failing_request_is_reported_and_not_stored(tmp_path, scene):
    out, manifest = scene
    store = Store.open(tmp_path / "db")
    good = plan(region_of(manifest), 9, TemporalSpec.year(2023), "spectral").requests[:3]
    far = resolve(Request("spectral", H3Cell("8928308280fffff"), TemporalSpec.year(2023)))  # San Francisco
    empty = resolve(Request("spectral", good[0].spatial, TemporalSpec.range("2019-01-01", "2019-02-01")))
    summary = ingest(store, good + [far, empty], config_of(out), progress=False)
    assert summary.computed == 3 and summary.failed == 2
    reasons = {f.key: f.reason for f in summary.failures}
    assert far.key in reasons and empty.key in reasons
    assert "2019-01-01" in reasons[empty.key]
    assert store.contains_many([far.key, empty.key, good[0].key], space=good[0].space) == [False, False, True]


def test_repeated_keys_are_computed_once(tmp_path, scene):
    out, manifest = scene
    store = Store.open(tmp_path / "db")
    r = plan(region_of(manifest), 9, TemporalSpec.year(2023), "spectral").requests[0]
    summary = ingest(store, [r, r, r], config_of(out), progress=False)
    assert summary.computed == 1 and summary.cached == 2


class _Boom(SpectralModel):
    """Spectral under another id that is interrupted (like Ctrl-C) on its third batch."""

    info = ModelInfo(**{**SpectralModel.info.__dict__, "id": "spectral_boom"})
    calls = 0

    def embed_batch(self, items, **kw):
        type(self).calls += 1
        if type(self).calls == 3:
            raise KeyboardInterrupt
        return super().embed_batch(items, **kw)


def test_interrupt_keeps_finished_batches_and_rerun_computes_only_the_rest(tmp_path, scene):
    out, manifest = scene
    register_model("spectral_boom", _Boom)
    store = Store.open(tmp_path / "db")
    reqs = plan(region_of(manifest), 9, TemporalSpec.year(2023), "spectral_boom").requests[:40]
    engine = Engine(store, config_of(out), batch_size=8, write_batch=1000)
    with pytest.raises(KeyboardInterrupt):
        engine.run(reqs, progress=False)
    assert store.count(reqs[0].space) == 16  # two finished batches, the third was in flight
    _Boom.calls = -100
    rerun = Engine(store, config_of(out), batch_size=8).run(reqs, progress=False)
    assert rerun.cached == 16 and rerun.computed == 24


class _Product(Model):
    info = ModelInfo(id="toyproduct", revision="p1", kind="precomputed", dim=4, temporal="year",
                     providers=("product",), years=(2020, 2024))

    def __init__(self, config=None):
        self.config = config

    def read(self, request):
        if request.temporal.year == 2020:
            raise FileNotFoundError("no tile for 2020")
        lon, lat = request.spatial.center()
        return Embedding(request=request, vector=np.array([lon, lat, request.temporal.year, 1], np.float32))


def test_precomputed_models_are_read_not_fetched(tmp_path):
    register_model("toyproduct", _Product)
    store = Store.open(tmp_path / "db")
    reqs = [resolve(Request("toyproduct", H3Cell("8928308280fffff"), TemporalSpec.year(y))) for y in (2020, 2021, 2022)]
    summary = ingest(store, reqs, progress=False)
    assert summary.computed == 2 and summary.failed == 1
    assert "no tile for 2020" in summary.failures[0].reason
    got = store.lookup([reqs[2]])[0]
    assert got.vector[2] == 2022


def test_progress_bar_shows_counts_on_a_terminal(capsys):
    from rsembed_store.ingest.engine import IngestSummary, Progress

    bar = Progress(10, enabled=True)
    s = IngestSummary(requested=10, cached=4, computed=5, failed=1)
    bar.update(10, s)
    bar.close()
    err = capsys.readouterr().err
    assert "10/10" in err and "cached=4" in err and "computed=5" in err and "failed=1" in err
    quiet = Progress(10, enabled=None)  # not a terminal under pytest: silent
    quiet.update(10, s)
    quiet.close()
    assert capsys.readouterr().err == ""
