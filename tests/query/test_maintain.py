"""maintain(): compaction, scalar indexes, a tuned vector index whose settings searches use."""

import json

import numpy as np
import pytest

from rsembed_store import Embedding, PointBuffer, Request, Store, TemporalSpec, resolve
from rsembed_store.errors import SpecError, StoreError, UnknownSpaceError
from rsembed_store.query.maintain import choose_index, ladder, maintain
from rsembed_store.query.search import SETTINGS_KEY, explain, read_settings, search
from rsembed_store.store import SCALAR_INDEXES

N_ROWS = 3000
MIN_ROWS = 2000


def clustered(n, seed, start=0):
    """Toy embeddings: 8-d vectors around 30 centres, spread over a small region and three years."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).standard_normal((30, 8))
    out = []
    for i in range(start, start + n):
        lon, lat = 11 + rng.uniform(0, 0.8), 46 + rng.uniform(0, 0.6)
        v = centres[rng.integers(30)] + 0.35 * rng.standard_normal(8)
        r = resolve(Request("toy", PointBuffer(lon, lat, 50 + i % 7), TemporalSpec.year(2020 + i % 3)))
        out.append(Embedding(request=r, vector=v.astype(np.float32)))
    return out


# these tests are about the Lance path's vector index and settings (the serving tier's own
# tests are in test_serving.py), so the tier is off here
LANCE_ONLY = {"serving": {"enabled": False}}


def write(store, embs, batch=1000):
    for i in range(0, len(embs), batch):  # several writes: several fragments to compact
        store.put_many(embs[i: i + batch])


@pytest.fixture(scope="module")
def maintained(tmp_path_factory):
    store = Store.open(tmp_path_factory.mktemp("maintain") / "db", config=LANCE_ONLY)
    embs = clustered(N_ROWS, seed=0)
    write(store, embs)
    space = store.space_for("toy").space
    before = store.dataset(space).version
    report = maintain(store, min_rows_for_index=MIN_ROWS, target_recall=0.95)
    return store, space, embs, report, before


def vectors_of(store, space):
    t = store.to_arrow(space, columns=["key", "vector"])
    return np.array(t.column("key").to_pylist()), np.stack(t.column("vector").to_pylist()).astype(np.float64)


def exact_keys(keys, X, q, k=10):
    d = 1 - X @ q / (np.linalg.norm(X, axis=1) * np.linalg.norm(q))
    return [keys[i] for i in np.argsort(d, kind="stable")[:k]]


def test_maintain_builds_a_tuned_index_and_reports_it(maintained):
    store, space, _, report, _ = maintained
    json.dumps(report)  # JSON-ready
    (s,) = report["spaces"]
    assert s["space"] == space and s["rows"] == N_ROWS
    assert s["compaction"]["fragments_before"] >= 3
    assert s["compaction"]["fragments_after"] < s["compaction"]["fragments_before"]
    assert s["scalar_indexes"]["action"] == "built"
    vi = s["vector_index"]
    assert vi["type"] == "IVF_FLAT" and vi["action"] == "built" and vi["metric"] == "cosine"
    assert vi["num_partitions"] == round(N_ROWS ** 0.5)
    assert vi["recall_at_10"] >= 0.95 and vi["target_met"] is True
    assert vi["filtered"]["recall_at_10"] >= 0.95 and vi["filtered"]["regions"]
    assert vi["query"]["nprobes"] >= 1 and vi["query"]["filtered_nprobes"] >= vi["query"]["nprobes"]
    assert vi["p50_ms"] > 0 and vi["queries"] == 100 and vi["tried"][-1]["recall_at_10"] == vi["recall_at_10"]
    names = {tuple(i.columns): i.index_type for i in store.table(space).list_indices()}
    assert names[("vector",)].upper().replace("_", "") == "IVFFLAT"
    for column in SCALAR_INDEXES:
        assert (column,) in names


def test_settings_are_stored_with_the_table_and_used_by_search(maintained):
    store, space, embs, report, _ = maintained
    vi = report["spaces"][0]["vector_index"]
    config = store.dataset(space).config()
    assert SETTINGS_KEY in config  # in the dataset's manifest: travels with the table, local or s3://
    settings = read_settings(store, space)
    assert settings["query"] == vi["query"] and settings["index"]["type"] == "IVF_FLAT"
    assert settings["measured"]["recall_at_10"] == vi["recall_at_10"]
    nprobes, fprobes = vi["query"]["nprobes"], vi["query"]["filtered_nprobes"]
    result = search(store, "toy", embs[0].key)
    assert result.plan["index"] == "IVF_FLAT" and result.plan["exact"] is False
    assert result.plan["nprobes"] == nprobes
    plan = explain(store, "toy", embs[0].key)["lance_plan"]
    assert "ANNIvfPartition" in plan and f"minimum_nprobes={nprobes}," in plan
    assert f"maximum_nprobes=Some({nprobes})" in plan
    filtered = explain(store, "toy", embs[0].key, temporal=TemporalSpec.year(2021))
    assert f"minimum_nprobes={fprobes}," in filtered["lance_plan"] and filtered["nprobes"] == fprobes


def test_indexed_search_recall_on_new_queries(maintained):
    store, space, _, _, _ = maintained
    keys, X = vectors_of(store, space)
    fresh = clustered(60, seed=7)  # same distribution, never stored
    hits = 0
    for e in fresh:
        got = search(store, "toy", e.vector).keys
        hits += len(set(got) & set(exact_keys(keys, X, e.vector.astype(np.float64))))
    assert hits / (10 * len(fresh)) >= 0.9


def test_a_metric_other_than_the_index_searches_exactly(maintained):
    store, space, embs, _, _ = maintained
    keys, X = vectors_of(store, space)
    q = embs[5].vector.astype(np.float64)
    result = search(store, "toy", q, metric="l2", k=10)
    assert result.plan["exact"] is True and "cosine" in result.plan["why_exact"]
    d = ((X - q) ** 2).sum(axis=1)
    assert result.keys == [keys[i] for i in np.argsort(d, kind="stable")[:10]]


def test_versions_are_kept(maintained):
    store, space, _, _, before = maintained
    assert store.count(space, version=before) == N_ROWS  # time travel still reads the old version
    assert len(store.versions(space)) > before


def test_rows_added_after_the_index_are_found_at_once(tmp_path):
    store = Store.open(tmp_path / "db", config=LANCE_ONLY)
    write(store, clustered(2500, seed=3))
    maintain(store, min_rows_for_index=MIN_ROWS)
    space = store.space_for("toy").space
    # new rows far from every cluster: only an exact look at unindexed rows can find them
    rng = np.random.default_rng(5)
    odd = []
    for i in range(5):
        r = resolve(Request("toy", PointBuffer(11.9, 46.9 + i / 1000, 60), TemporalSpec.year(2024)))
        odd.append(Embedding(request=r, vector=(40 + rng.standard_normal(8)).astype(np.float32)))
    store.put_many(odd)
    stats = store.table(space).index_stats("vector_idx")
    assert stats.num_unindexed_rows == 5
    for e in odd:
        result = search(store, "toy", e.vector, k=5, exclude_self=False)
        assert result.plan["index"] == "IVF_FLAT"
        assert result.keys[0] == e.key and set(result.keys) == {x.key for x in odd}
        assert set(search(store, "toy", e.key, k=4, temporal=TemporalSpec.year(2024)).keys) == \
            {x.key for x in odd} - {e.key}
    # the next maintenance folds them into the index and keeps finding them
    again = maintain(store, min_rows_for_index=MIN_ROWS)["spaces"][0]["vector_index"]
    assert again["action"] == "updated"
    assert store.table(space).index_stats("vector_idx").num_unindexed_rows == 0
    assert search(store, "toy", odd[0].vector, k=1, exclude_self=False).keys == [odd[0].key]
    # nothing new: the index is kept as it is
    assert maintain(store, min_rows_for_index=MIN_ROWS)["spaces"][0]["vector_index"]["action"] == "kept"


def test_small_spaces_get_no_vector_index(tmp_path):
    store = Store.open(tmp_path / "db", config=LANCE_ONLY)
    write(store, clustered(300, seed=4))
    report = maintain(store, min_rows_for_index=MIN_ROWS)
    (s,) = report["spaces"]
    assert s["vector_index"]["type"] is None and "min_rows_for_index" in s["vector_index"]["reason"]
    assert s["extent"]["minlon"] >= 11 and s["extent"]["start"] == "2020-01-01"
    space = store.space_for("toy").space
    assert not any(list(i.columns) == ["vector"] for i in store.table(space).list_indices())
    assert search(store, "toy", [1.0] * 8).plan["exact"] is True


def test_force_rebuilds_and_a_chosen_type(tmp_path):
    store = Store.open(tmp_path / "db", config=LANCE_ONLY)
    write(store, clustered(2200, seed=6))
    first = maintain(store, min_rows_for_index=MIN_ROWS)["spaces"][0]["vector_index"]
    assert first["action"] == "built"
    forced = maintain(store, min_rows_for_index=MIN_ROWS, force=True)["spaces"][0]
    assert forced["vector_index"]["action"] == "rebuilt" and forced["scalar_indexes"]["action"] == "rebuilt"
    pq = maintain(store, min_rows_for_index=MIN_ROWS, index_type="IVF_PQ")["spaces"][0]["vector_index"]
    assert pq["type"] == "IVF_PQ" and pq["action"] == "rebuilt" and pq["num_sub_vectors"] == 1
    assert pq["query"].get("refine_factor") and pq["recall_at_10"] >= 0.95
    assert search(store, "toy", [1.0] * 8).plan["index"] == "IVF_PQ"


def test_choices_and_bad_arguments(tmp_path):
    assert choose_index(1_000_000, 64)["type"] == "IVF_FLAT"
    big = choose_index(20_000_000, 768)
    assert big["type"] == "IVF_PQ" and 768 % big["num_sub_vectors"] == 0 and big["num_partitions"] == 4472
    assert [s["nprobes"] for s in ladder({"type": "IVF_FLAT", "num_partitions": 1000})][:3] == [10, 20, 30]
    store = Store.open(tmp_path / "db", config=LANCE_ONLY)
    assert maintain(store)["spaces"] == []
    with pytest.raises(UnknownSpaceError):
        maintain(store, spaces=["nope__v1"])
    with pytest.raises(SpecError):
        maintain(store, target_recall=1.5)
    with pytest.raises(SpecError):
        maintain(store, min_rows_for_index=0)
    with pytest.raises(SpecError):
        maintain(store, index_type="BTREE")


def test_cli_maintain(tmp_path):
    from click.testing import CliRunner

    from rsembed_store.cli import main

    store = Store.open(tmp_path / "db", config=LANCE_ONLY)
    write(store, clustered(2100, seed=8))
    runner = CliRunner()
    db = str(tmp_path / "db")
    res = runner.invoke(main, ["--db", db, "maintain", "--min-rows", str(MIN_ROWS), "--sample-size", "40", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["spaces"][0]["vector_index"]["type"] == "IVF_FLAT"
    text = runner.invoke(main, ["--db", str(tmp_path / "db"), "maintain", "--min-rows", str(MIN_ROWS)])
    assert text.exit_code == 0 and "recall@10" in text.output and "kept" in text.output
    bad = runner.invoke(main, ["--db", str(tmp_path / "db"), "maintain", "--space", "nope__v1"])
    assert bad.exit_code == 2 and "nope__v1" in bad.output


# ---------------------------------------------------------------- failures are logged or raised, never silent


def _fail(*args, **kwargs):
    raise RuntimeError("commit conflict: another writer won")


def test_a_failed_compaction_is_logged_and_reported(tmp_path, monkeypatch, caplog):
    store = Store.open(tmp_path / "db", config=LANCE_ONLY)
    write(store, clustered(60, seed=7), batch=20)
    space = store.space_for("toy").space
    monkeypatch.setattr(type(store.dataset(space).optimize), "compact_files", _fail)
    with caplog.at_level("WARNING", logger="rsembed_store.maintain"):
        (s,) = maintain(store, min_rows_for_index=MIN_ROWS)["spaces"]
    assert s["compaction"]["error"] == "commit conflict: another writer won"
    assert s["scalar_indexes"]["action"] == "built"  # the rest of the maintenance went on
    (record,) = [r for r in caplog.records if r.name == "rsembed_store.maintain"]
    assert record.levelname == "WARNING"
    assert space in record.getMessage() and "compaction failed" in record.getMessage()
    assert "RuntimeError: commit conflict" in record.getMessage()


def test_indexes_that_cannot_be_listed_raise_instead_of_being_rebuilt(tmp_path, monkeypatch):
    store = Store.open(tmp_path / "db", config=LANCE_ONLY)
    write(store, clustered(60, seed=8))
    space = store.space_for("toy").space
    maintain(store, min_rows_for_index=MIN_ROWS)
    monkeypatch.setattr(type(store.table(space)), "list_indices", _fail)
    monkeypatch.setattr(store, "create_scalar_indexes", lambda *a, **k: pytest.fail("rebuilt every index"))
    with pytest.raises(StoreError, match=rf"cannot list the indexes of space '{space}': RuntimeError: commit"):
        maintain(store, min_rows_for_index=MIN_ROWS)


def test_unreadable_index_statistics_are_logged_and_the_index_still_updated(tmp_path, monkeypatch, caplog):
    store = Store.open(tmp_path / "db", config=LANCE_ONLY)
    write(store, clustered(300, seed=9))
    space = store.space_for("toy").space
    maintain(store, min_rows_for_index=200, sample_size=20)
    store.put_many(clustered(5, seed=10, start=300))
    monkeypatch.setattr(type(store.table(space)), "index_stats", _fail)
    with caplog.at_level("WARNING", logger="rsembed_store.maintain"):
        vi = maintain(store, min_rows_for_index=200, sample_size=20)["spaces"][0]["vector_index"]
    assert vi["action"] == "updated" and "statistics unreadable" in vi["reason"]
    messages = [r.getMessage() for r in caplog.records if r.name == "rsembed_store.maintain"]
    assert any(space in m and "'vector_idx'" in m and "commit conflict" in m for m in messages), messages
    monkeypatch.undo()
    assert store.table(space).index_stats("vector_idx").num_unindexed_rows == 0  # the new rows were folded in


def test_a_failed_refresh_is_logged(caplog):
    from types import SimpleNamespace

    from rsembed_store.query.maintain import _refresh

    store = SimpleNamespace(table=lambda space: SimpleNamespace(checkout_latest=_fail))
    with caplog.at_level("WARNING", logger="rsembed_store.maintain"):
        _refresh(store, "toy__toy-v1")
    (record,) = caplog.records
    assert "toy__toy-v1" in record.getMessage() and "latest version" in record.getMessage()


def test_maintain_builds_the_serving_tier_and_prunes_old_versions(tmp_path):
    from datetime import timedelta

    store = Store.open(tmp_path / "db", config={"serving": {"background": False}})
    embs = clustered(300, 0)
    for i in range(0, 300, 50):  # six versions, each a small fragment
        store.put_many(embs[i:i + 50])
    space = store.space_for("toy").space
    store.tag(space, "first", 2)
    report = maintain(store, prune_older_than=timedelta(0))
    s = report["spaces"][0]
    assert s["serving"]["path"] == "serving" and s["serving"]["rows"] == 300
    assert s["serving"]["version"] == store.dataset(space).version
    assert s["prune"]["versions_removed"] > 0 and s["prune"]["bytes_removed"] > 0
    versions = [v["version"] for v in store.versions(space)]
    assert 2 in versions and store.dataset(space).version in versions  # the tagged and the latest stay
    assert store.count(space, version="first") == 50
    assert search(store, "toy", embs[0].vector, k=3, exclude_self=False).keys[0] == embs[0].key
    with pytest.raises(SpecError, match="prune_older_than"):
        maintain(store, prune_older_than=-1)


def test_cli_maintain_prune_reports_and_refuses_a_bad_age(tmp_path):
    from click.testing import CliRunner

    from rsembed_store.cli import main

    store = Store.open(tmp_path / "db")
    embs = clustered(60, 1)
    store.put_many(embs[:30])
    store.put_many(embs[30:])
    res = CliRunner().invoke(main, ["--db", str(tmp_path / "db"), "maintain", "--prune", "0s"])
    assert res.exit_code == 0, res.output
    assert "pruned" in res.output and "served by serving" in res.output
    res = CliRunner().invoke(main, ["--db", str(tmp_path / "db"), "maintain", "--prune", "soon"])
    assert res.exit_code != 0 and "--prune 'soon' is not an age" in res.output
