"""The rsembed-store command line, in process (CliRunner) and once as a real subprocess."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from rsembed_store import Store
from rsembed_store.cli import main


def run(*args, db=None):
    argv = (["--db", str(db)] if db else []) + list(args)
    return CliRunner().invoke(main, argv, catch_exceptions=False)


def test_help_lists_every_command():
    res = run("--help")
    assert res.exit_code == 0
    for name in ("stats", "models", "ingest", "get", "demo"):
        assert name in res.output


def test_models_json_comes_from_the_registry():
    from rsembed_store.registry import model_info, model_names

    res = run("models", "--json")
    assert res.exit_code == 0
    data = {m["id"]: m for m in json.loads(res.output)}
    for name in ("spectral", "mosaiks"):
        assert data[name] == model_info(name).to_dict()
    assert set(model_names()) <= set(data)


def test_stats_on_an_empty_store(tmp_path):
    Store.open(tmp_path / "db")
    res = run("stats", "--json", db=tmp_path / "db")
    assert res.exit_code == 0
    assert json.loads(res.output) == {"uri": str(tmp_path / "db"), "spaces": [], "total_rows": 0}


def test_db_from_environment(tmp_path, monkeypatch):
    Store.open(tmp_path / "envdb")
    monkeypatch.setenv("RSEMBED_STORE_DB", str(tmp_path / "envdb"))
    res = run("stats", "--json")
    assert json.loads(res.output)["uri"] == str(tmp_path / "envdb")


@pytest.mark.parametrize("args", [
    ["stats"],
    ["stats", "--json"],
    ["sql", "SELECT 1"],
    ["search", "-m", "spectral", "--like-key", "0" * 64],
    ["search", "-m", "spectral", "--like-point", "11,46", "--buffer-m", "100", "--year", "2023"],
    ["search", "-m", "spectral", "--like-point", "11,46", "--buffer-m", "100", "--year", "2023", "--compute"],
    ["maintain"],
    ["get", "-m", "spectral", "--point", "11,46", "--buffer-m", "100", "--year", "2023", "--no-compute"],
    ["serve", "--request", "GET", "/stats"],
    ["serve", "--request", "POST", "/sql", "--body", '{"query": "SELECT 1"}'],
])
def test_read_commands_on_a_missing_store_say_so_and_create_nothing(tmp_path, args):
    db = tmp_path / "typo"
    res = CliRunner().invoke(main, ["--db", str(db)] + args)
    assert res.exit_code == 2, res.output
    assert f"no store at {str(db)!r} (the directory does not exist)" in res.output
    assert f"rsembed-store --db {db} ingest" in res.output and "demo" in res.output  # how to make one
    assert "Traceback" not in res.output
    assert not db.exists()
    (tmp_path / "empty").mkdir()  # a directory that is not a store is no store either
    res = CliRunner().invoke(main, ["--db", str(tmp_path / "empty")] + args)
    assert res.exit_code == 2 and "holds no rsembed-store catalog" in res.output
    assert list((tmp_path / "empty").iterdir()) == []


def test_a_dry_run_reads_and_creates_no_store(tmp_path):
    db = tmp_path / "db"
    res = run("ingest", "-m", "spectral", "--region", "10.99,45.99,11.01,46.01", "--year", "2023", "--dry-run", db=db)
    assert res.exit_code == 0, res.output
    assert "no store at" in res.output and "to compute" in res.output
    assert not db.exists()


def test_ingest_dry_run_then_ingest_then_get(tmp_path, small_scene):
    out, manifest = small_scene
    w, s, e, n = manifest["bounds_lonlat"]
    bbox = f"{w + 0.003},{s + 0.003},{e - 0.003},{n - 0.003}"
    db = tmp_path / "db"
    source = f"s2-l2a={out / 'scenes'}"
    dry = run("ingest", "-m", "spectral", "--region", bbox, "--h3-res", "9", "--year", "2023", "--dry-run", "--json", db=db)
    assert dry.exit_code == 0, dry.output
    plan = json.loads(dry.output)["plan"]
    assert plan["cached"] == 0 and plan["to_compute"] == plan["n_requests"] > 0
    res = run("ingest", "-m", "spectral", "--region", bbox, "--year", "2023", "--source", source, "--json", db=db)
    summary = json.loads(res.output)["summary"]
    assert summary["computed"] == plan["n_requests"] and summary["failed"] == 0
    again = json.loads(run("ingest", "-m", "spectral", "--region", bbox, "--year", "2023", "--dry-run", "--json", db=db).output)
    assert again["plan"]["cached"] == plan["n_requests"]
    lon, lat = (w + e) / 2, (s + n) / 2
    got = run("get", "-m", "spectral", "--point", f"{lon},{lat}", "--buffer-m", "100", "--year", "2023",
              "--source", source, "--json", db=db)
    body = json.loads(got.output)
    assert body["found"] and body["cached"] is False and len(body["vector"]) == body["dim"]
    miss = run("get", "-m", "spectral", "--point", f"{lon},{lat}", "--buffer-m", "90", "--year", "2023",
               "--no-compute", "--json", db=db)
    assert miss.exit_code == 1 and json.loads(miss.output)["found"] is False


def test_modality_option_reaches_the_plan_and_the_key(tmp_path):
    from rsembed_store.keys import Request, resolve
    from rsembed_store.specs import H3Cell, SensorSpec, TemporalSpec

    db = tmp_path / "db"
    bbox = "10.99,45.99,11.01,46.01"
    plain = json.loads(run("ingest", "-m", "toymm", "--region", bbox, "--h3-res", "8", "--year", "2023",
                           "--dry-run", "--json", "--save-plan", str(tmp_path / "plain.json"), db=db).output)
    with_s1 = json.loads(run("ingest", "-m", "toymm", "--region", bbox, "--h3-res", "8", "--year", "2023",
                             "--modality", "s1", "--dry-run", "--json", "--save-plan", str(tmp_path / "s1.json"),
                             db=db).output)
    assert plain["plan"]["n_requests"] == with_s1["plan"]["n_requests"] > 0
    from rsembed_store.ingest.plan import Plan

    s1_plan, plain_plan = Plan.load(tmp_path / "s1.json"), Plan.load(tmp_path / "plain.json")
    assert all(dict(r.modalities) == {"s1": SensorSpec("s1-grd", ("VV", "VH"))} for r in s1_plan.requests)
    assert all(r.modalities is None for r in plain_plan.requests)
    assert not {r.key for r in s1_plan.requests} & {r.key for r in plain_plan.requests}
    assert not db.exists()  # dry runs only read

    Store.open(db)
    cell = "881f8d4d6bfffff"
    res = run("get", "-m", "toymm", "--h3", cell, "--year", "2023", "--modality", "s1", "--no-compute", "--json",
              db=db)
    key = json.loads(res.output)["key"]
    assert key == resolve(Request("toymm", H3Cell(cell), TemporalSpec.year(2023), modalities=["s1"])).key
    assert key != resolve(Request("toymm", H3Cell(cell), TemporalSpec.year(2023))).key


@pytest.mark.parametrize(
    "args, words",
    [
        (["ingest", "-m", "spectral", "--region", "1,2,3", "--year", "2023"], ["--region", "'1,2,3'"]),
        (["ingest", "-m", "spectral", "--region", "3,2,1,4", "--year", "2023"], ["minlon < maxlon"]),
        (["ingest", "-m", "spectral", "--region", "1,2,3,4"], ["time window"]),
        (["ingest", "-m", "nope", "--region", "1,2,3,4", "--year", "2023"], ["'nope'", "spectral"]),
        (["ingest", "-m", "spectral", "--region", "1,2,3,4", "--time", "2023-05-01/2023-01-01", "--dry-run"], ["start < end"]),
        (["ingest", "-m", "spectral", "--region", "1,2,3,4", "--year", "2023", "--source", "nodir"], ["NAME=DIR"]),
        (["get", "-m", "spectral", "--point", "200,1", "--buffer-m", "5", "--year", "2023"], ["lon", "200"]),
        (["get", "-m", "spectral", "--h3", "zz", "--year", "2023"], ["'zz'"]),
        (["get", "-m", "toymm", "--h3", "881f8d4d6bfffff", "--year", "2023", "--modality", "radar"],
         ["'radar'", "['s1']"]),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(tmp_path, args, words):
    res = CliRunner().invoke(main, ["--db", str(tmp_path / "db")] + args)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    for w in words:
        assert w in res.output
    assert not (tmp_path / "db").exists() or run("stats", "--json", db=tmp_path / "db").output.count('"space"') == 0


def test_console_entry_point_runs_as_a_process(tmp_path):
    Store.open(tmp_path / "db")
    proc = subprocess.run(
        [sys.executable, "-m", "rsembed_store", "--db", str(tmp_path / "db"), "stats", "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["total_rows"] == 0


def test_demo_small_runs_end_to_end(tmp_path):
    res = run("demo", "--workdir", str(tmp_path / "demo"), "--size-px", "256", "--json", db=tmp_path / "db")
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    runs = {(r["model"], r["run"]): r for r in report["runs"]}
    for model in ("spectral", "mosaiks"):
        first, again = runs[(model, "first")], runs[(model, "again")]
        assert first["computed"] == first["requested"] > 0 and first["failed"] == 0
        assert again["cached"] == again["requested"] and again["computed"] == 0
    # search finds the same kind of place far more often than chance (1 in 6 classes)
    for result in report["search"]:
        assert result["queries"] >= 6 and result["precision_at_k"] >= 0.5, result["by_class"]
    import warnings

    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(report["map"]) as png:
            assert png.driver == "PNG" and png.count == 3 and png.width > 100
    rows = report["sql"]["rows"]
    assert rows and sum(r["cells"] for r in rows) <= runs[("spectral", "first")]["requested"]


# ---------------------------------------------------------------- exit codes and early checks

def _scene_args(small_scene):
    out, manifest = small_scene
    w, s, e, n = manifest["bounds_lonlat"]
    return ["-m", "spectral", "--region", f"{w + 0.003},{s + 0.003},{e - 0.003},{n - 0.003}", "--h3-res", "8",
            "--source", f"s2-l2a={out / 'scenes'}"]


def test_ingest_exits_4_when_every_request_failed_and_3_when_some_did(tmp_path, small_scene):
    db = tmp_path / "db"
    args = _scene_args(small_scene)
    none = run("ingest", *args, "--time", "2019-01-01/2019-02-01", db=db)  # no imagery in that window
    assert none.exit_code == 4, none.output
    assert "0 computed" in none.output and "every request to compute failed" in none.output
    assert "--allow-failures" in none.output
    some = run("ingest", *args, "--year", "2023", "--time", "2019-01-01/2019-02-01", "--json", db=db)
    summary = json.loads(some.stdout)["summary"]
    assert some.exit_code == 3 and summary["computed"] > 0 and summary["failed"] > 0
    # what is stored is cached next time; the window without imagery fails again: still 4
    again = run("ingest", *args, "--year", "2023", "--time", "2019-01-01/2019-02-01", db=db)
    assert again.exit_code == 4 and "0 computed" in again.output
    allowed = run("ingest", *args, "--time", "2019-01-01/2019-02-01", "--allow-failures", "--json", db=db)
    assert allowed.exit_code == 0 and json.loads(allowed.stdout)["summary"]["failed"] > 0
    done = run("ingest", *args, "--year", "2023", db=db)
    assert done.exit_code == 0 and "0 failed" in done.output


def test_ingest_flags_set_how_often_answers_are_written(tmp_path, small_scene):
    res = run("ingest", *_scene_args(small_scene), "--year", "2023", "--write-batch", "2", "--json",
              db=tmp_path / "db")
    summary = json.loads(res.stdout)["summary"]
    assert res.exit_code == 0 and summary["computed"] >= 4
    assert summary["calls"]["store.writes"] >= summary["computed"] // 4  # every chunk of >= 2 answers
    for bad, words in ((["--flush-seconds", "0"], ["--flush-seconds", "0"]),
                       (["--write-batch", "0"], ["--write-batch", "0"])):
        res = run("ingest", *_scene_args(small_scene), "--year", "2023", *bad, db=tmp_path / "db")
        assert res.exit_code == 2 and all(w in res.output for w in words)


@pytest.mark.parametrize("source, words", [
    ("s2-l2a={missing}", ["does not exist", "'s2-l2a'"]),
    ("s2-l2a={file}", ["is not a directory"]),
    ("s2={scenes}", ["'s2-l2a'", "--source s2-l2a=DIR", "['s2']"]),
])
def test_a_bad_source_is_refused_before_planning(tmp_path, monkeypatch, small_scene, source, words):
    import rsembed_store.ingest.plan as plan_module

    def no_planning(*args, **kwargs):
        raise AssertionError("planned before the options were checked")

    monkeypatch.setattr(plan_module, "plan", no_planning)
    (tmp_path / "file").write_text("x")
    source = source.format(missing=tmp_path / "missing", file=tmp_path / "file", scenes=small_scene[0] / "scenes")
    # 2 x 2 degrees at res 9: about 24 s of planning before the source was ever looked at
    res = CliRunner().invoke(main, ["--db", str(tmp_path / "db"), "ingest", "-m", "spectral", "--region",
                                    "10,45,12,47", "--year", "2023", "--source", source])
    assert res.exit_code == 2, res.output
    assert all(w in res.output for w in words), res.output
    assert not (tmp_path / "db").exists()


def test_get_exits_4_when_the_computation_fails_and_checks_the_source_first(tmp_path, small_scene):
    out, manifest = small_scene
    w, s, e, n = manifest["bounds_lonlat"]
    point = ["get", "-m", "spectral", "--point", f"{(w + e) / 2},{(s + n) / 2}", "--buffer-m", "100"]
    db = tmp_path / "db"
    missing = run(*point, "--year", "2023", "--source", f"s2-l2a={tmp_path / 'nope'}", db=db)
    assert missing.exit_code == 2 and "does not exist" in missing.output and not db.exists()
    failed = run(*point, "--time", "2019-01-01/2019-02-01", "--source", f"s2-l2a={out / 'scenes'}", db=db)
    assert failed.exit_code == 4 and "the request failed" in failed.output and "2019-01-01" in failed.output


def test_help_and_docs_document_the_exit_codes_and_the_write_settings():
    from pathlib import Path

    text = run("ingest", "--help").output
    for words in ("3  some requests failed", "4  every request that had to be computed failed", "--allow-failures",
                  "--flush-seconds", "--write-batch", "kill -9"):
        assert words in text, words
    assert "4 the computation" in run("get", "--help").output
    assert "3  some requests failed" in run("--help").output
    docs = (Path(__file__).resolve().parents[1] / "docs" / "ingest.md").read_text(encoding="utf-8")
    for words in ("--flush-seconds", "--write-batch", "--allow-failures", '{"ingest": {"flush_seconds": 10}}',
                  "| 3 | some requests failed", "| 4 | every request that had to be computed failed",
                  "no store at PATH", "NoStoreError"):
        assert words in docs, words


def test_serve_request_creates_a_store_only_for_a_write(tmp_path, small_scene):
    pytest.importorskip("fastapi")
    out, manifest = small_scene
    w, s, e, n = manifest["bounds_lonlat"]
    db = tmp_path / "db"
    body = json.dumps({"request": {"model": "spectral", "temporal": {"mode": "year", "year": 2023},
                                   "spatial": {"type": "PointBuffer", "lon": (w + e) / 2, "lat": (s + n) / 2,
                                               "buffer_m": 100}}})
    read = run("serve", "--request", "POST", "/embeddings/lookup", "--body", '{"items": []}', db=db)
    assert read.exit_code == 2 and not db.exists()
    wrote = run("serve", "--token", "t", "--source", f"s2-l2a={out / 'scenes'}", "--request", "POST", "/embeddings",
                "--body", body, db=db)
    assert wrote.exit_code == 0, wrote.output
    assert json.loads(run("stats", "--json", db=db).output)["total_rows"] == 1


@pytest.mark.parametrize("argv, stdin", [
    (["sql", "-- a leading comment\nSELECT 41 + 1 AS answer", "--json"], None),
    (["sql", "--json", "--", "-- after the separator\nSELECT 41 + 1 AS answer"], None),
    (["sql", "--limit", "5", "-", "--json"], "-- from stdin, as with < file.sql\nSELECT 41 + 1 AS answer;\n"),
])
def test_sql_query_may_start_with_a_comment(tmp_path, argv, stdin):
    Store.open(tmp_path / "db")
    res = CliRunner().invoke(main, ["--db", str(tmp_path / "db")] + argv, input=stdin)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["rows"] == [[42]]


def test_sql_unknown_option_is_still_refused(tmp_path):
    Store.open(tmp_path / "db")
    res = CliRunner().invoke(main, ["--db", str(tmp_path / "db"), "sql", "--limt", "5", "SELECT 1"])
    assert res.exit_code == 2 and "--limt" in res.output
