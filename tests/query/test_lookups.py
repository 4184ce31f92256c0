"""Batch look-ups through the serving tier: the same Embeddings as the Lance path, field by field.

The tier builds its answers from columns in memory (keys found by a search over
8-byte prefixes, Embeddings made with positional arguments, requests made
without a call per row), so these tests compare every field with what Lance's
reader builds, and pin the corner cases the fast paths take: keys sharing a
prefix, rows in the delta, grids, keys asked twice, and bad keys in a batch.
"""

import dataclasses
import os
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

import toy  # noqa: F401  (registers the toy model)
from rsembed_store import Embedding, H3Cell, OutputSpec, PointBuffer, Request, Store, TemporalSpec, resolve
from rsembed_store.errors import SpecError
from rsembed_store.keys import check_key, check_keys
from rsembed_store.query.serving.rows import find_keys, key_bytes, key_prefixes

SPACE = "toy__toy-v1"
N = 600


def _open(path, **config):
    return Store.open(path, config={"serving": {"background": False, "graph_min_rows": 200, **config}})


def _pooled(n, seed=0):
    rng = np.random.default_rng(seed)
    lon, lat = rng.uniform(11, 12, n), rng.uniform(46, 47, n)
    reqs = [resolve(Request("toy", PointBuffer(float(lon[i]), float(lat[i]), 100), TemporalSpec.year(2020 + i % 3)))
            for i in range(n)]
    return reqs, rng.standard_normal((n, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A space with a graph tier, a delta written after it (one row replaced, one removed), grid rows
    and rows with meta, two write times and compute costs; and the same store on the Lance path."""
    path = tmp_path_factory.mktemp("lookups") / "db"
    reqs, X = _pooled(N)
    early = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=timezone.utc)
    first = [Embedding(request=r, vector=x, meta={"tile": i} if i % 4 == 0 else {}, compute_s=0.25 * (i % 5),
                       created_at=early + timedelta(seconds=i % 2))
             for i, (r, x) in enumerate(zip(reqs[:500], X[:500]))]
    rng = np.random.default_rng(1)
    grids = []
    for i, cell in enumerate(["8928308280fffff", "8928308283bffff", "89283082877ffff"]):
        g = resolve(Request("toy", H3Cell(cell), TemporalSpec.year(2021), output=OutputSpec.grid()))
        grid = rng.standard_normal((8, 3, 4)).astype(np.float32)
        grid[0, 0, i] = np.nan
        grids.append(Embedding.from_grid(g, grid, meta={"grid": i}))
    store = _open(path)
    store.put_many(first + grids[:2])
    assert store.lookup_many([reqs[0].key], space=SPACE)[0] is not None  # the tier holds these rows now
    assert store.serving.describe(SPACE)["kind"] == "hnsw"
    later = [Embedding(request=r, vector=x, meta={"late": True}) for r, x in zip(reqs[500:], X[500:])]
    store.put_many(later + [grids[2], Embedding(request=reqs[3], vector=-X[3])])  # row 3 replaced
    store.table(SPACE).delete(f"key = '{reqs[4].key}'")  # row 4 removed
    store.lookup_many([reqs[0].key], space=SPACE)  # reads the delta
    described = store.serving.describe(SPACE)
    assert described["path"] == "serving" and described["delta_rows"] == N - 500 + 2
    return store, _open(path, enabled=False), reqs, grids


def _same(got: Embedding, want: Embedding) -> None:
    """Every dataclass field of ``got`` equals ``want``'s (arrays by value and dtype)."""
    assert type(got) is Embedding
    for f in dataclasses.fields(Embedding):
        a, b = getattr(got, f.name), getattr(want, f.name)
        if f.name in ("vector", "grid"):
            assert (a is None) == (b is None), f.name
            if a is not None:
                assert a.dtype == b.dtype and a.shape == b.shape, f.name
                np.testing.assert_array_equal(a, b, err_msg=f.name)
        elif f.name == "request":
            assert (a.key, a.model, a.revision, a.canonical) == (b.key, b.model, b.revision, b.canonical)
            assert a == b and a.spatial == b.spatial and a.temporal == b.temporal and a.output == b.output
        else:
            assert a == b and type(a) is type(b), (f.name, a, b)
    assert set(vars(got)) >= {f.name for f in dataclasses.fields(Embedding)}


def test_a_batch_through_the_tier_equals_the_lance_path_field_by_field(stores):
    store, lance, reqs, grids = stores
    misses = [resolve(Request("toy", PointBuffer(1.0 + i / 100, 2.0, 100), TemporalSpec.year(2021))).key
              for i in range(40)]
    keys = [r.key for r in reqs] + [g.key for g in grids] + misses
    order = np.random.default_rng(2).permutation(len(keys))
    keys = [keys[i] for i in order]
    got, want = store.lookup_many(keys, space=SPACE), lance.lookup_many(keys, space=SPACE)
    assert [g and g.key for g in got] == [w and w.key for w in want]
    assert sum(g is not None for g in got) == N - 1 + len(grids)  # row 4 was removed
    for g, w in zip(got, want):
        if w is not None:
            _same(g, w)
    by_key = {g.key: g for g in got if g is not None}
    np.testing.assert_array_equal(by_key[reqs[3].key].vector, lance.lookup_many([reqs[3].key], space=SPACE)[0].vector)
    assert by_key[reqs[0].key].meta == {"tile": 0} and by_key[reqs[1].key].compute_s == 0.25
    assert by_key[reqs[1].key].created_at == datetime(2024, 5, 1, 12, 30, 16, 123456, tzinfo=timezone.utc)
    assert by_key[grids[0].key].grid is not None and by_key[grids[2].key].grid is not None  # tier and delta
    assert all(e.cached for e in by_key.values())


def test_each_looked_up_vector_is_its_own_writable_copy(stores):
    store, lance, reqs, _ = stores
    keys = [reqs[i].key for i in (10, 11, 12)]
    a = store.lookup_many(keys, space=SPACE)
    before = [e.vector.copy() for e in a]
    a[0].vector[:] = 0.0  # a caller may scale or overwrite what it got
    assert np.array_equal(a[1].vector, before[1])
    again = store.lookup_many(keys, space=SPACE)
    for e, v in zip(again, before):
        np.testing.assert_array_equal(e.vector, v)
    a[1].meta["mine"] = 1
    assert "mine" not in store.lookup_many([keys[1]], space=SPACE)[0].meta


def test_a_key_asked_twice_gets_one_embedding_in_both_places(stores):
    store, _, reqs, _ = stores
    miss = "f" * 64
    keys = [reqs[7].key, miss, reqs[8].key, reqs[7].key, miss]
    got = store.lookup_many(keys, space=SPACE)
    assert [g and g.key for g in got] == [reqs[7].key, None, reqs[8].key, reqs[7].key, None]
    assert got[0] is got[3]
    assert store.lookup_many(keys)[0].key == reqs[7].key  # no space named: every space is asked
    assert store.contains_many(keys, space=SPACE) == [True, False, True, True, False]


def test_a_batch_with_one_bad_key_names_it_and_reads_nothing(stores):
    store, _, reqs, _ = stores
    good = [r.key for r in reqs[:5]]
    for bad in ("AB" * 32, "ab" * 31 + "a ", "ab" * 31, 12, "é" * 64, "ab" * 32 + "\n"):
        with pytest.raises(SpecError, match="is not a content key") as err:
            store.lookup_many(good + [bad], space=SPACE)
        assert repr(bad) in str(err.value)
    # a short key next to a long one: their joined length is right, each key's is not
    with pytest.raises(SpecError, match=repr("ab" * 31 + "a")):
        check_keys(["ab" * 31 + "a", "ab" * 32 + "a"])


def test_check_keys_agrees_with_check_key_on_each_key():
    rng = np.random.default_rng(3)
    good = [os.urandom(32).hex() for _ in range(50)]
    assert check_keys(good) == good and check_keys(iter(good)) == good and check_keys([]) == []
    alphabet = list("0123456789abcdefABG x")
    for _ in range(300):
        key = "".join(rng.choice(alphabet, size=int(rng.integers(62, 67))))
        try:
            check_key(key)
            ok = True
        except SpecError:
            ok = False
        if ok:
            assert check_keys(good[:3] + [key]) == good[:3] + [key]
        else:
            with pytest.raises(SpecError, match="is not a content key"):
                check_keys(good[:3] + [key])


def test_keys_that_share_their_first_eight_bytes_are_all_found():
    """The key search runs on 8-byte prefixes; keys agreeing in those must still be told apart."""
    rng = np.random.default_rng(4)
    prefix = os.urandom(8)
    shared = [(prefix + os.urandom(24)).hex() for _ in range(6)]
    shared.append((prefix + b"\x00" * 24).hex())  # the smallest of its prefix, ending in zero bytes
    others = [os.urandom(32).hex() for _ in range(200)]
    stored = shared + others
    perm = rng.permutation(len(stored))
    keys = key_bytes([stored[i] for i in perm])  # row i holds stored[perm[i]]
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    prefixes = key_prefixes(sorted_keys)
    assert np.all(np.diff(prefixes.astype(np.float64)) >= 0)  # sorted keys have sorted prefixes
    row_of = {stored[p]: i for i, p in enumerate(perm)}
    absent = [(prefix + os.urandom(24)).hex() for _ in range(5)] + [os.urandom(32).hex() for _ in range(5)]
    asked = stored + absent
    got = find_keys(sorted_keys, prefixes, order, key_bytes(asked))
    assert got.tolist() == [row_of[k] for k in stored] + [-1] * len(absent)
    assert find_keys(sorted_keys[:0], prefixes[:0], order[:0], key_bytes(asked)).tolist() == [-1] * len(asked)
    assert find_keys(sorted_keys, prefixes, order, key_bytes([])).tolist() == []


def test_the_tier_and_its_delta_find_keys_that_share_a_prefix(tmp_path, monkeypatch):
    """End to end: keys that share their prefix, some in the tier and some in the delta."""
    import rsembed_store.query.serving.rows as rows_mod

    real = rows_mod.key_prefixes
    # prefixes of one byte (still in key order): ~400 keys share 256 prefixes
    monkeypatch.setattr(rows_mod, "key_prefixes", lambda k: real(k) >> np.uint64(56))
    import rsembed_store.query.serving.delta as delta_mod
    import rsembed_store.query.serving.tier as tier_mod

    monkeypatch.setattr(tier_mod, "key_prefixes", rows_mod.key_prefixes)
    monkeypatch.setattr(delta_mod, "key_prefixes", rows_mod.key_prefixes)
    reqs, X = _pooled(400, seed=5)
    store = _open(tmp_path / "db")
    store.put_many([Embedding(request=r, vector=x) for r, x in zip(reqs[:300], X[:300])])
    assert store.lookup_many([reqs[0].key], space=SPACE)[0] is not None
    store.put_many([Embedding(request=r, vector=x) for r, x in zip(reqs[300:], X[300:])])
    misses = [os.urandom(32).hex() for _ in range(50)]
    got = store.lookup_many([r.key for r in reqs] + misses, space=SPACE)
    assert store.serving.describe(SPACE)["delta_rows"] == 100
    assert [g and g.key for g in got] == [r.key for r in reqs] + [None] * 50
    for g, x in zip(got, X):
        np.testing.assert_array_equal(g.vector, x)


def test_batch_lookups_from_many_threads_agree(stores):
    """The key index, the delta's index and the row builders hold no per-call state: threads sharing one
    view get the same answers as one thread alone."""
    from concurrent.futures import ThreadPoolExecutor

    store, _, reqs, grids = stores
    keys = [r.key for r in reqs] + [g.key for g in grids] + ["e" * 64]
    want = [(e.key, e.vector.tobytes(), e.created_at) if e else None for e in store.lookup_many(keys, space=SPACE)]

    def one(seed):
        order = np.random.default_rng(seed).permutation(len(keys))
        got = store.lookup_many([keys[i] for i in order], space=SPACE)
        return all(((e.key, e.vector.tobytes(), e.created_at) if e else None) == want[i] for e, i in zip(got, order))

    with ThreadPoolExecutor(max_workers=6) as pool:
        assert all(pool.map(one, range(24)))
