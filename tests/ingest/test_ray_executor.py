"""The Ray executor against the local one: same plan, same answers; reruns, failures,
concurrent writers and the CLI. One local Ray session (2 CPUs) serves the whole module,
because starting Ray costs seconds."""

import json
import os
import threading

import numpy as np
import pyarrow.compute as pc
import pytest

ray = pytest.importorskip("ray")

from click.testing import CliRunner  # noqa: E402

from rsembed_store import BBox, H3Cell, Request, Store, TemporalSpec, resolve  # noqa: E402
from rsembed_store.cli import main  # noqa: E402
from rsembed_store.errors import MissingExtraError, SpecError  # noqa: E402
from rsembed_store.ingest.engine import ingest  # noqa: E402
from rsembed_store.ingest.models.spectral import SpectralModel  # noqa: E402
from rsembed_store.ingest.plan import plan  # noqa: E402
from rsembed_store.ingest.ray_executor import RayExecutor, executor_for, locality, partition  # noqa: E402
from rsembed_store.model import ModelInfo  # noqa: E402
from rsembed_store.ingest.providers.local import LocalProvider  # noqa: E402
from rsembed_store.registry import register_model, register_provider  # noqa: E402

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def spectral_plan(small_scene):
    w, s, e, n = small_scene[1]["bounds_lonlat"]
    p = plan("spectral", BBox(w + 0.003, s + 0.003, e - 0.003, n - 0.003), 9, TemporalSpec.year(2023))
    assert len(p.requests) >= 30
    return p


def rows(store, space):
    """key -> pooled vector of every row, and the number of rows."""
    t = store.to_arrow(space, columns=["key", "vector"])
    keys = t.column("key").to_pylist()
    vectors = t.column("vector").to_pylist()
    return {k: np.asarray(v, np.float32) for k, v in zip(keys, vectors)}, len(keys)


def assert_no_duplicate_key(store, space):
    keys = store.to_arrow(space, columns=["key"]).column("key")
    assert len(keys) == len(pc.unique(keys)), "a key was stored twice"


# ------------------------------------------------------------------ models defined here, not importable by workers

def _like_spectral(model_id):
    return ModelInfo(**{**SpectralModel.info.__dict__, "id": model_id})


class _DiesOnce(SpectralModel):
    """Spectral under another id whose worker process dies on the first batch it embeds
    (anywhere in the run: the marker file is shared), as a lost node would."""

    info = _like_spectral("spectral_dies_once")

    def embed_batch(self, items, **kw):
        marker = self.config["marker"]
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return super().embed_batch(items, **kw)
        os._exit(1)


class _Gathering(SpectralModel):
    """Spectral under another id whose tasks wait for each other before they embed, so that
    every task has looked its keys up (and found them missing) before any task writes."""

    info = _like_spectral("spectral_gathering")

    def embed_batch(self, items, **kw):
        import time
        import uuid

        room, expected = self.config["room"], self.config["expected"]
        open(os.path.join(room, uuid.uuid4().hex), "w").close()
        deadline = time.monotonic() + 90
        while len(os.listdir(room)) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        return super().embed_batch(items, **kw)


def _counting_provider():
    """The local provider under another name that leaves a file per fetch, so the test can
    see the workers used it. Defined inside a function, so no worker can import it by name."""

    class CountingProvider(LocalProvider):
        name = "counting-local"

        def fetch(self, request):
            open(os.path.join(self.config["tally"], request.key), "w").close()
            return super().fetch(request)

    return CountingProvider


class _SpectralViaCounting(SpectralModel):
    info = ModelInfo(**{**SpectralModel.info.__dict__, "id": "spectral_counting",
                        "providers": ("counting-local",)})


def same_plan_for(model_id, p):
    register_model(model_id, {"spectral_dies_once": _DiesOnce, "spectral_gathering": _Gathering}[model_id])
    return [resolve(Request(model_id, r.spatial, TemporalSpec.year(2023))) for r in p.requests]


# ------------------------------------------------------------------ partitioning (no Ray needed)

def test_partitions_cover_every_request_once_and_never_mix_windows(spectral_plan):
    two_windows = plan("spectral", spectral_plan.cells, 9, [TemporalSpec.year(2022), TemporalSpec.year(2023)])
    parts = partition(two_windows.requests, 7)
    flat = [r.key for part in parts for r in part]
    assert sorted(flat) == sorted(two_windows.keys())
    assert all(1 <= len(part) <= 7 for part in parts)
    assert all(len({r.temporal for r in part}) == 1 for part in parts)
    assert partition(two_windows.requests, 7) == parts  # deterministic


def test_a_small_neighbourhood_stays_in_one_partition(spectral_plan):
    reqs = spectral_plan.requests
    by_parent = {}
    for r in reqs:
        by_parent.setdefault(locality(r, 1), []).append(r.key)  # res-8 parents: up to 7 cells each
    parts = partition(reqs, 16, parent_levels=1)
    where = {r.key: i for i, part in enumerate(parts) for r in part}
    for keys in by_parent.values():
        assert len({where[k] for k in keys}) == 1, "siblings were split although they fit one partition"


def test_a_model_that_wants_a_gpu_asks_ray_for_one():
    from rsembed_store.ingest.ray_executor import gpus_wanted

    class _OnGpu(SpectralModel):
        info = _like_spectral("spectral_on_gpu")
        wants_gpu = True

    class _HalfGpu(SpectralModel):
        info = _like_spectral("spectral_half_gpu")
        num_gpus = 0.5

    register_model("spectral_on_gpu", _OnGpu)
    register_model("spectral_half_gpu", _HalfGpu)
    assert (gpus_wanted("spectral"), gpus_wanted("spectral_on_gpu"), gpus_wanted("spectral_half_gpu")) == (0, 1, 0.5)


def test_bad_settings_are_refused_with_the_value():
    with pytest.raises(SpecError, match="partition_size=0"):
        RayExecutor(partition_size=0)
    with pytest.raises(SpecError, match="cpus_per_task=0 is not accepted"):
        RayExecutor(cpus_per_task=0)
    with pytest.raises(SpecError, match="num_cpus=4 applies to a local Ray"):
        RayExecutor("auto", 4)
    with pytest.raises(SpecError, match="--ray-address apply to --executor ray only"):
        executor_for("local", ray_address="auto")


def test_a_missing_ray_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'rsembed-store\[ray\]'"):
        executor_for("ray")


# ------------------------------------------------------------------ against the local executor

def test_ray_and_local_store_the_same_keys_and_vectors(tmp_path, ray_session, spectral_plan, scene_config):
    reqs = spectral_plan.requests
    local_store, ray_store = Store.open(tmp_path / "local"), Store.open(tmp_path / "ray")
    local = ingest(local_store, reqs, scene_config, progress=False)
    executor = RayExecutor(partition_size=8)
    distributed = ingest(ray_store, reqs, scene_config, progress=False, executor=executor)
    assert distributed.failed == 0, distributed.failures[:2]
    assert (distributed.requested, distributed.cached, distributed.computed) == (len(reqs), 0, len(reqs))
    assert distributed.calls["fetch"] == local.calls["fetch"] == len(reqs)
    assert distributed.calls["ray.partitions"] == len(partition(reqs, 8)) > 1
    a, n_a = rows(local_store, spectral_plan.space)
    b, n_b = rows(ray_store, spectral_plan.space)
    assert n_a == n_b == len(reqs) and set(a) == set(b) == set(spectral_plan.keys())
    # same code on the same pixels in another process: bitwise the same floats
    assert all(np.array_equal(a[k], b[k]) for k in a)
    again = ingest(ray_store, reqs, scene_config, progress=False, executor=executor)
    assert again.cached == len(reqs) and again.calls == {}  # all cached: no task was started


def test_a_provider_registered_at_runtime_reaches_the_workers(tmp_path, ray_session, spectral_plan, scene_config):
    register_provider("counting-local", _counting_provider())
    register_model("spectral_counting", _SpectralViaCounting)
    reqs = [resolve(Request("spectral_counting", r.spatial, TemporalSpec.year(2023))) for r in spectral_plan.requests]
    assert {r.provider for r in reqs} == {"counting-local"}
    tally = tmp_path / "tally"
    tally.mkdir()
    store = Store.open(tmp_path / "db")
    done = ingest(store, reqs, {**scene_config, "tally": str(tally)}, progress=False,
                  executor=RayExecutor(partition_size=8))
    assert done.failed == 0, done.failures[:2]
    assert done.computed == len(reqs) and sorted(os.listdir(tally)) == sorted(r.key for r in reqs)


def test_on_batch_reports_each_finished_partition(tmp_path, ray_session, spectral_plan, scene_config):
    from rsembed_store.ingest.engine import Engine

    reqs = spectral_plan.requests[:20]
    counts = []
    engine = Engine(Store.open(tmp_path / "db"), scene_config)
    engine.run(reqs, progress=False, executor=RayExecutor(partition_size=10),
               on_batch=lambda s: counts.append(s.computed + s.failed))
    assert counts[-1] == 20 and counts == sorted(counts) and len(counts) == len(partition(reqs, 10))


def test_failures_are_reported_per_request_like_the_local_executor(tmp_path, ray_session, spectral_plan,
                                                                   scene_config):
    good = spectral_plan.requests[:4]
    far = resolve(Request("spectral", H3Cell("8928308280fffff"), TemporalSpec.year(2023)))  # San Francisco
    empty = resolve(Request("spectral", good[0].spatial, TemporalSpec.range("2019-01-01", "2019-02-01")))
    reqs = good + [far, empty]
    local = ingest(Store.open(tmp_path / "local"), reqs, scene_config, progress=False)
    store = Store.open(tmp_path / "ray")
    got = ingest(store, reqs, scene_config, progress=False, executor=RayExecutor(partition_size=2))
    assert (got.computed, got.failed) == (local.computed, local.failed) == (4, 2)
    reasons = {f.key: (f.error, f.reason) for f in got.failures}
    assert reasons == {f.key: (f.error, f.reason) for f in local.failures}
    assert reasons[far.key][0] == "NoImageryError" and "2019-01-01" in reasons[empty.key][1]
    assert store.contains_many([far.key, empty.key, good[0].key], space=good[0].space) == [False, False, True]


# ------------------------------------------------------------------ reruns and lost workers

def test_a_rerun_after_a_partial_run_computes_only_the_rest(tmp_path, ray_session, spectral_plan, scene_config):
    reqs = spectral_plan.requests
    store = Store.open(tmp_path / "db")
    first = ingest(store, reqs[::3], scene_config, progress=False, executor=RayExecutor(partition_size=8))
    assert first.computed == len(reqs[::3])
    rest = ingest(store, reqs, scene_config, progress=False, executor=RayExecutor(partition_size=8))
    assert rest.cached == len(reqs[::3]) and rest.computed == len(reqs) - len(reqs[::3])
    assert rest.calls["fetch"] == rest.computed  # nothing already stored was fetched again
    assert store.count(spectral_plan.space) == len(reqs)


def test_a_lost_worker_is_retried_or_reported_and_a_rerun_fills_the_gap(tmp_path, ray_session, spectral_plan,
                                                                         scene_config):
    reqs = same_plan_for("spectral_dies_once", spectral_plan)
    space = reqs[0].space
    config = {**scene_config, "models": {"spectral_dies_once": {"marker": str(tmp_path / "died-1")}}}
    store = Store.open(tmp_path / "retried")
    retried = ingest(store, reqs, config, progress=False, executor=RayExecutor(partition_size=10, max_retries=1))
    assert os.path.exists(tmp_path / "died-1")  # a worker did die
    assert retried.failed == 0 and retried.computed + retried.cached == len(reqs)
    assert store.count(space) == len(reqs)
    assert_no_duplicate_key(store, space)

    config["models"]["spectral_dies_once"]["marker"] = str(tmp_path / "died-2")
    store = Store.open(tmp_path / "lost")
    lost = ingest(store, reqs, config, progress=False, executor=RayExecutor(partition_size=10, max_retries=0))
    assert 1 <= lost.failed <= 10 and lost.computed == len(reqs) - lost.failed
    assert all("lost after Ray's retries" in f.reason for f in lost.failures)
    rerun = ingest(store, reqs, config, progress=False, executor=RayExecutor(partition_size=10, max_retries=0))
    assert (rerun.cached, rerun.computed, rerun.failed) == (len(reqs) - lost.failed, lost.failed, 0)
    assert {r.key for r in reqs} == set(rows(store, space)[0])


def test_an_interrupted_run_keeps_finished_partitions(tmp_path, ray_session, spectral_plan, scene_config):
    from rsembed_store.ingest.engine import Engine

    reqs = spectral_plan.requests
    store = Store.open(tmp_path / "db")

    def stop(summary):  # Ctrl-C in the driver once the first partition is in
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Engine(store, scene_config).run(reqs, progress=False, on_batch=stop,
                                        executor=RayExecutor(partition_size=6, max_in_flight=2))
    kept = store.count(spectral_plan.space)
    assert 6 <= kept < len(reqs)
    rerun = ingest(store, reqs, scene_config, progress=False, executor=RayExecutor(partition_size=6))
    assert (rerun.cached, rerun.computed) == (kept, len(reqs) - kept)


# ------------------------------------------------------------------ concurrency

def test_two_concurrent_ray_ingests_of_overlapping_plans_store_each_key_once(tmp_path, ray_session, spectral_plan,
                                                                              scene_config):
    reqs = same_plan_for("spectral_gathering", spectral_plan)
    a, b = reqs[: 2 * len(reqs) // 3], reqs[len(reqs) // 3:]
    size = len(a) // 2 + 1
    tasks = len(partition(a, size)) + len(partition(b, size))
    (tmp_path / "room").mkdir()
    # one embed_batch per task (no flush by time, so a partition is computed in one chunk): it counts the tasks
    config = {**scene_config, "models": {"spectral_gathering": {"room": str(tmp_path / "room"), "expected": tasks}},
              "ingest": {"flush_seconds": float("inf")}}
    store = Store.open(tmp_path / "db")  # empty: the ingests also race to create the space
    results = {}

    def run(name, part):  # every task of both ingests runs at once: 2 CPUs shared out
        results[name] = ingest(Store.open(tmp_path / "db"), part, config, progress=False,
                               executor=RayExecutor(partition_size=size, cpus_per_task=2 / tasks))

    threads = [threading.Thread(target=run, args=(name, part)) for name, part in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=200)
    assert results["a"].failed == results["b"].failed == 0
    overlap = len({r.key for r in a} & {r.key for r in b})
    assert overlap > 0 and len(os.listdir(tmp_path / "room")) == tasks
    # each ingest computed (and wrote) its whole plan: the overlap was written twice at once
    assert (results["a"].computed, results["b"].computed) == (len(a), len(b))
    assert_no_duplicate_key(store, reqs[0].space)
    assert store.count(reqs[0].space) == len(reqs)


# ------------------------------------------------------------------ the command line

def test_cli_ingest_with_the_ray_executor(tmp_path, ray_session, small_scene, spectral_plan):
    out, manifest = small_scene
    w, s, e, n = manifest["bounds_lonlat"]
    argv = ["--db", str(tmp_path / "db"), "ingest", "-m", "spectral",
            "--bbox", f"{w + 0.003},{s + 0.003},{e - 0.003},{n - 0.003}", "--year", "2023",
            "--source", f"s2-l2a={out / 'scenes'}", "--executor", "ray", "--partition-size", "16", "--json"]
    res = CliRunner().invoke(main, argv, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)["summary"]
    assert summary["computed"] == len(spectral_plan.requests) and summary["failed"] == 0
    assert summary["calls"]["ray.partitions"] == len(partition(spectral_plan.requests, 16))
    assert ray.is_initialized()  # the CLI joined this session and left it running
    refused = CliRunner().invoke(main, argv[:-5] + ["--ray-num-cpus", "2"])
    assert refused.exit_code == 2 and "--ray-num-cpus apply to --executor ray only" in refused.output
