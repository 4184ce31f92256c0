"""``rsembed-store search`` with several examples, negatives, text and combine, and ``rsembed-store change``."""

import json

import pyarrow as pa
import pytest
from click.testing import CliRunner

from rsembed_store import Store
from rsembed_store.cli import main
from tests.query.test_examples import _change_store
from tests.query.test_search import _make


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "db"
    store = Store.open(path)
    embs = _make(150)
    store.put_many(embs)
    return str(path), store, embs


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_search_with_several_keys_and_negatives_equals_python(db):
    path, store, embs = db
    res = run("--db", path, "search", "-m", "toy", "--like-key", embs[0].key, "--like-key", embs[1].key,
              "--negative-key", embs[2].key, "--combine", "centroid", "-k", "6", "--json")
    assert res.exit_code == 0, res.output
    got = [r["key"] for r in json.loads(res.output)["results"]]
    want = store.search("toy", [embs[0].key, embs[1].key], k=6, negatives=[embs[2].key], combine="centroid")
    assert got == want.keys and len(got) == 6
    assert json.loads(res.output)["plan"]["combine"] == "centroid"
    plain = run("--db", path, "search", "-m", "toy", "--like-key", embs[0].key, "-k", "3", "--json")
    assert [r["key"] for r in json.loads(plain.output)["results"]] == store.search("toy", embs[0].key, k=3).keys
    text = run("--db", path, "search", "-m", "toy", "--like-key", embs[0].key, "--like-key", embs[3].key)
    assert text.exit_code == 0 and "result(s)" in text.output


@pytest.mark.parametrize("args, words", [
    (["--text", "a forest"], "no text tower"),
    (["--text", "a forest", "--like-key", "0" * 64], "either --text or examples"),
    (["--negative-key", "0" * 64], "--negative-key needs positives"),
    (["--like-key", "0" * 64, "--like-key", "1" * 64], "like[0]"),
    (["--like-key", "0" * 64, "--combine", "vote"], "'vote' is not one of"),
])
def test_search_bad_examples_are_named(db, args, words):
    path, _, _ = db
    res = run("--db", path, "search", "-m", "toy", *args)
    assert res.exit_code != 0
    assert words in res.output and "Traceback" not in res.output


def test_change_prints_json_text_and_arrow(tmp_path):
    store, expect = _change_store(tmp_path / "db")
    res = run("--db", str(tmp_path / "db"), "change", "-m", "toy", "--from", "2021", "--to", "2022", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["count"] == len(expect) == len(data["cells"])
    out = tmp_path / "change.arrow"
    res = run("--db", str(tmp_path / "db"), "change", "-m", "toy", "--from", "2021", "--to", "2022", "--top", "3",
              "--arrow", str(out))
    assert res.exit_code == 0, res.output
    assert f"{len(expect)} cell(s) stored in both 2021 and 2022" in res.output
    assert len(res.output.strip().splitlines()) == 4
    with pa.ipc.open_stream(out.read_bytes()) as reader:
        assert reader.read_all().num_rows == len(expect)
    bad = run("--db", str(tmp_path / "db"), "change", "-m", "toy", "--from", "20x2", "--to", "2022")
    assert bad.exit_code != 0 and "from" in bad.output and "Traceback" not in bad.output
