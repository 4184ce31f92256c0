"""Read-only DuckDB SQL over a real store of toy embeddings (rsembed_store.query.sql)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import time
from pathlib import Path

import h3
import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from rsembed_store import H3Cell, Request, Store, TemporalSpec, resolve
from rsembed_store.cli import main
from rsembed_store.errors import SqlError
from rsembed_store.query.sql import SqlSession, is_truncated, run_sql, sql_result
from toy import toy_embedding

SPACE = "toy__toy-v1"
YEAR_SPACE = "toyyear__2024.1"
YEARS = (2021, 2022)
CELLS = sorted(h3.grid_disk(h3.latlng_to_cell(46.0, 11.0, 9), 3))  # 37 cells at resolution 9
DOCS = Path(__file__).resolve().parents[2] / "docs" / "sql.md"


def toy_request(cell: str, year: int):
    return resolve(Request("toy", H3Cell(cell), TemporalSpec.year(year)))


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A store with the toy space (37 cells x 2 years) and a small toyyear space."""
    store = Store.open(tmp_path_factory.mktemp("sql") / "db")
    embs, vectors = [], {}
    for i, cell in enumerate(CELLS):
        for year in YEARS:
            embs.append(toy_embedding(toy_request(cell, year), seed=1000 * year + i))
            vectors[(cell, year)] = embs[-1].vector
    years = [toy_embedding(resolve(Request("toyyear", H3Cell(c), TemporalSpec.year(2020))), seed=i)
             for i, c in enumerate(CELLS[:5])]
    store.put_many(embs + years)
    return store, vectors, embs + years


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """About 2,000 rows: 1,027 resolution-10 cells x 2 years."""
    store = Store.open(tmp_path_factory.mktemp("sqlbig") / "db")
    cells = sorted(h3.grid_disk(h3.latlng_to_cell(46.0, 11.0, 10), 18))
    store.put_many([toy_embedding(toy_request(c, y), seed=i) for i, c in enumerate(cells) for y in YEARS])
    return store, cells


def rows(table: pa.Table):
    return table.to_pylist()


def store_snapshot(store: Store):
    files = {}
    for root, _, names in os.walk(store.uri):
        for n in names:
            p = os.path.join(root, n)
            st = os.stat(p)
            files[os.path.relpath(p, store.uri)] = (st.st_size, st.st_mtime_ns)
    counts = {s.space: (store.dataset(s.space).count_rows(), store.dataset(s.space).version) for s in store.spaces()}
    return files, counts


# ---------------------------------------------------------------- views


def test_views_are_the_spaces_their_aliases_embeddings_and_the_catalog(toy):
    store, _, _ = toy
    with SqlSession(store) as session:
        assert set(session.views) == {SPACE, YEAR_SPACE, "toy", "toyyear", "embeddings", "spaces"}
        names = rows(session.run("SELECT table_name, table_type FROM information_schema.tables ORDER BY 1").table)
    assert {r["table_name"] for r in names} == {SPACE, YEAR_SPACE, "toy", "toyyear", "embeddings", "spaces"}
    # nothing is materialised in DuckDB: every name is a view
    assert {r["table_type"] for r in names} == {"VIEW"}
    catalog = rows(run_sql(store, "SELECT space, model, revision, dim, metric FROM spaces ORDER BY space"))
    assert catalog == [
        {"space": SPACE, "model": "toy", "revision": "toy-v1", "dim": 8, "metric": "cosine"},
        {"space": YEAR_SPACE, "model": "toyyear", "revision": "2024.1", "dim": 4, "metric": "cosine"},
    ]


def test_space_view_holds_every_column_and_the_vector_as_a_fixed_size_array(toy):
    store, vectors, _ = toy
    t = run_sql(store, f'SELECT * FROM "{SPACE}" ORDER BY cell, year')
    assert t.num_rows == len(CELLS) * len(YEARS)
    assert {"key", "vector", "grid", "h3", "cell", "year", "compute_s"} <= set(t.column_names)
    assert pa.types.is_fixed_size_list(t.schema.field("vector").type)
    assert t.schema.field("vector").type.list_size == 8
    first = rows(t.select(["cell", "year", "vector"]))[0]
    np.testing.assert_array_equal(np.float32(first["vector"]), vectors[(h3.int_to_str(first["cell"]), first["year"])])
    # the alias is the same rows
    assert run_sql(store, "SELECT count(*) AS n FROM toy").to_pylist() == [{"n": t.num_rows}]


def test_embeddings_view_has_no_heavy_columns_and_a_space_column(toy):
    store, _, stored = toy
    t = run_sql(store, "SELECT * FROM embeddings")
    assert t.column_names[0] == "space"
    assert "vector" not in t.column_names and "grid" not in t.column_names
    assert t.num_rows == len(stored)
    counts = rows(run_sql(store, "SELECT space, count(*) AS n FROM embeddings GROUP BY space ORDER BY space"))
    assert counts == [{"space": SPACE, "n": 74}, {"space": YEAR_SPACE, "n": 5}]
    assert set(run_sql(store, "SELECT DISTINCT key FROM embeddings").column("key").to_pylist()) == {
        e.key for e in stored
    }


def test_filters_on_year_cell_and_h3_range(toy):
    store, _, _ = toy
    pick = CELLS[:4]
    in_list = ", ".join(f"h3_from_string('{c}')" for c in pick)
    t = run_sql(store, f"SELECT h3_to_string(cell) AS c FROM toy WHERE year = 2022 AND cell IN ({in_list}) ORDER BY c")
    assert t.column("c").to_pylist() == sorted(pick)
    parent = h3.cell_to_parent(CELLS[0], 7)
    expected = sorted(c for c in CELLS if h3.cell_to_parent(c, 7) == parent)
    t = run_sql(
        store,
        f"SELECT DISTINCT h3_to_string(cell) AS c FROM toy "
        f"WHERE h3 BETWEEN h3_child_min(h3_from_string('{parent}'), 12) "
        f"AND h3_child_max(h3_from_string('{parent}'), 12) ORDER BY c",
    )
    assert t.column("c").to_pylist() == expected


def test_rollup_by_parent_cell_per_year(toy):
    store, vectors, _ = toy
    t = run_sql(store, "SELECT h3_to_string(h3_parent(cell, 5)) AS p, year, count(*) AS n "
                       "FROM toy GROUP BY ALL ORDER BY p, year")
    expected = {}
    for cell, year in vectors:
        key = (h3.cell_to_parent(cell, 5), year)
        expected[key] = expected.get(key, 0) + 1
    assert {(r["p"], r["year"]): r["n"] for r in rows(t)} == expected


def test_year_over_year_cosine_distance_by_self_join_matches_numpy(toy):
    store, vectors, _ = toy
    t = run_sql(
        store,
        f"""SELECT h3_to_string(a.cell) AS c, array_cosine_distance(a.vector, b.vector) AS d
            FROM "{SPACE}" a JOIN "{SPACE}" b ON a.cell = b.cell AND b.year = a.year + 1
            ORDER BY c""",
    )
    assert t.num_rows == len(CELLS)
    for r in rows(t):
        a, b = vectors[(r["c"], 2021)].astype(np.float64), vectors[(r["c"], 2022)].astype(np.float64)
        assert r["d"] == pytest.approx(1 - a @ b / np.linalg.norm(a) / np.linalg.norm(b), rel=1e-5, abs=1e-6)


def test_vector_functions_on_the_array_column(toy):
    store, vectors, _ = toy
    t = run_sql(
        store,
        f"""SELECT h3_to_string(a.cell) AS c,
                   array_cosine_similarity(a.vector, b.vector) AS acs,
                   array_distance(a.vector, b.vector) AS ad,
                   array_inner_product(a.vector, b.vector) AS aip,
                   list_cosine_similarity(a.vector::FLOAT[], b.vector::FLOAT[]) AS lcs,
                   list_cosine_distance(a.vector::FLOAT[], b.vector::FLOAT[]) AS lcd,
                   list_distance(a.vector::FLOAT[], b.vector::FLOAT[]) AS ld,
                   list_inner_product(a.vector::FLOAT[], b.vector::FLOAT[]) AS lip,
                   a.vector[1] AS first, len(a.vector::FLOAT[]) AS dim
            FROM "{SPACE}" a JOIN "{SPACE}" b ON a.cell = b.cell AND a.year = 2021 AND b.year = 2022""",
    )
    assert t.num_rows == len(CELLS)
    for r in rows(t):
        a, b = vectors[(r["c"], 2021)].astype(np.float64), vectors[(r["c"], 2022)].astype(np.float64)
        cos = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
        approx = lambda x: pytest.approx(x, rel=1e-5, abs=1e-5)  # noqa: E731
        assert r["acs"] == approx(cos) and r["lcs"] == approx(cos) and r["lcd"] == approx(1 - cos)
        assert r["ad"] == approx(np.linalg.norm(a - b)) and r["ld"] == approx(np.linalg.norm(a - b))
        assert r["aip"] == approx(a @ b) and r["lip"] == approx(a @ b)
        assert r["first"] == approx(a[0]) and r["dim"] == 8


# ---------------------------------------------------------------- H3 helpers


def random_cells(seed=7, per_res=12):
    rng = np.random.default_rng(seed)
    cells = []
    for res in range(16):
        for _ in range(per_res):
            lat, lng = rng.uniform(-89, 89), rng.uniform(-180, 180)
            cells.append(h3.latlng_to_cell(lat, lng, res))
        cells.extend(h3.get_pentagons(res)[:2])
    return cells


def _values(cells):
    return "[" + ", ".join(str(h3.str_to_int(c)) for c in cells) + "]::BIGINT[]"


def test_h3_macros_match_the_h3_library_on_random_cells(tmp_path):
    cells = random_cells()
    with SqlSession(Store.open(tmp_path / "db")) as s:
        t = s.run(
            f"""SELECT c, h3_resolution(c) AS res, h3_to_string(c) AS s, h3_from_string(h3_to_string(c)) AS back,
                       list_transform(range(0, 16), lambda r: h3_parent(c, r)) AS parents
                FROM (SELECT unnest({_values(cells)}) AS c)""",
            limit=None,
        ).table
    got = rows(t)
    assert len(got) == len(cells)
    for cell, r in zip(cells, got):
        assert r["c"] == h3.str_to_int(cell)
        res = h3.get_resolution(cell)
        assert r["res"] == res
        assert r["s"] == cell and r["back"] == r["c"]
        for pr in range(16):
            want = h3.str_to_int(h3.cell_to_parent(cell, pr)) if pr <= res else None
            assert r["parents"][pr] == want, (cell, pr)


def test_h3_child_range_holds_exactly_the_descendants(tmp_path):
    cells = [c for c in random_cells(seed=3, per_res=2) if h3.get_resolution(c) <= 13]
    with SqlSession(Store.open(tmp_path / "db")) as s:
        for cell in cells:
            res = h3.get_resolution(cell)
            for r in range(res, min(res + 2, 15) + 1):
                c = h3.str_to_int(cell)
                got = s.run(f"SELECT h3_child_min({c}, {r}) AS lo, h3_child_max({c}, {r}) AS hi").table
                lo, hi = got.column("lo")[0].as_py(), got.column("hi")[0].as_py()
                kids = [h3.str_to_int(k) for k in h3.cell_to_children(cell, r)]
                assert (lo, hi) == (min(kids), max(kids)), (cell, r)
            coarser = s.run(f"SELECT h3_child_min({h3.str_to_int(cell)}, {res - 1}) AS x").table
            assert res == 0 or coarser.column("x")[0].as_py() is None


def test_h3_python_functions_center_and_latlng_to_cell(tmp_path):
    cells = random_cells(seed=11, per_res=3)
    with SqlSession(Store.open(tmp_path / "db")) as s:
        t = s.run(f"SELECT c, h3_center_lat(c) AS lat, h3_center_lng(c) AS lng, "
                  f"h3_latlng_to_cell(h3_center_lat(c), h3_center_lng(c), h3_resolution(c)::INTEGER) AS again "
                  f"FROM (SELECT unnest({_values(cells)}) AS c)", limit=None).table
        nulls = s.run("SELECT h3_center_lat(NULL::BIGINT) AS a, h3_center_lng(12345) AS b").table.to_pylist()
    for cell, r in zip(cells, rows(t)):
        lat, lng = h3.cell_to_latlng(cell)
        assert r["lat"] == pytest.approx(lat, abs=1e-12) and r["lng"] == pytest.approx(lng, abs=1e-12)
        assert r["again"] == h3.str_to_int(cell)
    assert nulls == [{"a": None, "b": None}]


# ---------------------------------------------------------------- no copy


def _scans(plan) -> list:
    out = []
    if isinstance(plan, dict):
        if plan.get("type") == "TABLE_SCAN":
            out.append(plan)
        for v in plan.values():
            out.extend(_scans(v))
    elif isinstance(plan, list):
        for v in plan:
            out.extend(_scans(v))
    return out


def _scanned_rows(store, query):
    t = run_sql(store, f"EXPLAIN (ANALYZE, FORMAT JSON) {query}")
    scans = _scans(json.loads(t.column("explain_value")[0].as_py()))
    assert scans and all(s["extra_info"]["Function"] == "PYTHON_ARROW_SCAN" for s in scans)
    return sum(s["intermediate_rows"] for s in scans), scans


def test_selective_filters_are_pushed_into_the_lance_scan(big):
    store, cells = big
    total = store.dataset(SPACE).count_rows()
    assert total == 2 * len(cells) > 2000
    n, scans = _scanned_rows(store, f'SELECT count(*) FROM "{SPACE}" WHERE year = 2022')
    assert n == len(cells) < total
    assert "year" in scans[0]["extra_info"]["Filters"]
    parent = h3.cell_to_parent(cells[0], 8)
    inside = sum(h3.cell_to_parent(c, 8) == parent for c in cells)
    where = (f"h3 BETWEEN h3_child_min(h3_from_string('{parent}'), 12) "
             f"AND h3_child_max(h3_from_string('{parent}'), 12)")
    n, _ = _scanned_rows(store, f"SELECT count(*) FROM toy WHERE {where}")
    assert n == 2 * inside < total / 10
    # and through the union view
    n, _ = _scanned_rows(store, f"SELECT count(*) FROM embeddings WHERE year = 2021 AND {where}")
    assert n == inside
    assert run_sql(store, f"SELECT count(*) AS n FROM embeddings WHERE {where}").to_pylist() == [{"n": 2 * inside}]


def test_views_are_backed_by_the_arrow_dataset(big):
    store, _ = big
    plan = run_sql(store, f'EXPLAIN SELECT key FROM "{SPACE}"').column("explain_value")[0].as_py()
    assert "PYTHON_ARROW_SCAN" in plan
    assert run_sql(store, "SELECT count(*) AS n FROM duckdb_tables()").to_pylist() == [{"n": 0}]


# ---------------------------------------------------------------- read-only

REFUSED = [
    ("INSERT INTO toy SELECT * FROM toy", "INSERT"),
    ("UPDATE toy SET year = 1999", "UPDATE"),
    ("DELETE FROM toy", "DELETE"),
    ("TRUNCATE toy", "TRUNCATE"),
    ("CREATE TABLE t AS SELECT * FROM toy", "CREATE"),
    ("CREATE VIEW v AS SELECT 1", "CREATE"),
    ("CREATE MACRO m(a) AS a", "CREATE"),
    ("DROP VIEW toy", "DROP"),
    ("ALTER VIEW toy RENAME TO t2", "ALTER"),
    ("ATTACH 'other.duckdb' AS other", "ATTACH"),
    ("DETACH other", "DETACH"),
    ("USE memory", "USE"),
    ("COPY (SELECT * FROM toy) TO 'out.csv'", "COPY"),
    ("EXPORT DATABASE 'exported'", "EXPORT"),
    ("IMPORT DATABASE 'exported'", "IMPORT"),
    ("INSTALL httpfs", "INSTALL"),
    ("LOAD httpfs", "LOAD"),
    ("SET threads = 1", "SET"),
    ("SET enable_external_access = true", "SET"),
    ("RESET threads", "RESET"),
    ("PRAGMA version", "PRAGMA"),
    ("CALL pragma_version()", "CALL"),
    ("CHECKPOINT", "CHECKPOINT"),
    ("VACUUM", "VACUUM"),
    ("BEGIN TRANSACTION", "BEGIN"),
    ("PREPARE p AS SELECT 1", "PREPARE"),
    ("SELECT 1; DROP VIEW toy", "2 statements"),
    ("SELECT 1; SELECT 2", "2 statements"),
    ("EXPLAIN ANALYZE DELETE FROM toy", "DELETE"),
    ("EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1", "CREATE"),
    ("SELECT * FROM read_csv('data.csv')", "read_csv()"),
    ("SELECT * FROM read_csv_auto('data.csv')", "read_csv_auto()"),
    ("SELECT * FROM read_parquet('data.parquet')", "read_parquet()"),
    ("SELECT * FROM parquet_scan('data.parquet')", "parquet_scan()"),
    ("SELECT * FROM read_json('data.json')", "read_json()"),
    ("SELECT * FROM read_text('data.csv')", "read_text()"),
    ("SELECT * FROM read_blob('data.csv')", "read_blob()"),
    ("SELECT * FROM glob('*')", "glob()"),
    ("SELECT * FROM sniff_csv('data.csv')", "sniff_csv()"),
    ("SELECT * FROM parquet_metadata('data.parquet')", "parquet_metadata()"),
    ("SELECT * FROM query('SELECT 1')", "query()"),
    ("SELECT count(*) FROM toy WHERE key IN (SELECT column0 FROM read_csv('data.csv'))", "read_csv()"),
    ("WITH f AS (FROM read_text('data.csv')) SELECT * FROM f", "read_text()"),
    ("SELECT nextval('seq')", "nextval()"),
    ("SELECT * FROM checkpoint()", "checkpoint()"),
    ("UPDATE EXTENSIONS", "UPDATE"),  # a statement type the Python binding does not know
    ("update extensions (httpfs)", "UPDATE"),
    ("EXPLAIN UPDATE EXTENSIONS", "UPDATE"),
]


@pytest.mark.parametrize("query,kind", REFUSED, ids=[q for q, _ in REFUSED])
def test_refused_statements_leave_the_store_unchanged(toy, tmp_path, monkeypatch, query, kind):
    store, _, _ = toy
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.csv").write_text("a\n1\n")
    before = store_snapshot(store)
    with pytest.raises(SqlError) as err:
        run_sql(store, query)
    msg = str(err.value)
    assert kind in msg and "read-only" in msg and query.strip() in msg
    assert store_snapshot(store) == before
    assert sorted(os.listdir(tmp_path)) == ["data.csv"]  # nothing written beside it


def test_files_cannot_be_read_even_as_a_bare_table_name(toy, tmp_path, monkeypatch):
    store, _, _ = toy
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret.csv").write_text("token\nhunter2\n")
    for query in ("SELECT * FROM 'secret.csv'", f"FROM '{tmp_path / 'secret.csv'}'"):
        with pytest.raises(SqlError) as err:
            run_sql(store, query)
        assert "hunter2" not in str(err.value)


def test_python_variables_are_not_readable(toy):
    store, _, _ = toy
    hidden = pa.table({"x": [1]})  # noqa: F841 - a replacement scan would find it
    with pytest.raises(SqlError, match="hidden"):
        run_sql(store, "SELECT * FROM hidden")


@pytest.mark.parametrize(
    "query",
    [
        "SHOW TABLES",
        "DESCRIBE toy",
        "SUMMARIZE SELECT year, compute_s FROM toy",
        "FROM toy SELECT year LIMIT 1",
        "VALUES (1, 'a')",
        "WITH y AS (SELECT DISTINCT year FROM toy) SELECT * FROM y",
        "EXPLAIN SELECT * FROM toy",
        "EXPLAIN ANALYZE SELECT count(*) FROM embeddings",
        "PIVOT (SELECT year, cell FROM toy) ON year IN (2021, 2022) USING count(*)",
        "SELECT * FROM range(3)",
        "  -- a comment first\n SELECT 1 AS one;  ",
    ],
)
def test_read_only_forms_are_accepted(toy, query):
    store, _, _ = toy
    assert run_sql(store, query).num_rows >= 1


def test_malformed_and_failing_sql_report_duckdb_message_and_query(toy):
    store, _, _ = toy
    with pytest.raises(SqlError) as err:
        run_sql(store, "SELEC year FROM toy")
    assert "syntax error" in str(err.value).lower() and "SELEC year FROM toy" in str(err.value)
    with pytest.raises(SqlError) as err:
        run_sql(store, "SELECT nope FROM toy")
    assert "nope" in str(err.value) and "Binder Error" in str(err.value)
    with pytest.raises(SqlError, match="no_such_table"):
        run_sql(store, "SELECT * FROM no_such_table")
    with pytest.raises(SqlError, match="no SQL statement"):
        run_sql(store, " ; ")
    with pytest.raises(SqlError, match="non-empty"):
        run_sql(store, "   ")


# ---------------------------------------------------------------- limit, timeout, versions


def test_limit_and_truncation(toy):
    store, _, _ = toy
    t = run_sql(store, "SELECT * FROM toy ORDER BY cell, year", limit=5)
    assert t.num_rows == 5 and is_truncated(t)
    full = run_sql(store, "SELECT * FROM toy ORDER BY cell, year", limit=None)
    assert full.num_rows == 74 and not is_truncated(full)
    assert t.column("key").to_pylist() == full.column("key").to_pylist()[:5]  # order is kept
    exact = sql_result(store, "SELECT * FROM toy", limit=74)
    assert exact.row_count == 74 and not exact.truncated
    assert sql_result(store, "SELECT * FROM toy", limit=73).truncated
    zero = sql_result(store, "SELECT * FROM toy", limit=0)
    assert zero.row_count == 0 and zero.truncated and "vector" in zero.table.column_names
    empty = sql_result(store, "SELECT * FROM toy WHERE year = 1900", limit=0)
    assert empty.row_count == 0 and not empty.truncated
    # a limit on a huge result stops early instead of materialising it
    start = time.perf_counter()
    huge = sql_result(store, "SELECT * FROM range(10000000000)", limit=10)
    assert huge.row_count == 10 and huge.truncated and time.perf_counter() - start < 10
    for bad in (-1, 1.5, "10", True):
        with pytest.raises(SqlError, match="limit"):
            run_sql(store, "SELECT 1", limit=bad)


def test_timeout_interrupts_a_long_query(toy):
    store, _, _ = toy
    with SqlSession(store) as session:
        start = time.perf_counter()
        with pytest.raises(SqlError, match="exceeded the time limit of 0.5 s"):
            session.run("SELECT count(*) FROM range(1000000000) a, range(1000000000) b", timeout_s=0.5)
        assert time.perf_counter() - start < 10
        # the connection is still usable, and a fast query is not interrupted later
        assert session.run("SELECT 42 AS x", timeout_s=0.5).table.to_pylist() == [{"x": 42}]
        time.sleep(0.6)
        assert session.run("SELECT 43 AS x", timeout_s=5).table.to_pylist() == [{"x": 43}]
    with pytest.raises(SqlError, match="timeout_s"):
        run_sql(store, "SELECT 1", timeout_s=0)


def test_version_reads_an_older_snapshot(store):
    first = [toy_embedding(toy_request(c, 2021), seed=i) for i, c in enumerate(CELLS[:3])]
    store.put_many(first)
    v1 = store.dataset(SPACE).version
    store.put_many([toy_embedding(toy_request(c, 2022), seed=i) for i, c in enumerate(CELLS[:4])])
    assert run_sql(store, "SELECT count(*) AS n FROM toy").to_pylist() == [{"n": 7}]
    assert run_sql(store, "SELECT count(*) AS n FROM toy", version=v1).to_pylist() == [{"n": 3}]
    assert run_sql(store, "SELECT count(*) AS n FROM embeddings", version={SPACE: v1}).to_pylist() == [{"n": 3}]
    with pytest.raises(SqlError, match="no version"):
        run_sql(store, "SELECT 1", version=999)
    with pytest.raises(SqlError, match="nope"):
        run_sql(store, "SELECT 1", version={"nope": 1})


def test_an_empty_store_has_the_embeddings_and_spaces_views(store):
    assert run_sql(store, "SELECT count(*) AS n FROM embeddings").to_pylist() == [{"n": 0}]
    assert run_sql(store, "SELECT count(*) AS n FROM spaces").to_pylist() == [{"n": 0}]
    cols = run_sql(store, "SELECT * FROM embeddings").column_names
    assert cols[0] == "space" and "vector" not in cols and "h3" in cols


def test_no_model_alias_when_two_revisions_are_held(store):
    a = toy_request(CELLS[0], 2021)
    b = dataclasses.replace(a, revision="toy-v2", canonical="", key="")
    store.put_many([toy_embedding(a, 1), toy_embedding(b, 2)])
    with SqlSession(store) as session:
        assert "toy" not in session.views
        assert set(session.views) >= {SPACE, "toy__toy-v2", "embeddings"}
        t = session.run("SELECT space, revision FROM embeddings ORDER BY space").table
    assert rows(t) == [{"space": SPACE, "revision": "toy-v1"}, {"space": "toy__toy-v2", "revision": "toy-v2"}]


# ---------------------------------------------------------------- the worked analytics of docs/sql.md


def worked_queries() -> dict:
    text = DOCS.read_text(encoding="utf-8")
    blocks = re.findall(r"```sql\n(.*?)```", text, re.DOTALL)
    out = {}
    for block in blocks:
        m = re.search(r"-- worked: (\S+)", block)
        if m:
            out[m.group(1)] = block.replace('"spectral__spectral-v1"', f'"{SPACE}"')
    return out


def test_docs_hold_the_worked_analytics():
    assert set(worked_queries()) == {"mean-per-parent", "mean-per-parent-unnest", "year-over-year", "cost"}


def _means_by_parent(vectors, res):
    groups = {}
    for (cell, year), v in vectors.items():
        groups.setdefault((h3.cell_to_parent(cell, res), year), []).append(v.astype(np.float64))
    return {k: np.mean(v, axis=0) for k, v in groups.items()}


@pytest.mark.parametrize("name", ["mean-per-parent", "mean-per-parent-unnest"])
def test_worked_mean_embedding_per_parent_and_year(toy, name):
    store, vectors, _ = toy
    t = run_sql(store, worked_queries()[name])
    expected = _means_by_parent(vectors, 7)
    got = rows(t)
    assert len(got) == len(expected) > 1
    assert [(r["parent"], r["year"]) for r in got] == sorted(expected)
    for r in got:
        np.testing.assert_allclose(r["mean_vector"], expected[(r["parent"], r["year"])], rtol=1e-6, atol=1e-7)
        if "n" in r:
            assert r["n"] == sum(1 for cell, y in vectors if y == r["year"] and h3.cell_to_parent(cell, 7) == r["parent"])


def test_worked_year_over_year_change(toy):
    store, vectors, _ = toy
    got = rows(run_sql(store, worked_queries()["year-over-year"]))
    assert len(got) == len(CELLS)
    dists = []
    for r in got:
        assert (r["year"], r["next_year"]) == (2021, 2022)
        a, b = vectors[(r["cell"], 2021)].astype(np.float64), vectors[(r["cell"], 2022)].astype(np.float64)
        cos = 1 - a @ b / np.linalg.norm(a) / np.linalg.norm(b)
        assert r["cosine_distance"] == pytest.approx(cos, rel=1e-5, abs=1e-6)
        assert r["l2_distance"] == pytest.approx(np.linalg.norm(a - b), rel=1e-5)
        dists.append(r["cosine_distance"])
    assert dists == sorted(dists, reverse=True)


def test_worked_cache_and_cost_report(toy):
    store, _, stored = toy
    got = {r["space"]: r for r in rows(run_sql(store, worked_queries()["cost"]))}
    assert set(got) == {SPACE, YEAR_SPACE}
    for space, r in got.items():
        mine = [e for e in stored if e.space == space]
        assert r["rows"] == len(mine) and r["grid_rows"] == 0
        assert r["compute_seconds"] == pytest.approx(round(sum(e.compute_s for e in mine), 3))
        assert r["places"] == len({e.request.spatial.cell for e in mine})
    assert str(got[SPACE]["first_day"]) == "2021-01-01" and str(got[SPACE]["end_day"]) == "2023-01-01"


# ---------------------------------------------------------------- CLI


def cli(store, *args):
    return CliRunner().invoke(main, ["--db", store.uri, "sql", *args], catch_exceptions=False)


def test_cli_json_formats(toy):
    store, _, _ = toy
    query = "SELECT h3_to_string(cell) AS c, year, vector FROM toy ORDER BY c, year"
    res = cli(store, query, "--json", "--limit", "3")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["columns"] == ["c", "year", "vector"]
    assert doc["row_count"] == 3 and doc["truncated"] is True and len(doc["rows"]) == 3
    assert doc["rows"][0][0] == sorted(CELLS)[0] and len(doc["rows"][0][2]) == 8
    before = cli(store, "--json", query, "--limit", "3")  # --json is also taken before the command's arguments
    assert json.loads(before.stdout) == doc
    assert cli(store, query, "--format", "json").exit_code == 2  # one spelling of JSON output: --json
    whole = json.loads(cli(store, "SELECT space, min(created_at) AS t, sum(compute_s) AS s FROM embeddings "
                                  "GROUP BY space ORDER BY space", "--json").stdout)
    assert whole["truncated"] is False and whole["row_count"] == 2
    assert whole["rows"][0][0] == SPACE and whole["rows"][0][1].startswith("20")


def test_cli_table_and_csv(toy):
    store, _, _ = toy
    res = cli(store, "SELECT year, count(*) AS n FROM toy GROUP BY year ORDER BY year")
    assert res.exit_code == 0
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["year", "n"] and set(lines[1]) <= {"-", " "}
    assert [line.split() for line in lines[2:]] == [["2021", "37"], ["2022", "37"]]
    res = cli(store, "SELECT year, count(*) AS n FROM toy GROUP BY year ORDER BY year", "--format", "csv")
    assert res.stdout == "year,n\n2021,37\n2022,37\n"
    res = cli(store, "SELECT key, vector FROM toy", "--format", "csv", "--limit", "2")
    assert len(res.stdout.splitlines()) == 3 and "truncated" in res.stderr
    parsed = list(csv.reader(io.StringIO(res.stdout)))
    assert parsed[0] == ["key", "vector"] and len(json.loads(parsed[1][1])) == 8
    res = cli(store, "SELECT * FROM toy", "--limit", "0", "--format", "csv")
    assert len(res.stdout.splitlines()) == 75 and "truncated" not in res.stderr


def test_cli_refuses_writes_with_exit_code_2(toy):
    store, _, _ = toy
    before = store_snapshot(store)
    res = cli(store, "DELETE FROM toy")
    assert res.exit_code == 2
    assert "read-only" in res.stderr and "DELETE" in res.stderr and "Traceback" not in res.output
    res = cli(store, "SELEC 1")
    assert res.exit_code == 2 and "syntax error" in res.stderr.lower()
    assert store_snapshot(store) == before


# ---------------------------------------------------------------- values JSON cannot carry as dates

BEYOND_PYTHON = ("SELECT 'infinity'::DATE AS d, '-infinity'::TIMESTAMP AS t, '294247-01-10'::DATE AS x, "
                 "'5877642-06-25 (BC)'::DATE AS bc, 'infinity'::TIMESTAMPTZ AS tz, "
                 "'2023-01-01 00:00:00.1234567'::TIMESTAMP_NS AS ns, DATE '2023-05-06' AS ok")
BEYOND_TEXT = ["infinity", "-infinity", "294247-01-10", "5877642-06-25 (BC)", "infinity",
               "2023-01-01 00:00:00.1234567", "2023-05-06"]


def test_dates_python_cannot_hold_come_as_duckdbs_text(toy):
    store, _, _ = toy
    assert sql_result(store, BEYOND_PYTHON).to_json()["rows"] == [BEYOND_TEXT]
    nested = sql_result(store, "SELECT [DATE 'infinity', DATE '2020-01-02'] AS l, {'a': '-infinity'::DATE} AS s, "
                               "MAP {'infinity'::DATE: 1} AS m").to_json()["rows"][0]
    assert nested == [["infinity", "2020-01-02"], {"a": "-infinity"}, [["infinity", 1]]]


def test_out_of_range_text_matches_duckdbs_own_on_random_values(toy):
    from rsembed_store.query.sql_values import column_values

    store, _, _ = toy
    rng = np.random.default_rng(17)
    days = [int(d) for d in rng.integers(-(2**31) + 2, 2**31 - 2, 400)]
    micros = [int(u) for u in rng.integers(-(2**63) + 2, 2**63 - 2, 400)] + [0, 1, 500_000, 86_400_000_000 - 1]
    query = (f"SELECT DATE '1970-01-01' + d AS v, (DATE '1970-01-01' + d)::VARCHAR AS text "
             f"FROM unnest({days}::INTEGER[]) AS u(d) UNION ALL BY NAME "
             f"SELECT make_timestamp(u)::DATE AS v, make_timestamp(u)::DATE::VARCHAR AS text "
             f"FROM unnest({micros}::BIGINT[]) AS w(u)")
    table = run_sql(store, query, limit=None)
    for value, text in zip(column_values(table.column("v")), table.column("text").to_pylist()):
        assert (value if isinstance(value, str) else value.isoformat()) == text
    stamps = run_sql(store, f"SELECT make_timestamp(u) AS v, make_timestamp(u)::VARCHAR AS text "
                            f"FROM unnest({micros}::BIGINT[]) AS w(u)", limit=None)
    for value, text in zip(column_values(stamps.column("v")), stamps.column("text").to_pylist()):
        if isinstance(value, str):  # outside Python's years: DuckDB's text exactly
            assert value == text
        else:  # Python keeps trailing zeros of the fraction ('.500000' for DuckDB's '.5')
            assert value.isoformat(sep=" ").startswith(text)


def test_cli_prints_dates_python_cannot_hold(toy):
    store, _, _ = toy
    doc = json.loads(cli(store, BEYOND_PYTHON, "--json").stdout)
    assert doc["rows"] == [BEYOND_TEXT]
    table = cli(store, BEYOND_PYTHON)
    assert table.exit_code == 0 and "294247-01-10" in table.stdout and "(BC)" in table.stdout
    rows = list(csv.reader(io.StringIO(cli(store, BEYOND_PYTHON, "--format", "csv").stdout)))
    assert rows[1] == BEYOND_TEXT
