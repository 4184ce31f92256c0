"""The rsembed-store command line, in process (CliRunner) and once as a real subprocess."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

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
    res = run("stats", "--json", db=tmp_path / "db")
    assert res.exit_code == 0
    assert json.loads(res.output) == {"uri": str(tmp_path / "db"), "spaces": [], "total_rows": 0}


def test_db_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RSEMBED_STORE_DB", str(tmp_path / "envdb"))
    res = run("stats", "--json")
    assert json.loads(res.output)["uri"] == str(tmp_path / "envdb")


def test_ingest_dry_run_then_ingest_then_get(tmp_path, small_scene):
    out, manifest = small_scene
    w, s, e, n = manifest["bounds_lonlat"]
    bbox = f"{w + 0.003},{s + 0.003},{e - 0.003},{n - 0.003}"
    db = tmp_path / "db"
    source = f"s2-l2a={out / 'scenes'}"
    dry = run("ingest", "-m", "spectral", "--bbox", bbox, "--h3-res", "9", "--year", "2023", "--dry-run", "--json", db=db)
    assert dry.exit_code == 0, dry.output
    plan = json.loads(dry.output)["plan"]
    assert plan["cached"] == 0 and plan["to_compute"] == plan["n_requests"] > 0
    res = run("ingest", "-m", "spectral", "--bbox", bbox, "--year", "2023", "--source", source, "--json", db=db)
    summary = json.loads(res.output)["summary"]
    assert summary["computed"] == plan["n_requests"] and summary["failed"] == 0
    again = json.loads(run("ingest", "-m", "spectral", "--bbox", bbox, "--year", "2023", "--dry-run", "--json", db=db).output)
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
    plain = json.loads(run("ingest", "-m", "toymm", "--bbox", bbox, "--h3-res", "8", "--year", "2023",
                           "--dry-run", "--json", "--save-plan", str(tmp_path / "plain.json"), db=db).output)
    with_s1 = json.loads(run("ingest", "-m", "toymm", "--bbox", bbox, "--h3-res", "8", "--year", "2023",
                             "--modality", "s1", "--dry-run", "--json", "--save-plan", str(tmp_path / "s1.json"),
                             db=db).output)
    assert plain["plan"]["n_requests"] == with_s1["plan"]["n_requests"] > 0
    from rsembed_store.ingest.plan import Plan

    s1_plan, plain_plan = Plan.load(tmp_path / "s1.json"), Plan.load(tmp_path / "plain.json")
    assert all(dict(r.modalities) == {"s1": SensorSpec("s1-grd", ("VV", "VH"))} for r in s1_plan.requests)
    assert all(r.modalities is None for r in plain_plan.requests)
    assert not {r.key for r in s1_plan.requests} & {r.key for r in plain_plan.requests}

    cell = "881f8d4d6bfffff"
    res = run("get", "-m", "toymm", "--h3", cell, "--year", "2023", "--modality", "s1", "--no-compute", "--json",
              db=db)
    key = json.loads(res.output)["key"]
    assert key == resolve(Request("toymm", H3Cell(cell), TemporalSpec.year(2023), modalities=["s1"])).key
    assert key != resolve(Request("toymm", H3Cell(cell), TemporalSpec.year(2023))).key


@pytest.mark.parametrize(
    "args, words",
    [
        (["ingest", "-m", "spectral", "--bbox", "1,2,3", "--year", "2023"], ["--bbox", "'1,2,3'"]),
        (["ingest", "-m", "spectral", "--bbox", "3,2,1,4", "--year", "2023"], ["minlon < maxlon"]),
        (["ingest", "-m", "spectral", "--bbox", "1,2,3,4"], ["time window"]),
        (["ingest", "-m", "nope", "--bbox", "1,2,3,4", "--year", "2023"], ["'nope'", "spectral"]),
        (["ingest", "-m", "spectral", "--bbox", "1,2,3,4", "--time", "2023-05-01/2023-01-01", "--dry-run"], ["start < end"]),
        (["ingest", "-m", "spectral", "--bbox", "1,2,3,4", "--year", "2023", "--source", "nodir"], ["NAME=DIR"]),
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
