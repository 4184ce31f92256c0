"""One Store object used from many threads at once, while another process writes.

Lance dataset handles are not safe to share between threads (a shared handle's
``checkout_latest`` raised "Already borrowed" in 248 of 320 concurrent
searches); the store hands every call its own handle. These tests fail on a
store that shares one.
"""

import multiprocessing as mp
import threading
from collections import Counter

import numpy as np
import pytest

import toy  # noqa: F401  (registers the toy model)
import workers
from rsembed_store import Embedding, PointBuffer, Request, Store, TemporalSpec, resolve
from rsembed_store.errors import SpecError

THREADS = 8
CALLS = 40


def _requests(n):
    return [resolve(Request("toy", PointBuffer(10 + i * 0.001, 46.0, 100), TemporalSpec.year(2022)))
            for i in range(n)]


@pytest.fixture
def filled(tmp_path):
    store = Store.open(tmp_path / "db")
    reqs = _requests(300)
    rng = np.random.default_rng(0)
    vectors = {r.key: rng.standard_normal(8).astype(np.float32) for r in reqs}
    store.put_many([Embedding(request=r, vector=vectors[r.key]) for r in reqs])
    return store, reqs, vectors


def _mixed_calls(store, reqs, vectors, thread: int, errors: Counter, done: Counter) -> None:
    """get / lookup / search / sql in turn; every answer is checked, not only the absence of exceptions."""
    for i in range(CALLS):
        op = ("search", "lookup", "get", "sql")[(i + thread) % 4]
        r = reqs[(i * 7 + thread) % len(reqs)]
        try:
            if op == "search":
                hits = store.search("toy", r.key, k=5, exclude_self=False)
                assert hits.keys[0] == r.key
            elif op == "lookup":
                got = store.lookup([r, reqs[0]])
                assert [g.key for g in got] == [r.key, reqs[0].key]
                assert np.array_equal(got[0].vector, vectors[r.key])
            elif op == "get":
                assert store.get(r, compute=False).key == r.key
            else:
                n = store.sql("SELECT count(*) AS n FROM embeddings").column("n")[0].as_py()
                assert n >= len(reqs)
            done[op] += 1
        except Exception as exc:  # counted, so one failure does not hide the others
            errors[f"{op}: {type(exc).__name__}: {str(exc)[:80]}"] += 1


def test_many_threads_read_one_store_while_another_process_writes(filled):
    store, reqs, vectors = filled
    ctx = mp.get_context("spawn")
    ready, stop, written = ctx.Event(), ctx.Event(), ctx.Value("i", 0)
    writer = ctx.Process(target=workers.steady_writer, args=(store.uri, 0, 2_000, ready, stop, written))
    writer.start()
    try:
        assert ready.wait(120), "the writer process did not start"
        errors, done = Counter(), Counter()
        threads = [threading.Thread(target=_mixed_calls, args=(store, reqs, vectors, t, errors, done))
                   for t in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        stop.set()
        writer.join(120)
    assert writer.exitcode == 0
    written = written.value
    assert not errors, dict(errors)
    assert sum(done.values()) == THREADS * CALLS
    assert written > 0
    # the other process's rows are visible to the next read, without reopening
    assert store.count("toy__toy-v1") == len(reqs) + written


def test_a_malformed_key_is_refused_not_a_miss(filled):
    store, reqs, _ = filled
    for bad in ("x", reqs[0].key.upper(), reqs[0].key[:-1], 42):
        with pytest.raises(SpecError, match="64 lower-case hex digits"):
            store.lookup_many([bad], space="toy__toy-v1")
    with pytest.raises(SpecError):
        store.lookup(["not-a-key"])


def test_the_service_answers_every_valid_request_from_8_clients_at_once(filled):
    """A real uvicorn server on loopback, 8 concurrent keep-alive clients: no non-2xx, no dropped connection."""
    pytest.importorskip("uvicorn")
    from rsembed_store.query.service import create_app
    from scripts.load_service import hammer, served_in_thread

    store, reqs, vectors = filled
    bodies = []
    for i, r in enumerate(reqs[:50]):
        like = {"key": r.key} if i % 2 else {"vector": [float(x) for x in vectors[r.key]]}
        bodies.append({"model": "toy", "like": like, "k": 5})

    def check(body, answer):
        assert len(answer["results"]) == 5
        if "vector" in body["like"]:  # the stored vector's own row comes first
            assert answer["results"][0]["distance"] == pytest.approx(0, abs=1e-5)

    with served_in_thread(create_app(store)) as base:
        fig = hammer(base, "/search", bodies, clients=8, total=320, check=check)
        lookups = [{"items": [r.key for r in reqs[i:i + 5]]} for i in range(0, 100, 5)]

        def all_found(body, answer):
            assert [r["key"] for r in answer["results"]] == body["items"]

        fig_lookup = hammer(base, "/embeddings/lookup", lookups, clients=8, total=160, check=all_found)
    assert fig["failed"] == 0, fig["failures"]
    assert fig_lookup["failed"] == 0, fig_lookup["failures"]


def test_serve_with_two_worker_processes_answers_every_valid_request(filled):
    """`serve --workers 2`: the workers build the app from the environment they inherit, and answer."""
    pytest.importorskip("uvicorn")
    from scripts.load_service import hammer, served_in_process

    store, reqs, vectors = filled
    bodies = [{"model": "toy", "like": {"key": r.key}, "k": 3} for r in reqs[:40]]
    with served_in_process(store.uri, workers=2) as base:
        fig = hammer(base, "/search", bodies, clients=4, total=120)
    assert fig["failed"] == 0, fig["failures"]
