"""The shared options: taken before and after the subcommand, from one module; the area forms
of --within/--region; search's text table."""

import json
import re

import h3
import numpy as np
import pytest
from click.testing import CliRunner

from rsembed_store import BBox, Embedding, PointBuffer, Request, Store, TemporalSpec, resolve
from rsembed_store.cli import main
from rsembed_store.errors import SpecError
from rsembed_store.commands.options import parse_area

import toy  # noqa: F401  (registers the toy model)


def invoke(*args, **kwargs):
    return CliRunner().invoke(main, list(args), **kwargs)


@pytest.fixture(scope="module")
def toy_store(tmp_path_factory):
    """A toy space of 40 rows; vectors far apart (l2 distances well above 10)."""
    store = Store.open(tmp_path_factory.mktemp("opts") / "db")
    rng = np.random.default_rng(3)
    embs = []
    for i in range(40):
        req = resolve(Request("toy", PointBuffer(11.0 + 0.01 * i, 46.0 + 0.005 * (i % 7), 100),
                              TemporalSpec.year(2020 + i % 3)))
        scale = 0.3 if i % 2 == 0 else 20.0  # distances from an even row: below 1 to even rows, above 10 to odd
        embs.append(Embedding(request=req, vector=(rng.standard_normal(8) * scale).astype(np.float32)))
    store.put_many(embs)
    return store, embs


def test_store_options_go_before_or_after_the_command(toy_store):
    store, _ = toy_store
    before = invoke("--db", store.uri, "stats", "--json")
    after = invoke("stats", "--db", store.uri, "--json")
    json_first = invoke("--json", "stats", "--db", store.uri)
    assert before.exit_code == after.exit_code == json_first.exit_code == 0, after.output
    docs = [json.loads(r.output) for r in (before, after, json_first)]
    for doc in docs:  # the serving tier's build time may differ between reads
        for space in doc["spaces"]:
            space.pop("serving")
    assert docs[0] == docs[1] == docs[2]
    assert json.loads(after.output)["total_rows"] == 40
    q = "SELECT count(*) AS n FROM embeddings"
    assert json.loads(invoke("sql", q, "--db", store.uri, "--json").output)["rows"] == [[40]]
    assert json.loads(invoke("--db", store.uri, "sql", "--json", q).output)["rows"] == [[40]]


def test_the_subcommand_db_wins_over_the_group_and_the_environment(toy_store, tmp_path, monkeypatch):
    store, _ = toy_store
    monkeypatch.setenv("RSEMBED_STORE_DB", str(tmp_path / "missing"))
    assert invoke("stats", "--json").exit_code == 2  # the environment names no store
    res = invoke("stats", "--json", "--db", store.uri)
    assert res.exit_code == 0 and json.loads(res.output)["uri"] == store.uri
    res = invoke("--db", str(tmp_path / "nope"), "stats", "--db", store.uri, "--json")
    assert res.exit_code == 0 and json.loads(res.output)["uri"] == store.uri


def test_size_limits_and_storage_options_are_taken_after_the_command(tmp_path):
    res = invoke("ingest", "-m", "spectral", "--region", "10,45,11,46", "--year", "2023", "--dry-run",
                 "--max-plan-cells", "10", "--db", str(tmp_path / "db"))
    assert res.exit_code == 2 and "max_plan_cells=10;" in res.output, res.output
    res = invoke("stats", "--storage-option", "broken", "--db", str(tmp_path / "db"))
    assert res.exit_code == 2 and "--storage-option" in res.output and "KEY=VALUE" in res.output, res.output


def test_json_before_a_command_that_prints_nothing_is_refused(tmp_path):
    res = invoke("--json", "serve", "--db", str(tmp_path))
    assert res.exit_code == 2 and "serve prints no results" in res.output


def test_stats_text_matches_its_json(toy_store):
    store, _ = toy_store
    data = json.loads(invoke("stats", "--db", store.uri, "--json").output)
    text = invoke("stats", "--db", store.uri).output
    (space,) = data["spaces"]
    assert f"{space['space']}: 40 rows (40 pooled, 0 grid), dim 8" in text


# ---------------------------------------------------------------- areas


def test_an_area_is_a_box_cells_or_a_file(tmp_path):
    cell = h3.latlng_to_cell(46.0, 11.0, 6)
    assert parse_area("10.9,45.9,11.1,46.1", "--within") == BBox(10.9, 45.9, 11.1, 46.1)
    assert parse_area(f"{cell},{h3.cell_to_parent(cell, 5)}", "--within") == [cell, h3.cell_to_parent(cell, 5)]
    poly = {"type": "Polygon", "coordinates": [[[10, 45], [12, 45], [12, 47], [10, 45]]]}
    (tmp_path / "a.geojson").write_text(json.dumps(poly))
    assert parse_area(str(tmp_path / "a.geojson"), "--region") == poly
    (tmp_path / "cells.txt").write_text(f"# cells\n{cell}\n")
    assert parse_area(str(tmp_path / "cells.txt"), "--region") == [cell]
    (tmp_path / "cells.json").write_text(json.dumps([cell]))
    assert parse_area(str(tmp_path / "cells.json"), "--region") == [cell]
    for bad, words in [("1,2,3", "'1,2,3'"), ("zz", "'zz'"), (str(tmp_path / "none.geojson"), "no such file")]:
        with pytest.raises(SpecError, match=re.escape(words)) as err:
            parse_area(bad, "--within")
        assert "MINLON,MINLAT,MAXLON,MAXLAT" in str(err.value) and "--within" in str(err.value)
    (tmp_path / "junk.txt").write_text("not a cell\n")
    with pytest.raises(SpecError, match="neither GeoJSON nor a list of H3 cells"):
        parse_area(str(tmp_path / "junk.txt"), "--region")


def test_ingest_region_forms_plan_the_same_cells(tmp_path):
    from rsembed_store.ingest.plan import region_cells

    box = "10.99,45.99,11.01,46.01"
    want = region_cells(BBox(10.99, 45.99, 11.01, 46.01), 9)
    (tmp_path / "cells.txt").write_text("\n".join(want))
    poly = {"type": "Polygon", "coordinates": [[[10.99, 45.99], [11.01, 45.99], [11.01, 46.01], [10.99, 46.01],
                                                [10.99, 45.99]]]}
    (tmp_path / "area.geojson").write_text(json.dumps(poly))
    for region in (box, str(tmp_path / "cells.txt"), str(tmp_path / "area.geojson"), ",".join(want[:3])):
        res = invoke("ingest", "-m", "spectral", "--region", region, "--h3-res", "9", "--year", "2023",
                     "--dry-run", "--json", "--db", str(tmp_path / "db"))
        assert res.exit_code == 0, res.output
        n = json.loads(res.stdout)["plan"]["n_cells"]
        assert n == (3 if region.count(",") == 2 else len(want)), region


def test_python_takes_the_http_area_form(toy_store):
    store, embs = toy_store
    like = embs[0].key
    box = BBox(11.0, 45.99, 11.2, 46.05)
    assert store.search("toy", like, k=5, within={"bbox": list(box.bounds())}).keys == \
        store.search("toy", like, k=5, within=box).keys
    cell = h3.latlng_to_cell(46.0, 11.1, 5)
    assert store.search("toy", like, k=5, within={"cells": [cell]}).keys == \
        store.search("toy", like, k=5, within=[cell]).keys
    with pytest.raises(SpecError, match="exactly one of 'bbox'"):
        store.search("toy", like, within={"bbox": [1, 2, 3, 4], "cells": [cell]})


# ---------------------------------------------------------------- search output


def test_search_text_has_headers_and_aligned_columns(toy_store):
    store, embs = toy_store
    res = invoke("search", "-m", "toy", "--like-key", embs[0].key, "--metric", "l2", "-k", "30",
                 "--db", store.uri)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    header, rows = lines[1], lines[2:]
    assert header.split() == ["#", "distance", "key", "lon", "lat", "window", "h3"]
    assert len(rows) == 30
    distances = [float(r.split()[1]) for r in rows]
    assert max(distances) >= 10 > min(distances)  # both widths present
    for name in ("key", "window", "h3"):  # text starts where its header does
        at = header.index(name)
        assert all(r[at - 1] == " " and r[at] != " " for r in rows), name
    for name in ("distance", "lon", "lat"):  # numbers end where their header does
        end = header.index(name) + len(name)
        assert all(r[end - 1] != " " and r[end] == " " for r in rows), name


def test_search_errors_name_the_flags(toy_store):
    store, embs = toy_store
    res = invoke("search", "-m", "toy", "--like-key", embs[0].key, "--where", "nope = 1", "--db", store.uri)
    assert res.exit_code == 2 and res.output.startswith("error: --where") and "'key'" in res.output, res.output
    assert "where=" not in res.output
    res = invoke("search", "-m", "toy", "--like-key", embs[0].key, "--within", "1,2", "--db", store.uri)
    assert res.exit_code == 2 and "--within '1,2'" in res.output
    res = invoke("search", "-m", "toy", "--like-point", "12.5,47.5", "--buffer-m", "100", "--year", "2021",
                 "--db", store.uri)
    assert res.exit_code == 2 and "--compute" in res.output and "not stored" in res.output


def test_a_missing_source_names_the_flag(tmp_path, small_scene, monkeypatch):
    out, manifest = small_scene
    w, s, e, n = manifest["bounds_lonlat"]
    monkeypatch.delenv("RSEMBED_SOURCES", raising=False)
    res = invoke("get", "-m", "spectral", "--point", f"{(w + e) / 2},{(s + n) / 2}", "--buffer-m", "100",
                 "--year", "2023", "--db", str(tmp_path / "db"))
    assert res.exit_code == 4, res.output
    assert "--source s2-l2a=DIR" in res.output


def test_sql_takes_a_query_that_starts_with_a_comment(toy_store):
    store, _ = toy_store
    query = "-- how many rows\nSELECT count(*) AS n FROM embeddings"
    res = invoke("sql", query, "--db", store.uri, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["rows"] == [[40]]
    res = invoke("sql", "--db", store.uri, "--bogus", query)
    assert res.exit_code == 2 and "No such option '--bogus'" in res.output  # a real unknown option is still refused
