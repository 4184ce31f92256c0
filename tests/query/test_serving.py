"""The serving tier: answers from memory that equal Lance's, in step with every writer.

Small seeded spaces (a few thousand rows) with a low ``graph_min_rows`` so the
HNSW graph is really used; exact answers come from numpy over the same rows.
"""

import multiprocessing as mp
import os
import threading
from collections import Counter

import numpy as np
import pyarrow.compute as pc
import pytest

import toy  # noqa: F401  (registers the toy model)
import workers
from rsembed_store import BBox, Embedding, PointBuffer, Request, Store, TemporalSpec, resolve
from rsembed_store.query.serving.rows import key_bytes

SPACE = "toy__toy-v1"
N = 3000
YEARS = (2020, 2021, 2022)


def _clustered(n, seed=0):
    """Vectors in 40 clusters (as real embeddings are), places on a 1 x 1 degree square, three years."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, 8))
    labels = rng.integers(40, size=n)
    X = (centres[labels] + 0.35 * rng.standard_normal((n, 8))).astype(np.float32)
    lon, lat = rng.uniform(11, 12, n), rng.uniform(46, 47, n)
    years = np.asarray(YEARS)[np.arange(n) % 3]
    reqs = [resolve(Request("toy", PointBuffer(float(lon[i]), float(lat[i]), 100), TemporalSpec.year(int(years[i]))))
            for i in range(n)]
    return reqs, X, lon, lat, years


def _open(path, **serving):
    return Store.open(path, config={"serving": {"background": False, "graph_min_rows": 500, **serving}})


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    path = tmp_path_factory.mktemp("serving") / "db"
    reqs, X, lon, lat, years = _clustered(N)
    store = _open(path)
    store.put_many([Embedding(request=r, vector=x) for r, x in zip(reqs, X)])
    return path, reqs, X, lon, lat, years


def exact(X, q, mask=None, k=10):
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    d = 1 - Xn @ (q / np.linalg.norm(q))
    if mask is not None:
        d = np.where(mask, d, np.inf)
    order = np.argsort(d, kind="stable")[:k]
    return [int(i) for i in order if np.isfinite(d[i])]


def recall(got_keys, want_rows, reqs):
    want = {reqs[i].key for i in want_rows}
    return len(want & set(got_keys)) / max(1, len(want))


def test_the_graph_tier_finds_the_true_neighbours(space):
    path, reqs, X, *_ = space
    store = _open(path)
    rng = np.random.default_rng(1)
    Q = X[rng.choice(N, 50, replace=False)] + 0.1 * rng.standard_normal((50, 8)).astype(np.float32)
    scores = []
    for q in Q:
        res = store.search("toy", q, k=10)
        assert res.plan["path"] == "serving" and res.plan["index"] == "hnsw"
        scores.append(recall(res.keys, exact(X, q), reqs))
    assert np.mean(scores) >= 0.95
    info = store.serving.describe(SPACE)
    assert info["kind"] == "hnsw" and info["rows"] == N and info["measured"]["recall_at_10"] >= 0.95


@pytest.mark.parametrize("share", [0.001, 0.01, 0.05, 0.2, 0.5])
def test_filtered_search_keeps_its_recall_at_every_selectivity(space, share):
    path, reqs, X, lon, lat, years = space
    store = _open(path)
    # a box that keeps about `share` of the 2021 rows' places
    width = np.sqrt(share * 3) if share < 0.3 else 1.0
    box = BBox(11.0, 46.0, 11.0 + min(width, 1.0), 46.0 + min(share * 3 / min(width, 1.0), 1.0))
    mask = (years == 2021) & (lon >= box.minlon) & (lon <= box.maxlon) & (lat >= box.minlat) & (lat <= box.maxlat)
    assert mask.sum() >= 1
    rng = np.random.default_rng(2)
    scores = []
    for q in X[rng.choice(N, 20, replace=False)]:
        res = store.search("toy", q, k=10, temporal=TemporalSpec.year(2021), within=box, exclude_self=False)
        want = exact(X, q, mask)
        assert len(res) == len(want)
        assert all(r["year"] == 2021 and box.minlon <= r["lon"] <= box.maxlon for r in res)
        scores.append(recall(res.keys, want, reqs))
    assert np.mean(scores) >= 0.95, (share, np.mean(scores))


def test_answers_equal_the_lance_paths(space):
    """The same searches and look-ups with the tier turned off give the same rows."""
    path, reqs, X, *_ = space
    tier, lance = _open(path, graph_min_rows=10**9), _open(path, enabled=False)  # exact on both sides
    for q in X[:10]:
        for kw in ({}, {"temporal": "2022"}, {"within": BBox(11.2, 46.2, 11.6, 46.7)}):
            a, b = tier.search("toy", q, k=7, **kw), lance.search("toy", q, k=7, **kw)
            assert a.plan["path"] == "serving" and b.plan.get("path") != "serving"
            assert a.keys == b.keys
            np.testing.assert_allclose([r["distance"] for r in a], [r["distance"] for r in b], atol=1e-5)
            assert a.to_dicts() == [dict(r, distance=ra["distance"]) for r, ra in zip(b.to_dicts(), a.to_dicts())]
    keys = [r.key for r in reqs[:20]] + ["0" * 64]
    got, want = tier.lookup_many(keys, space=SPACE), lance.lookup_many(keys, space=SPACE)
    assert [g and g.key for g in got] == [w and w.key for w in want]
    for g, w in zip(got[:20], want[:20]):
        assert np.array_equal(g.vector, w.vector) and g.request.canonical == w.request.canonical
        assert g.meta == w.meta and g.created_at == w.created_at and g.compute_s == w.compute_s


def test_a_write_by_another_process_is_seen_by_the_next_read(tmp_path):
    path = tmp_path / "db"
    reqs, X, *_ = _clustered(1000)
    store = _open(path)
    store.put_many([Embedding(request=r, vector=x) for r, x in zip(reqs, X)])
    assert store.lookup_many([reqs[0].key], space=SPACE)[0] is not None  # the tier is built now
    before = store.serving.describe(SPACE)["version"]
    ctx = mp.get_context("spawn")
    ready, stop, written = ctx.Event(), ctx.Event(), ctx.Value("i", 0)
    proc = ctx.Process(target=workers.steady_writer, args=(str(path), 0, 20, ready, stop, written))
    proc.start()
    proc.join(120)
    assert proc.exitcode == 0 and written.value == 20
    new = resolve(Request("toy", PointBuffer(20.0, 10.0, 100), TemporalSpec.year(2021)))  # its first row
    got = store.lookup_many([new.key], space=SPACE)[0]
    assert got is not None and got.key == new.key
    hits = store.search("toy", got.vector, k=1, exclude_self=False)
    assert hits.keys == [new.key] and hits.plan["delta_rows"] == 20 and hits.plan["tier_version"] == before


def test_replaced_and_removed_rows_never_come_back(tmp_path):
    path = tmp_path / "db"
    reqs, X, *_ = _clustered(1000)
    store = _open(path)
    store.put_many([Embedding(request=r, vector=x) for r, x in zip(reqs, X)])
    store.search("toy", X[0], k=1)  # the tier holds the first answers
    moved = -X[5]
    store.put_many([Embedding(request=reqs[5], vector=moved)])  # an upsert replaces row 5
    store.table(SPACE).delete(f"key = '{reqs[7].key}'")  # another path removes row 7
    assert np.array_equal(store.lookup_many([reqs[5].key], space=SPACE)[0].vector, moved)
    assert store.lookup_many([reqs[7].key], space=SPACE)[0] is None
    assert store.contains_many([reqs[5].key, reqs[7].key], space=SPACE) == [True, False]
    old = store.search("toy", X[5], k=1000, exclude_self=False)
    assert reqs[7].key not in old.keys and old.keys.count(reqs[5].key) == 1
    assert store.search("toy", moved, k=1, exclude_self=False).keys == [reqs[5].key]
    assert reqs[7].key not in store.search("toy", X[7], k=50, exclude_self=False).keys
    described = store.serving.describe(SPACE)
    assert described["delta_rows"] == 1 and described["removed_rows"] == 2


def test_a_saved_tier_is_reused_after_a_restart_and_rebuilt_when_it_lies(space, tmp_path):
    import shutil

    path, reqs, X, *_ = space
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    first = _open(copy)
    first.serving.build(SPACE)
    res = first.search("toy", X[3], k=5)
    again = _open(copy)  # a restarted process
    assert again.search("toy", X[3], k=5).keys == res.keys
    assert again.serving.describe(SPACE)["source"] == "loaded"
    saved = copy / "_serving" / SPACE
    (version_dir,) = os.listdir(saved)
    keys = np.load(saved / version_dir / "keys.npy")
    keys[[0, 1]] = keys[[1, 0]]  # two keys swapped: the sizes still agree, the checksum does not
    np.save(saved / version_dir / "keys.npy", keys)
    third = _open(copy)
    assert third.search("toy", X[3], k=5).keys == res.keys
    assert third.serving.describe(SPACE)["source"] == "built"
    with open(saved / os.listdir(saved)[0] / "graph.faiss", "r+b") as f:
        f.truncate(100)
    fourth = _open(copy)
    assert fourth.search("toy", X[3], k=5).keys == res.keys and fourth.serving.describe(SPACE)["source"] == "built"


def test_a_space_over_the_memory_budget_is_served_by_lance_with_the_same_answers(space):
    path, reqs, X, *_ = space
    small, big = _open(path, memory_mb=0.01), _open(path, graph_min_rows=10**9)
    for q in X[:5]:
        a, b = small.search("toy", q, k=5), big.search("toy", q, k=5)
        assert a.plan.get("path") != "serving" and b.plan["path"] == "serving"
        assert a.keys == b.keys
    assert small.serving.describe(SPACE)["path"] == "lance"
    assert "memory budget" in small.serving.describe(SPACE)["reason"]


def test_keys_ending_in_zero_bytes_survive(tmp_path):
    """numpy's bytes scalars drop trailing zero bytes; the tier must not."""
    reqs, X, *_ = _clustered(3000)
    raw = key_bytes([r.key for r in reqs])
    ends_in_zero = [i for i, k in enumerate(reqs) if k.key.endswith("00")]
    assert ends_in_zero, "the seeded set should hold a key ending in 00"
    store = _open(tmp_path / "db")
    store.put_many([Embedding(request=r, vector=x) for r, x in zip(reqs, X)])
    i = ends_in_zero[0]
    assert store.lookup_many([reqs[i].key], space=SPACE)[0].key == reqs[i].key
    assert store.search("toy", X[i], k=1, exclude_self=False).keys == [reqs[i].key]
    assert len(raw) == len(reqs)


def test_search_many_equals_one_search_per_query(space):
    path, reqs, X, *_ = space
    store = _open(path)
    Q = X[:30] + 0.01
    many = store.search_many("toy", Q, k=5)
    assert len(many) == 30
    for q, res in zip(Q, many):
        one = store.search("toy", q, k=5, exclude_self=False)
        assert res.keys == one.keys
    filtered = store.search_many("toy", Q[:5], k=5, temporal="2021")
    assert all(r["year"] == 2021 for res in filtered for r in res)
    from rsembed_store.errors import VectorError

    with pytest.raises(VectorError, match=r"shape \(n, 8\)"):
        store.search_many("toy", np.ones((2, 3)), k=5)
    with pytest.raises(VectorError, match=r"vectors\[1\]"):
        store.search_many("toy", [[1.0] * 8, [float("nan")] * 8], k=5)
    # checked in one pass over the batch: the first bad row is named, and why
    with pytest.raises(VectorError, match=r"vectors\[2\].*float32 range"):
        store.search_many("toy", [[1.0] * 8, [2.0] * 8, [1e39] * 8, [float("inf")] * 8], k=5)
    with pytest.raises(VectorError, match=r"vectors\[1\] is all zeros"):
        store.search_many("toy", [[1.0] * 8, [0.0] * 8], k=5)


def test_graph_tier_from_many_threads(space):
    path, reqs, X, *_ = space
    store = _open(path)
    errors, done = Counter(), Counter()

    def work(t):
        for i in range(40):
            try:
                q = X[(t * 40 + i) % N]
                if i % 2:
                    assert store.search("toy", q, k=5, exclude_self=False).keys[0] == reqs[(t * 40 + i) % N].key
                else:
                    assert store.lookup_many([reqs[i].key], space=SPACE)[0].key == reqs[i].key
                done["ok"] += 1
            except Exception as exc:
                errors[f"{type(exc).__name__}: {exc}"[:100]] += 1

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and done["ok"] == 320


def test_time_travel_reads_lance_as_of_a_version(space, tmp_path):
    path, reqs, X, *_ = space
    store = _open(tmp_path / "db")
    store.put_many([Embedding(request=reqs[0], vector=X[0])])
    v1 = store.dataset(SPACE).version
    store.put_many([Embedding(request=reqs[0], vector=-X[0])])
    assert np.array_equal(store.lookup_many([reqs[0].key], space=SPACE, version=v1)[0].vector, X[0])
    assert np.array_equal(store.lookup_many([reqs[0].key], space=SPACE)[0].vector, -X[0])
    assert store.to_arrow(SPACE, version=v1).filter(pc.equal(pc.field("key"), reqs[0].key)).num_rows == 1


def test_search_batch_over_http(space):
    import httpx

    from rsembed_store.query.service import create_app
    from scripts.load_service import served_in_thread

    path, reqs, X, *_ = space
    store = _open(path)
    with served_in_thread(create_app(store)) as base, httpx.Client(base_url=base) as http:
        res = http.post("/search/batch", json={"model": "toy", "vectors": X[:4].tolist(), "k": 3})
        assert res.status_code == 200, res.text
        got = res.json()["results"]
        assert [[r["key"] for r in one] for one in got] == [r.keys for r in store.search_many("toy", X[:4], k=3)]
        bad = http.post("/search/batch", json={"model": "toy", "vectors": [[1.0, 2.0]], "k": 3})
        assert bad.status_code == 422 and "shape (n, 8)" in bad.json()["error"]["message"]
        huge = http.post("/search/batch", json={"model": "toy", "vectors": [[1.0] * 8, [1e39] * 8], "k": 3})
        assert huge.status_code == 422 and "vectors[1]" in huge.json()["error"]["message"]


def test_a_looked_up_request_parses_on_demand_and_pickles_plainly(space):
    import pickle

    from rsembed_store.keys import ResolvedRequest, StoredRequest

    path, reqs, X, *_ = space
    emb = _open(path).lookup_many([reqs[4].key], space=SPACE)[0]
    parsed = ResolvedRequest.from_canonical(reqs[4].canonical)  # the stored (rounded) request
    assert emb.request.spatial == parsed.spatial and emb.request.temporal == parsed.temporal
    assert emb.request.frames is None and emb.request.canonical == reqs[4].canonical
    plain = StoredRequest(reqs[4].canonical, reqs[4].key, "toy", reqs[4].revision)  # what a Lance read gives
    assert emb.request == reqs[4] and emb.request == plain and hash(emb.request) == hash(plain)
    back = pickle.loads(pickle.dumps(emb))
    assert type(back.request) is StoredRequest and back.request == reqs[4]
    assert np.array_equal(back.vector, emb.vector)


def test_a_stream_of_small_writes_reads_only_the_new_fragments(tmp_path, monkeypatch):
    """Each new version's delta reuses what the last one read; the answers stay those of the latest version."""
    from rsembed_store.query.serving import delta as delta_mod

    reqs, X, *_ = _clustered(1200)
    store = _open(tmp_path / "db")
    store.put_many([Embedding(request=r, vector=x) for r, x in zip(reqs[:1000], X[:1000])])
    store.search("toy", X[0], k=1)  # the tier covers the first 1,000 rows
    read = []
    real = delta_mod.Rows.from_arrow
    monkeypatch.setattr(delta_mod.Rows, "from_arrow", lambda table, **kw: read.append(table.num_rows) or real(
        table, **kw))
    for i in range(1000, 1200, 20):  # ten writes of 20 new rows, a read after each
        store.put_many([Embedding(request=r, vector=x) for r, x in zip(reqs[i:i + 20], X[i:i + 20])])
        assert store.search("toy", X[i + 5], k=1, exclude_self=False).keys == [reqs[i + 5].key]
    assert read == [20] * 10  # never the earlier fragments again
    store.put_many([Embedding(request=reqs[1010], vector=-X[1010])])  # replaces a delta row
    assert np.array_equal(store.lookup_many([reqs[1010].key], space=SPACE)[0].vector, -X[1010])
    assert store.search("toy", X[1010], k=1200, exclude_self=False).keys.count(reqs[1010].key) == 1
    assert store.serving.describe(SPACE)["delta_rows"] == 200


@pytest.mark.parametrize("metric", ["l2", "dot"])
def test_spaces_of_other_metrics_are_served_with_lances_distances(tmp_path, metric):
    """A space declared l2 or dot: the tier (flat and graph) gives Lance's distances and order."""
    from rsembed_store.model import ModelInfo
    from rsembed_store.registry import register_model

    name = f"toy{metric}"

    class MetricToy(toy.ToyModel):
        info = ModelInfo(id=name, revision="m-v1", kind="on_the_fly", dim=8, metric=metric,
                         default_sensor=toy.ToyModel.info.default_sensor, input_size=32)

    register_model(name, MetricToy)
    rng = np.random.default_rng(3)
    reqs = [resolve(Request(name, PointBuffer(11 + i * 1e-3, 46.0, 100), TemporalSpec.year(2022)))
            for i in range(1500)]
    X = rng.standard_normal((1500, 8)).astype(np.float32)
    for graph_min_rows in (10**9, 500):
        store = Store.open(tmp_path / f"db{graph_min_rows}", config={"serving": {
            "background": False, "graph_min_rows": graph_min_rows}})
        store.put_many([Embedding(request=r, vector=x) for r, x in zip(reqs, X)])
        lance = Store.open(tmp_path / f"db{graph_min_rows}", config={"serving": {"enabled": False}})
        for q in X[:10] + 0.05:
            a, b = store.search(name, q, k=5, exclude_self=False), lance.search(name, q, k=5, exclude_self=False)
            assert a.plan["path"] == "serving"
            assert a.keys == b.keys
            np.testing.assert_allclose([r["distance"] for r in a], [r["distance"] for r in b], rtol=1e-4,
                                       atol=1e-4)


def test_a_box_found_through_the_sorted_runs_keeps_exactly_the_rows_the_full_test_keeps(space):
    from rsembed_store.query.serving.filters import Filters

    path, reqs, X, lon, lat, years = space
    tier = _open(path).serving.view(SPACE).tier
    rng = np.random.default_rng(9)
    for _ in range(200):
        w, e = np.sort(rng.uniform(10.9, 12.1, 2))
        s, n = np.sort(rng.uniform(45.9, 47.1, 2))
        if rng.random() < 0.2:  # edges exactly on stored values: both edges are inclusive
            i, j = rng.integers(N, size=2)
            w, e = sorted((tier.rows.lon[i], tier.rows.lon[j]))
            s, n = sorted((tier.rows.lat[i], tier.rows.lat[j]))
        f = Filters(box=(w, s, e, n), window=(18262, 18628) if rng.random() < 0.5 else None)
        fast = f.select(tier.rows, tier.space_order)
        assert np.all(np.diff(fast) > 0)
        assert np.array_equal(fast, np.flatnonzero(f.mask(tier.rows)))


def test_a_large_batch_is_spread_over_threads_with_the_same_answers(space):
    path, reqs, X, *_ = space
    store = _open(path)
    Q = X[:600] + 0.02  # more than one chunk of 256: searched on several threads
    many = store.search_many("toy", Q, k=3)
    assert [r.keys for r in many] == [store.search("toy", q, k=3, exclude_self=False).keys for q in Q]


def test_batch_results_hold_keys_at_once_and_build_the_same_rows_on_first_read(space):
    from concurrent.futures import ThreadPoolExecutor

    from rsembed_store.query.results import LazyRows

    path, reqs, X, *_ = space
    store = _open(path)
    Q = X[:40] + 0.01
    many = store.search_many("toy", Q, k=5)
    single = [store.search("toy", q, k=5, exclude_self=False) for q in Q]
    assert all(isinstance(r.rows, LazyRows) for r in many)
    assert [r.rows._rows for r in many] == [None] * len(many)  # nothing built yet
    assert [r.keys for r in many] == [s.keys for s in single]
    np.testing.assert_allclose([r.distances for r in many], [s.distances for s in single], rtol=1e-5, atol=1e-6)
    with ThreadPoolExecutor(4) as pool:  # first reads from several threads at once: built once, all equal
        rows = list(pool.map(lambda r: list(r.rows), many))
    assert rows == [s.rows for s in single]
    assert all(m.rows == s.rows for m, s in zip(many, single))
    assert many[3].to_arrow().equals(single[3].to_arrow())
    assert many[3].to_dict()["results"] == single[3].to_dict()["results"]
