"""The local write path (rsembed_store.writes): a lock per space, appends of new keys, merges of
held ones; and the merge-insert path that object stores keep."""

from __future__ import annotations

import multiprocessing as mp
import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from rsembed_store import Embedding, PointBuffer, Request, Store, TemporalSpec, resolve
from rsembed_store import writes
from rsembed_store.errors import StoreError, VectorError
from toy import toy_embedding


def req(lon, lat, year=2022):
    return resolve(Request("toy", PointBuffer(lon, lat, 100), TemporalSpec.year(year)))


def emb(lon, lat, seed=0, year=2022):
    return Embedding(request=req(lon, lat, year), vector=np.random.default_rng(seed).standard_normal(8).astype(np.float32))


def keys_of(store):
    return store.to_arrow(req(0, 0).space, columns=["key"]).column("key")


def test_new_keys_are_appended_and_held_keys_replaced(store):
    store.put_many([emb(0, i * 0.01, seed=1) for i in range(20)])
    space = req(0, 0).space
    before = store.latest_version(space)
    res = store.put_many([emb(0, i * 0.01, seed=2) for i in range(10, 30)])  # 10 held, 10 new
    assert (res.inserted, res.updated) == (10, 10)
    keys = keys_of(store)
    assert len(keys) == len(pc.unique(keys)) == 30
    got = store.lookup_many([req(0, 0.15).key], space=space)[0]
    assert np.allclose(got.vector, emb(0, 0.15, seed=2).vector)  # replaced, not kept
    assert store.latest_version(space) > before


def test_updates_of_rows_the_key_index_does_not_cover_yet_replace_them(store):
    store.put_many([emb(0, 0, seed=1)])  # the first write builds the key index
    store.put_many([emb(1, i * 0.01, seed=1) for i in range(50)])  # outside the index
    store.put_many([emb(1, i * 0.01, seed=3) for i in range(50)])
    keys = keys_of(store)
    assert len(keys) == len(pc.unique(keys)) == 51
    assert np.allclose(store.lookup_many([req(1, 0.2).key])[0].vector, emb(1, 0.2, seed=3).vector)


def test_insert_only_writes_skip_held_keys(store):
    store.put_many([emb(0, i * 0.01, seed=1) for i in range(5)])
    space = req(0, 0).space
    from rsembed_store.space import embeddings_to_table

    rows = embeddings_to_table([emb(0, i * 0.01, seed=9) for i in range(3, 8)], 8, store.space_info(space).h3_res)
    assert store.write_rows(space, rows, update=False) == (3, 0)
    assert np.allclose(store.lookup_many([req(0, 0.03).key])[0].vector, emb(0, 0.03, seed=1).vector)
    assert len(keys_of(store)) == 8


def test_a_bad_vector_refuses_the_call_and_writes_nothing(store):
    store.put_many([emb(0, 0)])
    space = req(0, 0).space
    before = store.latest_version(space)
    bad = emb(0, 1)
    bad.vector[3] = np.nan
    with pytest.raises(VectorError):
        store.put_many([emb(0, 2), bad])
    assert store.latest_version(space) == before and len(keys_of(store)) == 1


def test_the_lock_is_released_after_an_error(store, monkeypatch):
    store.put_many([emb(0, 0)])
    space = req(0, 0).space

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(writes, "append_or_merge", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        store.put_many([emb(0, 1)])
    monkeypatch.undo()
    done = threading.Event()  # another handle, on another thread, as another process would
    threading.Thread(target=lambda: (Store.open(store.uri).put_many([emb(0, 2)]), done.set()), daemon=True).start()
    assert done.wait(60), "the write lock was not released"
    store.put_many([emb(0, 3)])
    assert len(keys_of(store)) == 3
    assert not store._locks.held()  # nothing left marked as held by this thread
    assert store.count(space) == 3


def test_the_lock_excludes_another_thread_until_released(tmp_path):
    root, order = str(tmp_path), []

    def other():
        with writes.space_lock(root, "s"):
            order.append("other")

    with writes.space_lock(root, "s"):
        t = threading.Thread(target=other)
        t.start()
        t.join(0.3)
        assert t.is_alive() and not order  # waits while the lock is held
        order.append("first")
    t.join(10)
    assert order == ["first", "other"]


def test_a_space_name_that_cannot_name_a_file_is_refused(tmp_path):
    with pytest.raises(StoreError, match="cannot name a lock file"):
        writes.lock_path(str(tmp_path), "../evil")


def test_object_stores_merge_insert_every_row(store, monkeypatch):
    """With the lock off (as on s3://, gs://, az://) no lock is taken and every row is merge-inserted."""
    store.put_many([emb(0, 0, seed=1)])
    monkeypatch.setattr(store, "_locks", None)
    calls = []
    real = writes.merge
    monkeypatch.setattr(writes, "space_lock", lambda *a, **k: pytest.fail("an object store took a local lock"))
    monkeypatch.setattr(writes, "merge", lambda *a, **k: calls.append(k) or real(*a, **k))
    res = store.put_many([emb(0, 0, seed=2), emb(0, 1, seed=2)])
    assert (res.inserted, res.updated) == (1, 1) and calls == [{"use_index": False}]
    assert len(keys_of(store)) == 2


def test_uris_with_a_scheme_have_no_local_lock(tmp_path):
    from rsembed_store.storage import Storage

    assert Storage(None, "s3://bucket/prefix", None, 9)._locks is None
    assert Storage(None, "memory://x", None, 9)._locks is None
    assert Storage(None, str(tmp_path), None, 9)._locks.root == str(tmp_path)


def test_key_prefixes_never_miss_a_held_key(store):
    """The per-process prefix set follows appends, updates (rewritten fragments) and another handle's writes."""
    space = req(0, 0).space
    store.put_many([emb(0, i * 0.01) for i in range(30)])
    other = Store.open(store.uri)
    other.put_many([emb(2, i * 0.01) for i in range(30)])  # rows this handle never wrote
    other.put_many([emb(0, i * 0.01, seed=5) for i in range(10)])  # updates: rewritten rows
    kp = writes.KeyPrefixes()
    kp.catch_up(store.dataset(space))
    held = keys_of(store).combine_chunks()
    assert kp.may_hold(held).all()
    fresh = pa.array([req(5, i * 0.01).key for i in range(50)])
    assert not kp.may_hold(fresh).any()
    res = store.put_many([emb(2, i * 0.01, seed=7) for i in range(30)] + [emb(5, 0)])
    assert (res.inserted, res.updated) == (1, 30)
    assert len(keys_of(store)) == len(pc.unique(keys_of(store))) == 61


@pytest.mark.slow
@pytest.mark.parametrize("workers", [6])
def test_processes_putting_overlapping_new_keys_never_store_one_twice(tmp_path, workers):
    import workers as w

    uri = str(tmp_path / "db")
    Store.open(uri).put_many([toy_embedding(req(-50, -50))])  # the space exists before the race
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(workers)
    procs = [ctx.Process(target=w.overlapping_writer, args=(uri, i, barrier)) for i in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * workers
    store = Store.open(uri)
    keys = keys_of(store)
    assert len(keys) == len(pc.unique(keys)), "a key was stored twice"
    assert len(keys) == 1 + 3 * 60 + workers * 3 * 20  # every row present
    (counts,) = store.sql("SELECT count(*) AS n, count(DISTINCT key) AS d FROM embeddings").to_pylist()
    assert counts["n"] == counts["d"] == len(keys)


@pytest.mark.parametrize("prefixes_after", [1, 1000])
def test_held_keys_are_found_after_a_compaction_and_another_writer(store, monkeypatch, prefixes_after):
    """Compaction rewrites every fragment and another handle appends meanwhile: this handle (from its
    key prefixes, or from Lance) still finds every held key, so writing them again replaces them."""
    monkeypatch.setattr(writes, "PREFIXES_AFTER", prefixes_after)
    space = req(0, 0).space
    for b in range(4):
        store.put_many([emb(b, i * 0.01, seed=1) for i in range(10)])  # fragments this handle read
    other = Store.open(store.uri)
    other.put_many([emb(9, i * 0.01, seed=1) for i in range(10)])
    store.dataset(space).optimize.compact_files()
    other.put_many([emb(8, i * 0.01, seed=1) for i in range(10)])
    again = [emb(b, i * 0.01, seed=4) for b in (0, 3, 8, 9) for i in range(10)]
    res = store.put_many(again + [emb(7, 0, seed=4)])
    assert (res.inserted, res.updated) == (1, 40)
    keys = keys_of(store)
    assert len(keys) == len(pc.unique(keys)) == 61
    assert np.allclose(store.lookup_many([req(8, 0.05).key])[0].vector, emb(8, 0.05, seed=4).vector)


def test_a_process_asks_lance_until_it_keeps_key_prefixes(store, monkeypatch):
    asked = []
    real = writes.held_keys
    monkeypatch.setattr(writes, "held_keys", lambda ds, keys: asked.append(len(keys)) or real(ds, keys))
    monkeypatch.setattr(writes, "PREFIXES_AFTER", 2)
    store.put_many([emb(0, i * 0.01, seed=1) for i in range(20)])
    store.put_many([emb(0, i * 0.01, seed=2) for i in range(10, 30)])
    assert asked == [20, 20]  # every key, of Lance
    store.put_many([emb(0, i * 0.01, seed=3) for i in range(25, 40)])  # 5 held, 10 new
    assert asked == [20, 20, 5]  # only the prefix hits
    assert len(keys_of(store)) == len(pc.unique(keys_of(store))) == 40


def test_a_killed_holder_leaves_the_lock_free(tmp_path):
    import workers as w

    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    p = ctx.Process(target=w.hold_space_lock, args=(str(tmp_path), "s", ready))
    p.start()
    try:
        assert ready.wait(60)
        taken = threading.Event()

        def take():
            with writes.space_lock(str(tmp_path), "s"):
                taken.set()

        threading.Thread(target=take, daemon=True).start()
        assert not taken.wait(0.5)  # held by the other process
        p.kill()
        assert taken.wait(30), "the lock of a killed process was not released"
    finally:
        p.kill()
        p.join(10)


def test_a_serving_tier_in_memory_seeds_the_first_writes_key_prefixes(tmp_path):
    """A process that already holds the space's tier knows its keys: its first write appends without
    asking Lance about every key, and still never stores a key twice (nor misses an update)."""
    import numpy as np

    from rsembed_store import Embedding, PointBuffer, Request, Store, TemporalSpec, resolve

    store = Store.open(str(tmp_path / "db"))

    def emb(i, value=0.1):
        r = resolve(Request("spectral", PointBuffer(10 + i * 1e-3, 45.0, 50), TemporalSpec.year(2020)))
        return Embedding(request=r, vector=np.full(44, value + i * 1e-4, np.float32))

    store.put_many([emb(i) for i in range(300)])
    space = emb(0).space
    assert store.serving.view(space) is not None  # the tier is in memory now
    assert store._locks._prefixes.get(space) is None
    res = store.put_many([emb(i, 0.5) for i in range(250, 400)])  # 50 held (updates), 100 new
    assert (res.inserted, res.updated) == (100, 50)
    assert store._locks._prefixes.get(space) is not None  # seeded on the first write, not the ninth
    assert store.count(space) == 400
    n = store.sql(f'SELECT count(*) AS n, count(DISTINCT key) AS d FROM "{space}"').to_pylist()[0]
    assert n["n"] == n["d"] == 400
    got = store.lookup_many([emb(260).key], space=space)[0]
    assert abs(float(got.vector[0]) - (0.5 + 260e-4)) < 1e-6
