"""Text search with ``remoteclip``'s text tower, on seeded random weights of the real architecture.

The text vectors must be open_clip's own ``encode_text`` of the same checkpoint
(built here independently), and ``store.search(model, text=...)`` must find the
stored row nearest to that vector, through Python and HTTP.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from rsembed_store import Embedding, PointBuffer, Request, Store, TemporalSpec, resolve  # noqa: E402
from rsembed_store.errors import SpecError  # noqa: E402
from rsembed_store.ingest.models.weights import use_published, use_weights  # noqa: E402
from rsembed_store.query.examples import text_models, text_vector  # noqa: E402
from rsembed_store.registry import describe_models  # noqa: E402

PHRASES = ["a dense forest", "a harbour with boats", "farmland in spring"]


@pytest.fixture(scope="module")
def variant(remoteclip_checkpoint):
    cls = use_weights("remoteclip", remoteclip_checkpoint)
    yield cls
    use_published("remoteclip")


@pytest.fixture(scope="module")
def reference(remoteclip_checkpoint):
    net = open_clip.create_model("ViT-B-32", pretrained=None)
    net.load_state_dict(torch.load(remoteclip_checkpoint, weights_only=True))
    return net.eval()


def _want(reference, phrases):
    tokens = open_clip.tokenize(phrases)
    with torch.inference_mode():
        return reference.encode_text(tokens).numpy()


def test_embed_text_is_the_checkpoints_clip_text_embedding(variant, reference):
    model = variant({"device": "cpu"})
    got = model.embed_text(PHRASES)
    want = _want(reference, PHRASES)
    assert got.shape == (3, 512) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert not np.allclose(got[0], got[1])  # different phrases, different vectors


def test_models_declare_the_text_tower(variant):
    described = {m["id"]: m for m in describe_models()}
    assert described["remoteclip"]["text"] is True
    assert described["spectral"]["text"] is False
    assert "remoteclip" in text_models()


@pytest.fixture(scope="module")
def store(tmp_path_factory, variant, reference):
    """A remoteclip space whose rows are random vectors plus, at known keys, each phrase's text vector
    slightly perturbed (so the text search must find exactly those rows)."""
    rng = np.random.default_rng(0)
    store = Store.open(tmp_path_factory.mktemp("text") / "db")
    want = _want(reference, PHRASES)
    embs, planted = [], {}
    for i in range(60):
        r = resolve(Request("remoteclip", PointBuffer(11.0 + 0.01 * i, 46.0, 500), TemporalSpec.year(2022)))
        if i < len(PHRASES):
            v = want[i] + 0.01 * np.abs(want[i]).mean() * rng.standard_normal(512)
            planted[PHRASES[i]] = r.key
        else:
            v = rng.standard_normal(512)
        embs.append(Embedding(request=r, vector=v.astype(np.float32)))
    store.put_many(embs)
    return store, planted


def test_text_search_finds_the_row_nearest_the_phrase(store):
    db, planted = store
    for phrase, key in planted.items():
        got = db.search("remoteclip", text=phrase, k=3, config={"device": "cpu"})
        assert got.keys[0] == key
        assert got.rows[0]["distance"] < 0.01
        assert got.plan["like"] == "text"


def test_text_with_negatives_and_bad_text(store):
    db, planted = store
    got = db.search("remoteclip", text=PHRASES[0], k=5, negatives=[planted[PHRASES[1]]], combine="centroid")
    assert planted[PHRASES[1]] not in got.keys
    with pytest.raises(SpecError, match="non-empty phrase"):
        db.search("remoteclip", text="", k=3)
    info = db.space_for("remoteclip")
    with pytest.raises(SpecError, match="at most"):
        text_vector(info, "x" * 5000)


def test_text_search_over_http(store):
    pytest.importorskip("fastapi")
    import httpx

    from rsembed_store.query.service import create_app

    db, planted = store
    app = create_app(db)

    async def send(body):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post("/search", json=body)

    r = asyncio.run(send({"model": "remoteclip", "text": PHRASES[2], "k": 2}))
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["key"] == planted[PHRASES[2]]
