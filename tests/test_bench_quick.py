"""CI's smoke run of the benchmark: ``python -m scripts.bench --quick`` must still work end to end.

Not a timing test: the figures only have to be sane (recall in [0, 1],
latencies above zero, a cache hit faster than recomputing), every section must
be present, and the markdown must be what the renderer makes of the JSON.
FAISS is optional (the ``bench`` extra): the full quick run checks whichever
state this machine is in, and a second run hides faiss to check that its rows
then say "skipped" instead of failing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("retrieval", "search", "filtered", "serving", "ingest", "sql")


def bench(args, cwd=ROOT, env_path=None, timeout=600):
    import os

    env = dict(os.environ)
    if env_path:
        env["PYTHONPATH"] = os.pathsep.join([str(env_path), str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "scripts.bench", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def faiss_installed() -> bool:
    try:
        import faiss  # noqa: F401  (only whether it imports)
    except ImportError:
        return False
    return True


def check_latency(fig: dict, where: str) -> None:
    assert 0 < fig["p50_ms"] <= fig["p99_ms"], (where, fig)
    assert fig["qps"] > 0, (where, fig)


def check_search_engine(fig: dict, where: str) -> None:
    assert 0.0 <= fig["recall_at_10"] <= 1.0, (where, fig)
    check_latency(fig, where)


@pytest.mark.slow
def test_quick_run_reports_every_section(tmp_path):
    proc = bench(["--quick", "--out", str(tmp_path)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["mode"] == "quick"
    assert set(report["sections"]) == set(SECTIONS)
    for name, sec in report["sections"].items():
        assert "error" not in sec, (name, sec)
    m = report["machine"]
    assert m["cpus"] >= 1 and m["mem_total_gib"] > 0 and m["versions"]["lancedb"] and m["versions"]["duckdb"]

    ret = report["sections"]["retrieval"]
    assert set(ret["featurisers"]) == {"spectral", "mosaiks"}
    for model, f in ret["featurisers"].items():
        check_latency(f["store_get_hit"], model)
        check_latency(f["recompute"], model)
        assert f["speedup_p50"] > 1, (model, f)  # a hit must beat fetching imagery and featurising
    for path in ("serving", "lance"):
        big = ret["big_space"][path]
        check_latency(big["store_get_hit"], f"get ({path})")
        check_latency(big["lookup_many_1"], f"lookup_many ({path})")
        assert big["lookup_many_batch"]["median_ms"] > 0

    (point,) = report["sections"]["search"]["points"]
    assert (point["rows"], point["dim"]) == (20_000, 64)
    for engine in ("store", "store_lance", "store_exact_scan", "numpy_exact", "duckdb_brute"):
        check_search_engine(point[engine], engine)
    # the exact engines must agree with the exact answer; an index may miss a little
    for engine in ("store_exact_scan", "numpy_exact", "duckdb_brute"):
        assert point[engine]["recall_at_10"] == 1.0, engine
    assert point["store"]["recall_at_10"] >= 0.95 and point["store"]["path"] == "serving"
    assert point["store"]["index_bytes"] > point["store"]["raw_vector_bytes"] > 0
    assert point["store_lance"]["recall_at_10"] >= 0.8
    assert point["store_lance"]["disk_bytes"] > point["store_lance"]["index_bytes"] > 0
    for engine in ("faiss_hnsw", "faiss_ivfpq"):
        if faiss_installed():
            check_search_engine(point[engine], engine)
            assert point[engine]["index_bytes"] > 0 and point[engine]["build_s"] > 0
        else:
            assert "faiss" in point[engine]["skipped"]

    filt = report["sections"]["filtered"]
    assert 0.02 <= filt["share"] <= 0.08, filt["share"]  # "about 5 % of the rows"
    for engine in ("store_bbox", "store_lance_bbox", "store_polygon", "numpy_exact", "duckdb_brute"):
        check_search_engine(filt[engine], engine)
    assert filt["duckdb_brute"]["recall_at_10"] == 1.0
    assert [f["share_asked"] for f in filt["by_share"]] == [0.01, 0.5]
    for f in filt["by_share"]:
        check_search_engine(f["store"], f"store at {f['share']}")
        assert f["store"]["recall_at_10"] >= 0.95, f

    srv = report["sections"]["serving"]
    assert srv["memory"]["tier_bytes"] > srv["memory"]["raw_vector_bytes"] > 0
    assert srv["search_many"]["queries_per_s"] > 0 and srv["search_many"]["recall_at_10"] >= 0.95
    assert srv["restart"]["tier_source"] == "loaded" and srv["restart"]["median_s"] > 0
    assert [t["threads"] for t in srv["threads"]] == [1, 4]
    assert all(t["errors"] == 0 and t["calls"] > 0 for t in srv["threads"]), srv["threads"]
    assert [c["clients"] for c in srv["http"]["clients"]] == [1, 4]
    for figs in srv["http"]["by_workers"].values():
        assert all(c["failed_all_runs"] == 0 for c in figs), srv["http"]
    assert srv["bulk_write"]["rows_per_s"] > 0
    assert srv["disk"]["bytes_after"] <= srv["disk"]["bytes_before"]

    models = report["sections"]["ingest"]["models"]
    assert set(models) == {"spectral", "mosaiks", "gse"}
    for model, f in models.items():
        assert f["requests"] > 0 and f["first_rps"] > 0 and f["cached_rps"] > 0, model
    for model in ("spectral", "mosaiks"):  # fetching and featurising ~30 requests takes ~1 s; a cached re-run ms
        assert models[model]["cached_rps"] > models[model]["first_rps"], models[model]

    sql = report["sections"]["sql"]
    assert sql["rows"] == 20_000 and len(sql["queries"]) == 4
    for q in sql["queries"].values():
        assert q["groups"] > 0 and q["median_s"] > 0

    # the markdown is the renderer's output for this very JSON
    rendered = subprocess.run([sys.executable, "-m", "scripts.bench.render", str(tmp_path / "report.json")],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stdout == (tmp_path / "report.md").read_text()
    assert "| rsembed_store, serving tier |" in rendered.stdout
    assert "| rsembed_store, Lance path (maintained index) |" in rendered.stdout
    check_page(tmp_path, rendered.stdout)


def check_page(tmp_path, tables: str) -> None:
    """``render --page`` puts the tables between the markers of docs/benchmarks.md and leaves the rest alone."""
    from scripts.bench.render import BEGIN, END

    page = tmp_path / "benchmarks.md"
    original = (ROOT / "docs" / "benchmarks.md").read_text()
    page.write_text(original)
    done = subprocess.run([sys.executable, "-m", "scripts.bench.render", str(tmp_path / "report.json"), "--page",
                           str(page)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    new = page.read_text()
    head, rest = new.split(BEGIN)
    block, tail = rest.split(END)
    assert block.strip() == tables.strip()
    assert head == original.split(BEGIN)[0] and tail == original.split(END)[1]


def test_render_refuses_a_page_without_markers(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# no markers here\n")
    report = tmp_path / "report.json"
    report.write_text("{}")
    done = subprocess.run([sys.executable, "-m", "scripts.bench.render", str(report), "--page", str(page)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "report:begin" in done.stderr and str(page) in done.stderr
    assert page.read_text() == "# no markers here\n"


@pytest.mark.slow
def test_without_faiss_the_faiss_rows_are_skipped(tmp_path):
    hide = tmp_path / "hide"
    (hide / "faiss").mkdir(parents=True)
    (hide / "faiss" / "__init__.py").write_text("raise ImportError('faiss hidden by the test')\n")
    out = tmp_path / "out"
    proc = bench(["--quick", "--only", "search", "--out", str(out)], env_path=hide)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert set(report["sections"]) == {"search"}
    (point,) = report["sections"]["search"]["points"]
    for engine in ("faiss_hnsw", "faiss_ivfpq"):
        assert "not installed" in point[engine]["skipped"]
    check_search_engine(point["store"], "store")
    assert "skipped: faiss is not installed" in (out / "report.md").read_text()


def test_unknown_section_is_refused_and_nothing_is_written(tmp_path):
    out = tmp_path / "out"
    proc = bench(["--quick", "--only", "searhc", "--out", str(out)], timeout=120)
    assert proc.returncode == 2
    assert "searhc" in proc.stderr and "retrieval" in proc.stderr
    assert not out.exists()
