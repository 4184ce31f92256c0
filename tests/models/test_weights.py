"""Weights: lookup order, checksum verification, download into the cache (from a file://
URL: tests never reach the network), clear errors, and custom-weights variants whose
revision names the file. Needs no torch: weights.py must stay torch-free."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from rsembed_store.ingest.models import weights as wts
from rsembed_store.keys import Request, resolve
from rsembed_store.model import Model, ModelInfo
from rsembed_store.registry import model_class, register_model
from rsembed_store.specs import PointBuffer, SensorSpec, TemporalSpec

PAYLOAD = b"pretend checkpoint " * 1000


@pytest.fixture
def published(tmp_path):
    """A 'public home' (a folder reached through a file:// URL) holding the published file."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "model-v1.pt").write_bytes(PAYLOAD)
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    return wts.PublishedWeights("model-v1.pt", (home / "model-v1.pt").as_uri(), digest, home="https://example.org/model")


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("RSEMBED_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RSEMBED_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("RSEMBED_WEIGHTS", raising=False)


def test_download_fills_the_cache_once_and_verifies(published, tmp_path):
    path = wts.locate("m", published)
    assert path == tmp_path / "cache" / "weights" / "model-v1.pt" and path.read_bytes() == PAYLOAD
    os.remove(published.url[len("file://"):])  # the public home is gone: the cache answers
    assert wts.locate("m", published) == path


def test_lookup_order_explicit_then_weights_dir_then_cache(published, tmp_path, monkeypatch):
    for d in ("explicit", "wdir", "cache/weights"):
        (tmp_path / d).mkdir(parents=True)
        (tmp_path / d / "model-v1.pt").write_bytes(PAYLOAD)
    monkeypatch.setenv("RSEMBED_WEIGHTS_DIR", str(tmp_path / "wdir"))
    assert wts.locate("m", published, tmp_path / "explicit") == tmp_path / "explicit" / "model-v1.pt"
    assert wts.locate("m", published) == tmp_path / "wdir" / "model-v1.pt"
    monkeypatch.delenv("RSEMBED_WEIGHTS_DIR")
    assert wts.locate("m", published) == tmp_path / "cache" / "weights" / "model-v1.pt"


def test_a_missing_checkpoint_says_where_to_get_it_and_where_to_put_it(published, tmp_path):
    gone = wts.PublishedWeights("model-v1.pt", (tmp_path / "no" / "model-v1.pt").as_uri(), published.sha256,
                                home="https://example.org/model")
    with pytest.raises(wts.WeightsError) as err:
        wts.locate("m", gone)
    msg = str(err.value)
    assert gone.url in msg and "https://example.org/model" in msg and str(tmp_path / "cache" / "weights") in msg
    assert "use_weights('m', PATH)" in msg and not (tmp_path / "cache" / "weights" / "model-v1.pt").exists()
    with pytest.raises(wts.WeightsError, match="downloads are off"):
        wts.locate("m", published, allow_download=False)


def test_a_download_that_does_not_match_the_checksum_is_not_kept(published, tmp_path):
    wrong = wts.PublishedWeights("model-v1.pt", published.url, "0" * 64)
    with pytest.raises(wts.WeightsError, match="not the published"):
        wts.locate("m", wrong)
    assert list((tmp_path / "cache" / "weights").iterdir()) == []


def test_a_modified_local_file_is_refused_with_the_custom_weights_hint(published, tmp_path):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "model-v1.pt").write_bytes(PAYLOAD + b"fine-tuned")
    with pytest.raises(wts.WeightsError) as err:
        wts.locate("m", published, tmp_path / "w")
    assert "use_weights('m'" in str(err.value) and "RSEMBED_WEIGHTS=m=" in str(err.value)


def test_an_explicit_path_that_does_not_exist_is_named(published, tmp_path):
    with pytest.raises(wts.WeightsError, match="nope.pt"):
        wts.locate("m", published, tmp_path / "nope.pt")


def test_hashes_are_cached_by_path_size_and_mtime(tmp_path):
    f = tmp_path / "w.pt"
    f.write_bytes(b"one")
    first = wts.file_sha256(f)
    f.write_bytes(b"two, longer")
    assert wts.file_sha256(f) == hashlib.sha256(b"two, longer").hexdigest() != first


def test_a_pinned_prefix_like_torch_hub_names_verifies_and_names_the_revision(tmp_path):
    f = tmp_path / "w.pth"
    f.write_bytes(PAYLOAD)
    pw = wts.PublishedWeights("w.pth", "file:///x", hashlib.sha256(PAYLOAD).hexdigest()[:8])
    assert wts.verify("m", f, pw) == f
    assert pw.revision == "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()[:8]
    with pytest.raises(ValueError, match="8 hex"):
        wts.PublishedWeights("w.pth", "file:///x", "abc")


# ---------------------------------------------------------------- variants


class Published(Model):
    """A declared model with published weights (no network needed to resolve keys)."""

    published = wts.PublishedWeights("model-v1.pt", "file:///x", hashlib.sha256(PAYLOAD).hexdigest())
    info = ModelInfo(id="weights-test", revision=published.revision, kind="on_the_fly", dim=4,
                     default_sensor=SensorSpec("s2-l2a", ("B04",)), input_size=8)


@pytest.fixture
def registered():
    register_model("weights-test", Published)
    yield
    register_model("weights-test", Published)


def key(model_id="weights-test"):
    return resolve(Request(model_id, PointBuffer(11, 46, 100), TemporalSpec.year(2022))).key


def test_use_weights_gives_custom_weights_their_own_revision_and_keys(registered, tmp_path):
    published_key = key()
    f = tmp_path / "ft.pt"
    f.write_bytes(PAYLOAD + b"fine-tuned")
    cls = wts.use_weights("weights-test", f)
    assert cls.info.revision == "sha256:" + hashlib.sha256(f.read_bytes()).hexdigest()[:16]
    assert model_class("weights-test") is cls and cls.weights_path == str(f.resolve())
    assert key() != published_key
    assert wts.use_weights("weights-test", f) is cls  # same file, same class
    assert wts.use_published("weights-test") is Published and key() == published_key


def test_the_published_file_used_as_custom_weights_keeps_the_published_keys(registered, tmp_path):
    published_key = key()
    (tmp_path / "model-v1.pt").write_bytes(PAYLOAD)
    cls = wts.use_weights("weights-test", tmp_path)  # a directory holding the published file name
    assert cls.info.revision == Published.info.revision and key() == published_key


def test_use_weights_config_applies_each_models_entry(registered, tmp_path):
    f = tmp_path / "ft.pt"
    f.write_bytes(b"other weights")
    done = wts.use_weights_config({"models": {"weights-test": {"weights": str(f)}, "spectral": {}}})
    assert list(done) == ["weights-test"] and model_class("weights-test").info.revision == done["weights-test"].info.revision


def test_a_store_opened_with_a_weights_config_keys_requests_by_those_weights(registered, tmp_path):
    from rsembed_store.store import Store

    published_key = key()
    f = tmp_path / "ft.pt"
    f.write_bytes(b"weights named by the store config")
    store = Store.open(tmp_path / "db", config={"models": {"weights-test": {"weights": str(f)}}})
    with store.models_scope():
        assert model_class("weights-test").info.revision == ("sha256:"
                                                              + hashlib.sha256(f.read_bytes()).hexdigest()[:16])
        assert key() != published_key
    # the process's registry is left alone: the weights belong to that store
    assert model_class("weights-test") is Published and key() == published_key


def test_two_stores_with_different_weights_in_one_process_do_not_collide(registered, tmp_path):
    import threading

    from rsembed_store.store import Store

    stores, revisions = [], []
    for name in ("a", "b"):
        f = tmp_path / f"{name}.pt"
        f.write_bytes(b"weights " + name.encode())
        stores.append(Store.open(tmp_path / name, config={"models": {"weights-test": {"weights": str(f)}}}))
        revisions.append("sha256:" + hashlib.sha256(f.read_bytes()).hexdigest()[:16])
    seen = {}

    def keyed(i):
        for _ in range(50):  # interleaved with the other store's thread
            with stores[i].models_scope():
                seen.setdefault(i, set()).add((model_class("weights-test").info.revision, key()))

    threads = [threading.Thread(target=keyed, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [{r for r, _ in seen[i]} for i in (0, 1)] == [{revisions[0]}, {revisions[1]}]
    keys = [{k for _, k in seen[i]} for i in (0, 1)]
    assert len(keys[0]) == len(keys[1]) == 1 and keys[0] != keys[1] and key() not in keys[0] | keys[1]


def test_rsembed_weights_env_is_applied_when_the_model_is_first_looked_up(tmp_path, monkeypatch):
    f = tmp_path / "rc-finetune.pt"
    f.write_bytes(b"a remoteclip fine-tune")
    target = "rsembed_store.ingest.models.remoteclip:RemoteClipModel"
    monkeypatch.setenv("RSEMBED_WEIGHTS", f"dofa=/elsewhere.pth, remoteclip={f}")
    register_model("remoteclip", target)  # forget the cached class
    try:
        cls = model_class("remoteclip")
        assert cls.info.revision == "sha256:" + hashlib.sha256(f.read_bytes()).hexdigest()[:16]
        assert resolve(Request("remoteclip", PointBuffer(11, 46, 100), TemporalSpec.year(2022))).revision == cls.info.revision
    finally:
        monkeypatch.delenv("RSEMBED_WEIGHTS")
        register_model("remoteclip", target)
    assert model_class("remoteclip").info.revision.startswith("sha256:60014e395d930a3f")


def test_a_malformed_rsembed_weights_is_refused(monkeypatch):
    monkeypatch.setenv("RSEMBED_WEIGHTS", "remoteclip")
    with pytest.raises(ValueError, match="'remoteclip' is not 'model_id=path'"):
        wts.env_weights("remoteclip")


def test_listing_and_resolving_deep_models_never_imports_torch():
    # rs-embed is hidden: describing its zoo imports its embedder modules, and with them
    # torch (docs/rsembed-bridge.md); this test is about this project's own deep models
    code = (
        "import sys\n"
        "sys.modules['rs_embed'] = None\n"
        "from rsembed_store.registry import describe_models\n"
        "from rsembed_store.keys import Request, resolve\n"
        "from rsembed_store.specs import PointBuffer, TemporalSpec\n"
        "ids = [m['id'] for m in describe_models() if 'error' not in m]\n"
        "assert {'remoteclip', 'ssl4eo-s2', 'dofa'} <= set(ids), ids\n"
        "for m in ('remoteclip', 'ssl4eo-s2', 'dofa'):\n"
        "    resolve(Request(m, PointBuffer(11, 46, 100), TemporalSpec.year(2022)))\n"
        "heavy = [n for n in ('torch', 'open_clip', 'torchgeo', 'timm') if n in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
