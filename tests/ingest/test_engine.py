"""The cache-first engine end to end: synthetic COGs -> local provider -> featuriser -> LanceDB."""

import time

import numpy as np
import pytest

from rsembed_store import BBox, Embedding, H3Cell, Request, Store, TemporalSpec, resolve
from rsembed_store.ingest.engine import Engine, LocalExecutor, ingest
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
    p = plan("spectral", region_of(manifest), 9, TemporalSpec.year(2023))
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
    good = plan("spectral", region_of(manifest), 9, TemporalSpec.year(2023)).requests[:3]
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
    r = plan("spectral", region_of(manifest), 9, TemporalSpec.year(2023)).requests[0]
    summary = ingest(store, [r, r, r], config_of(out), progress=False)
    assert summary.computed == 1 and summary.cached == 2


class _Boom(SpectralModel):
    """Spectral under another id that is interrupted (like Ctrl-C) on its third batch."""

    info = ModelInfo(**{**SpectralModel.info.__dict__, "id": "spectral_boom"})
    calls = 0
    embedded = 0

    def embed_batch(self, items, **kw):
        type(self).calls += 1
        if type(self).calls == 3:
            raise KeyboardInterrupt
        out = super().embed_batch(items, **kw)
        type(self).embedded += len(items)
        return out


def test_interrupt_keeps_finished_batches_and_rerun_computes_only_the_rest(tmp_path, scene):
    out, manifest = scene
    register_model("spectral_boom", _Boom)
    store = Store.open(tmp_path / "db")
    reqs = plan("spectral_boom", region_of(manifest), 9, TemporalSpec.year(2023)).requests[:40]
    engine = Engine(store, config_of(out), batch_size=8, write_batch=1000, flush_seconds=float("inf"))
    with pytest.raises(KeyboardInterrupt):
        engine.run(reqs, progress=False)
    kept = _Boom.embedded  # two chunks were embedded, the third was in flight
    assert kept >= 2 and store.count(reqs[0].space) == kept
    _Boom.calls = -100
    rerun = Engine(store, config_of(out), batch_size=8).run(reqs, progress=False)
    assert rerun.cached == kept and rerun.computed == 40 - kept


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


# ---------------------------------------------------------------- writes bounded by time and count

class _Clock:
    """A clock that only the model moves: each request costs ``per_request`` seconds."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class _Slow(SpectralModel):
    """Spectral under another id, costing 1 s a request on :data:`CLOCK` (like a deep model on a CPU)."""

    info = ModelInfo(**{**SpectralModel.info.__dict__, "id": "spectral_slow"})
    clock = None

    def embed_batch(self, items, **kw):
        type(self).clock.now += 1.0 * len(items)
        return super().embed_batch(items, **kw)


def _recording(store, clock):
    writes = []
    put_many = store.put_many

    def record(embeddings):
        writes.append((clock(), len(embeddings)))
        return put_many(embeddings)

    store.put_many = record
    return writes


def test_a_slow_model_is_written_every_flush_interval_not_once_per_batch(tmp_path, scene):
    out, manifest = scene
    register_model("spectral_slow", _Slow)
    _Slow.clock = clock = _Clock()
    store = Store.open(tmp_path / "db")
    writes = _recording(store, clock)
    reqs = plan("spectral_slow", region_of(manifest), 9, TemporalSpec.year(2023)).requests[:40]
    engine = Engine(store, config_of(out), flush_seconds=10)  # one look-up batch of 256 holds all 40
    summary = LocalExecutor(clock=clock).run(engine, reqs, progress=False)
    assert summary.computed == 40 and store.count(reqs[0].space) == 40
    # never more than 10 s of work held: each write holds at most 10 one-second answers,
    # and at most 10 s of work passes between two writes (what kill -9 could lose)
    counts = [n for _, n in writes]
    assert sum(counts) == 40 and max(counts) <= 10 and len(writes) >= 4, writes
    times = [0.0] + [t for t, _ in writes]
    assert max(b - a for a, b in zip(times, times[1:])) <= 10.0, writes
    assert summary.calls["store.writes"] == len(writes)


def test_writes_by_count_alone_when_the_interval_is_infinite(tmp_path, scene):
    out, manifest = scene
    store = Store.open(tmp_path / "db")
    writes = _recording(store, time.monotonic)
    reqs = plan("spectral", region_of(manifest), 9, TemporalSpec.year(2023)).requests
    Engine(store, config_of(out), write_batch=3, flush_seconds=float("inf")).run(reqs[:20], progress=False)
    counts = [n for _, n in writes]
    assert sum(counts) == 20 and counts == [3] * 6 + [2]  # never more than write_batch held
    writes.clear()
    Engine(store, config_of(out), flush_seconds=float("inf")).run(reqs[20:40], progress=False)
    assert [n for _, n in writes] == [20]  # the old behaviour: one write per 2,048 answers


def test_write_settings_come_from_arguments_then_config_then_defaults(store):
    from rsembed_store.ingest.engine import DEFAULT_FLUSH_SECONDS, DEFAULT_WRITE_BATCH

    assert (Engine(store).write_batch, Engine(store).flush_seconds) == (DEFAULT_WRITE_BATCH, DEFAULT_FLUSH_SECONDS)
    config = {"ingest": {"write_batch": 7, "flush_seconds": 2}}
    assert (Engine(store, config).write_batch, Engine(store, config).flush_seconds) == (7, 2.0)
    engine = Engine(store, config, write_batch=9, flush_seconds=0.25)
    assert (engine.write_batch, engine.flush_seconds) == (9, 0.25)


@pytest.mark.parametrize("kwargs, words", [
    ({"write_batch": 0}, ["write_batch=0", "positive integer"]),
    ({"write_batch": True}, ["write_batch=True"]),
    ({"write_batch": 2.5}, ["write_batch=2.5"]),
    ({"flush_seconds": 0}, ["flush_seconds=0", "> 0"]),
    ({"flush_seconds": -1.0}, ["flush_seconds=-1.0"]),
    ({"flush_seconds": float("nan")}, ["flush_seconds=nan"]),
    ({"flush_seconds": "10"}, ["flush_seconds='10'"]),
    ({"config": {"ingest": {"flush_secs": 1}}}, ["'flush_secs'", "flush_seconds", "write_batch"]),
    ({"config": {"ingest": {"write_batch": 0}}}, ["config ingest.write_batch=0"]),
    ({"config": {"ingest": 5}}, ["config 'ingest'=5"]),
])
def test_bad_write_settings_are_refused_by_name(store, kwargs, words):
    from rsembed_store.errors import SpecError

    kwargs = dict(kwargs)
    config = kwargs.pop("config", None)
    with pytest.raises(SpecError) as err:
        Engine(store, config, **kwargs)
    for w in words:
        assert w in str(err.value)


def test_ray_partitions_use_the_drivers_write_settings(store, monkeypatch):
    from rsembed_store.ingest import ray_executor as rx

    monkeypatch.setattr(rx, "_pickle_classes", lambda requests: b"")  # no Ray needed to check the wiring
    monkeypatch.setattr(rx, "_install_classes", lambda blob: None)
    monkeypatch.setattr(rx, "_worker_engines", {})
    job = rx.RayExecutor()._job(Engine(store, write_batch=7, flush_seconds=1.5), [])
    assert (job.write_batch, job.flush_seconds) == (7, 1.5)
    worker = rx._engine_for(job)
    assert (worker.write_batch, worker.flush_seconds) == (7, 1.5)


class _NoCounters(_Product):
    info = ModelInfo(**{**_Product.info.__dict__, "id": "toyproduct_nocounters"})

    def stats(self):
        raise RuntimeError("counter store gone")


def test_a_failing_stats_call_is_logged_and_the_ingest_goes_on(tmp_path, caplog):
    register_model("toyproduct_nocounters", _NoCounters)
    store = Store.open(tmp_path / "db")
    reqs = [resolve(Request("toyproduct_nocounters", H3Cell("8928308280fffff"), TemporalSpec.year(y)))
            for y in (2021, 2022, 2023)]
    with caplog.at_level("WARNING", logger="rsembed_store.ingest.engine"):
        summary = ingest(store, reqs, progress=False)
    assert summary.computed == 3
    warned = [r.getMessage() for r in caplog.records if "stats() failed" in r.getMessage()]
    assert len(warned) == 1 and "_NoCounters" in warned[0] and "counter store gone" in warned[0]


def test_store_ingest_takes_a_model_a_region_and_windows(tmp_path, scene):
    """store.ingest(model, region, windows) plans as plan() does, at the store's resolution."""
    from rsembed_store.errors import SpecError

    out, manifest = scene
    store = Store.open(tmp_path / "db", config=config_of(out))
    expected = plan("spectral", region_of(manifest), store.h3_res, TemporalSpec.year(2023))
    planned = store.plan("spectral", region_of(manifest), TemporalSpec.year(2023))
    assert [r.key for r in planned.requests] == [r.key for r in expected.requests]
    summary = store.ingest("spectral", region_of(manifest), [2023], progress=False)
    assert summary.failed == 0 and summary.computed == len(expected.requests)
    assert store.count(expected.requests[0].space) == len(expected.requests)
    assert store.ingest(planned, progress=False).cached == len(expected.requests)  # a Plan works too
    with pytest.raises(SpecError, match="needs a region and windows"):
        store.ingest("spectral", region_of(manifest))
    with pytest.raises(SpecError, match="go with a model id"):
        store.ingest(planned, region_of(manifest), [2023])
