"""Search by several examples and negatives, text refusal, and change between windows, in Python and HTTP.

Every answer is checked against a numpy brute force over the rows read back
from the store, so a wrong combination, a missed exclusion or a wrong distance fails.
"""

import asyncio

import h3
import httpx
import numpy as np
import pyarrow as pa
import pytest

from rsembed_store import Embedding, H3Cell, Request, Store, TemporalSpec, resolve
from rsembed_store.errors import LimitError, MissingExtraError, NotStoredError, SpecError, VectorError
from rsembed_store.query.examples import (
    BACKGROUND_ROWS,
    background_rows,
    centroid_vector,
    is_many,
    linear_vector,
    search_examples,
)
from tests.query.test_search import _make

N_ROWS = 500


@pytest.fixture(scope="module", params=["serving", "lance"])
def held(tmp_path_factory, request):
    config = {"serving": {"enabled": request.param == "serving", "background": False}}
    store = Store.open(tmp_path_factory.mktemp("examples") / "db", config=config)
    embs = _make(N_ROWS)
    store.put_many(embs)
    space = store.space_for("toy").space
    t = store.to_arrow(space, columns=["key", "vector"])
    keys = np.array(t.column("key").to_pylist())
    X = np.stack(t.column("vector").to_pylist()).astype(np.float64)
    return store, embs, keys, X


def brute(X, keys, q, k, metric, exclude=()):
    if metric == "cosine":
        d = 1 - (X @ q) / (np.linalg.norm(X, axis=1) * np.linalg.norm(q))
    else:  # dot
        d = 1 - X @ q
    order = sorted((float(d[i]), keys[i]) for i in range(len(keys)) if keys[i] not in set(exclude))
    return [key for _, key in order[:k]], [dist for dist, _ in order[:k]]


def test_is_many_tells_one_vector_from_several_examples():
    assert not is_many([0.1, 2, 3.0])
    assert not is_many(np.zeros(8))
    assert is_many(np.zeros((2, 8)))
    assert is_many(["a" * 64, "b" * 64])
    assert is_many([[0.0] * 8, [1.0] * 8])
    assert not is_many("a" * 64)


def test_centroid_of_keys_matches_brute_force_and_leaves_every_example_out(held):
    store, embs, keys, X = held
    examples = [embs[i].key for i in (3, 10, 42)]
    got = store.search("toy", examples, k=12, combine="centroid")
    P = np.stack([X[list(keys).index(e)] for e in examples])
    q = centroid_vector(P.astype(np.float32), None, "cosine").astype(np.float64)
    want, dist = brute(X, keys, q, 12, "cosine", exclude=examples)
    assert got.keys == want
    np.testing.assert_allclose([r["distance"] for r in got], dist, rtol=1e-4, atol=1e-5)
    assert not set(examples) & set(got.keys)
    assert got.plan["combine"] == "centroid" and got.plan["positives"] == 3


def test_negatives_move_the_centroid_away_and_are_left_out(held):
    store, embs, keys, X = held
    pos, neg = [embs[1].key, embs[2].key], [embs[7].key, embs[8].key]
    got = store.search("toy", pos, k=10, negatives=neg, combine="centroid")
    row = {k: i for i, k in enumerate(keys)}
    q = centroid_vector(X[[row[p] for p in pos]].astype(np.float32), X[[row[n] for n in neg]].astype(np.float32),
                        "cosine").astype(np.float64)
    want, _ = brute(X, keys, q, 10, "cosine", exclude=pos + neg)
    assert got.keys == want
    without = store.search("toy", pos, k=10, combine="centroid")
    assert got.keys != without.keys  # the negatives changed the answer
    assert got.plan["negatives"] == 2


def test_linear_model_ranks_by_its_score_exactly(held):
    store, embs, keys, X = held
    pos, neg = [embs[i].key for i in (5, 6, 9)], [embs[11].key]
    got = store.search("toy", pos, k=15, negatives=neg, combine="linear")
    row = {k: i for i, k in enumerate(keys)}
    background = background_rows(store, store.space_for("toy").space, 8, pos + neg)
    assert len(background) == BACKGROUND_ROWS
    w = linear_vector(X[[row[p] for p in pos]].astype(np.float32), X[[row[n] for n in neg]].astype(np.float32),
                      background).astype(np.float64)
    want, dist = brute(X, keys, w, 15, "dot", exclude=pos + neg)
    assert got.keys == want
    np.testing.assert_allclose([r["distance"] for r in got], dist, rtol=1e-4, atol=1e-4)
    assert got.metric == "dot" and got.plan["combine"] == "linear"


def test_linear_model_separates_two_clusters():
    rng = np.random.default_rng(1)
    centre = rng.standard_normal(16)
    P = (centre + 0.1 * rng.standard_normal((4, 16))).astype(np.float32)
    B = rng.standard_normal((200, 16)).astype(np.float32)
    w = linear_vector(P, None, B)
    others = (centre + 0.1 * rng.standard_normal((20, 16))) @ w  # the same cluster scores high
    assert np.min(others) > np.percentile(B @ w, 95)


def test_a_2d_array_and_embeddings_are_examples_too(held):
    store, embs, keys, X = held
    arr = np.stack([embs[20].vector, embs[21].vector])
    by_array = store.search("toy", arr, k=8, combine="centroid", exclude_self=False)
    by_embedding = store.search("toy", [embs[20], embs[21]], k=8, combine="centroid", exclude_self=False)
    assert by_array.keys == by_embedding.keys
    excluded = store.search("toy", [embs[20], embs[21]], k=8, combine="centroid")
    assert not {embs[20].key, embs[21].key} & set(excluded.keys)


def test_one_example_alone_is_the_plain_search(held):
    store, embs, keys, X = held
    plain = store.search("toy", embs[4].key, k=10)
    assert plain.plan["like"] == "key"
    want, _ = brute(X, keys, embs[4].vector.astype(np.float64), 10, "cosine", exclude=[embs[4].key])
    assert plain.keys == want


def test_filters_apply_to_example_searches(held):
    store, embs, keys, X = held
    got = store.search("toy", [embs[0].key, embs[1].key], k=20, temporal=TemporalSpec.year(2022))
    assert got.rows and all(r["start_date"].year <= 2022 < r["end_date"].year + 1 for r in got)


@pytest.mark.parametrize("call, error, words", [
    (lambda s, e: s.search("toy", [], k=5), SpecError, "empty list"),
    (lambda s, e: s.search("toy", [e[0].key, "0" * 64], k=5), NotStoredError, "like[1]"),
    (lambda s, e: s.search("toy", [[1.0] * 8, [1.0] * 3], k=5), VectorError, "like[1]"),
    (lambda s, e: s.search("toy", [1.0] * 3, k=5, negatives=[e[1].key]), VectorError, "dimension 3"),
    (lambda s, e: s.search("toy", None, k=5, negatives=[e[1].key]), SpecError, "exactly one of like"),
    (lambda s, e: s.search("toy", [e[0].key], k=5, negatives=["0" * 64]), NotStoredError, "negatives[0]"),
    (lambda s, e: s.search("toy", [e[0].key], k=5, combine="median"), SpecError, "combine='median'"),
    (lambda s, e: s.search("toy", e[0].key, k=5, text="a forest"), SpecError, "exactly one of like"),
    (lambda s, e: s.search("toy", text="a forest", k=5), SpecError, "no text tower"),
    (lambda s, e: s.search("toy", text="  ", k=5), SpecError, "non-empty phrase"),
    (lambda s, e: s.search("toy", [e[0].key], k=5, negatives="x"), SpecError, "negatives='x'"),
])
def test_bad_examples_are_named(held, call, error, words):
    store, embs, _, _ = held
    with pytest.raises(error) as info:
        call(store, embs)
    assert words in str(info.value)


def test_text_on_remoteclip_without_torch_names_the_extra(tmp_path):
    pytest.importorskip("rsembed_store.ingest.models.remoteclip")
    try:
        import torch  # noqa: F401
        pytest.skip("torch is installed here; tests/models/test_text_search.py covers the text tower")
    except ImportError:
        pass
    from rsembed_store.registry import model_class

    info = model_class("remoteclip").info
    store = Store.open(tmp_path / "db")
    store.ensure_space("remoteclip", info.revision, info.dim, metric=info.metric)
    with pytest.raises(MissingExtraError, match="remoteclip"):
        search_examples(store, "remoteclip", text="a forest", k=3)


# ---------------------------------------------------------------- change between windows


def _change_store(path, n=60, seed=3):
    """Cells with a 2021 and a 2022 row (two 2022 rows for some), plus 2021-only cells."""
    rng = np.random.default_rng(seed)
    cells = sorted({h3.latlng_to_cell(46.0 + 0.01 * i, 11.0 + 0.013 * i, 9) for i in range(n)})
    embs, expect = [], {}
    for i, cell in enumerate(cells):
        a = rng.standard_normal(8).astype(np.float32)
        embs.append(Embedding(request=resolve(Request("toy", H3Cell(cell), TemporalSpec.year(2021))), vector=a))
        if i % 5 == 4:
            continue  # only in 2021
        b = rng.standard_normal(8).astype(np.float32)
        embs.append(Embedding(request=resolve(Request("toy", H3Cell(cell), TemporalSpec.year(2022))), vector=b))
        mean_b = b.astype(np.float64)
        if i % 3 == 0:  # a second 2022 row of the same cell: its vectors are averaged
            c = rng.standard_normal(8).astype(np.float32)
            window = TemporalSpec.range("2022-03-01", "2022-09-01")
            embs.append(Embedding(request=resolve(Request("toy", H3Cell(cell), window)), vector=c))
            mean_b = (b.astype(np.float64) + c) / 2
        cos = a @ mean_b / (np.linalg.norm(a) * np.linalg.norm(mean_b))
        expect[h3.str_to_int(cell)] = 1 - cos
    # a row spanning both years belongs to neither
    embs.append(Embedding(request=resolve(Request("toy", H3Cell(cells[0]), TemporalSpec.range("2021-06-01",
                                                                                            "2022-06-01"))),
                          vector=rng.standard_normal(8).astype(np.float32)))
    store = Store.open(path)
    store.put_many(embs)
    return store, expect


def test_change_is_the_cosine_distance_per_cell_in_both_windows(tmp_path):
    store, expect = _change_store(tmp_path / "db")
    t = store.change("toy", 2021, "2022")
    assert t.schema.field("cell").type == pa.int64() and t.schema.field("distance").type == pa.float32()
    got = dict(zip(t.column("cell").to_pylist(), t.column("distance").to_pylist()))
    assert set(got) == set(expect)
    np.testing.assert_allclose([got[c] for c in sorted(expect)], [expect[c] for c in sorted(expect)], atol=1e-5)
    lat, lon = h3.cell_to_latlng(h3.int_to_str(t.column("cell")[0].as_py()))
    assert t.column("lon")[0].as_py() == pytest.approx(lon) and t.column("lat")[0].as_py() == pytest.approx(lat)
    same = store.change("toy", 2021, 2021)
    assert same.num_rows > len(expect) and max(same.column("distance").to_pylist()) < 1e-5
    some = sorted(expect)[:3]
    inside = store.change("toy", 2021, 2022, within=[h3.int_to_str(c) for c in some])
    assert inside.column("cell").to_pylist() == some


def test_change_refuses_bad_windows(tmp_path):
    store, _ = _change_store(tmp_path / "db", n=5)
    with pytest.raises(SpecError, match="from"):
        store.change("toy", "20x1", 2022)
    with pytest.raises(SpecError, match="to is missing"):
        store.change("toy", 2021, None)


# ---------------------------------------------------------------- HTTP


class Client:
    def __init__(self, app):
        self.app = app

    def post(self, path, body):
        async def send():
            transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://rsembed-store") as client:
                return await client.post(path, json=body)

        return asyncio.run(send())


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    pytest.importorskip("fastapi")
    from rsembed_store.query.service import create_app

    store = Store.open(tmp_path_factory.mktemp("api") / "db", config={"serving": {"background": False}})
    embs = _make(200)
    store.put_many(embs)
    return store, embs, Client(create_app(store, max_batch=50))


def test_http_search_with_several_examples_and_negatives(api):
    store, embs, client = api
    body = {"model": "toy", "k": 7, "like": [{"key": embs[0].key}, {"vector": embs[1].vector.tolist()}],
            "negatives": [{"key": embs[2].key}], "combine": "centroid"}
    r = client.post("/search", body)
    assert r.status_code == 200, r.text
    want = store.search("toy", [embs[0].key, embs[1].key], k=7, negatives=[embs[2].key], combine="centroid")
    got = [row["key"] for row in r.json()["results"]]
    assert got == want.keys and embs[0].key not in got and embs[2].key not in got
    one = client.post("/search", {"model": "toy", "k": 3, "like": {"key": embs[0].key}})
    assert [row["key"] for row in one.json()["results"]] == store.search("toy", embs[0].key, k=3).keys


@pytest.mark.parametrize("body, status, field, words", [
    ({"like": []}, 422, "like", "empty list"),
    ({"like": [{"key": "0" * 64}]}, 404, "like[0].key", "not stored"),
    ({"like": [{"vector": [1.0, 2.0]}, {"vector": [1.0, 2.0]}]}, 422, "like", "dimension 2"),
    ({"negatives": [{"vector": [1.0] * 8}]}, 422, "like", "exactly one of like"),
    ({"text": "a forest"}, 422, "text", "no text tower"),
    ({"like": [{"vector": [1.0] * 8}], "combine": "vote"}, 422, "like", "combine='vote'"),
    ({"like": [{"vector": [1.0] * 8}] * 51}, 413, "like", "at most 50"),
])
def test_http_bad_examples(api, body, status, field, words):
    _, _, client = api
    r = client.post("/search", {"model": "toy", "k": 3, **body})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert words in err["message"]
    assert (err.get("field") or "").startswith(field)


def test_http_change_json_arrow_and_limit(tmp_path, monkeypatch):
    pytest.importorskip("fastapi")
    from rsembed_store.query.service import create_app

    store, expect = _change_store(tmp_path / "db")
    client = Client(create_app(store))
    body = {"model": "toy", "from": {"mode": "year", "year": 2021}, "to": {"mode": "year", "year": 2022}}
    r = client.post("/change", body)
    assert r.status_code == 200, r.text
    cells = r.json()["cells"]
    assert {h3.str_to_int(c["cell"]) for c in cells} == set(expect)
    for c in cells:
        assert c["distance"] == pytest.approx(expect[h3.str_to_int(c["cell"])], abs=1e-5)
    r = client.post("/change", {**body, "format": "arrow"})
    assert r.headers["content-type"].startswith("application/vnd.apache.arrow.stream")
    table = pa.ipc.open_stream(r.content).read_all()
    assert table.column_names == ["cell", "distance", "lon", "lat"] and table.num_rows == len(expect)
    monkeypatch.setenv("RSEMBED_STORE_MAX_JSON_CELLS", "5")
    r = client.post("/change", body)
    assert r.status_code == 413 and "max_json_cells=5" in r.json()["error"]["message"]
    assert client.post("/change", {**body, "format": "arrow"}).status_code == 200
    r = client.post("/change", {**body, "from": {"mode": "year", "year": "x"}})
    assert r.status_code == 422


def test_limit_error_for_json_cells():
    from rsembed_store.limits import check_json_cells

    with pytest.raises(LimitError, match="12 cells"):
        check_json_cells(12, 10)
    check_json_cells(10, 10)


def test_example_searches_from_many_threads_agree(held):
    from concurrent.futures import ThreadPoolExecutor

    store, embs, _, _ = held
    jobs = [([embs[i].key, embs[i + 1].key], [embs[i + 2].key], c) for i in range(0, 12, 3)
            for c in ("centroid", "linear")]

    def one(job):
        like, neg, combine = job
        return store.search("toy", like, k=6, negatives=neg, combine=combine).keys

    alone = [one(j) for j in jobs]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(one, jobs * 2))
    assert together == alone * 2
