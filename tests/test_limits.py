"""Size limits: a request too large to compute is refused before any fetch or allocation,
with the same limit and message in Python, on the command line and over HTTP."""

import asyncio

import h3
import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from rsembed_store import BBox, OutputSpec, PointBuffer, Request, Store, TemporalSpec, resolve
from rsembed_store.cli import main
from rsembed_store.errors import LimitError, SpecError
from rsembed_store.ingest.models.products import ProductModel
from rsembed_store.ingest.plan import plan
from rsembed_store.ingest.providers import local as local_mod
from rsembed_store.ingest.providers.local import LocalProvider, target_grid
from rsembed_store.limits import Limits, roi_pixels

WORLD = BBox(-180, -90, 180, 90)
Y2023 = TemporalSpec.year(2023)


def boom(*args, **kwargs):  # pragma: no cover - reaching it is the failure
    raise AssertionError("fetched, read or allocated for a request over a size limit")


@pytest.fixture
def no_work(monkeypatch):
    """Any fetch, product read or grid allocation fails the test."""
    monkeypatch.setattr(LocalProvider, "fetch", boom)
    monkeypatch.setattr(ProductModel, "read_batch", boom)
    monkeypatch.setattr(local_mod, "target_grid", boom)


def assert_names_limit(message: str, limit: str, maximum: int) -> None:
    """A refusal names the limit, its value, the request's size and the three ways to raise it."""
    assert f"{limit}={maximum:,}" in message
    assert f"'limits': {{'{limit}'" in message  # Python: Store.open(config=...)
    assert "--" + limit.replace("_", "-") in message  # the CLI flag
    assert "RSEMBED_STORE_" + limit.upper() in message  # the environment variable


# ---------------------------------------------------------------- configuration


def test_defaults_then_environment_then_config(monkeypatch):
    for name in Limits.names():
        monkeypatch.delenv("RSEMBED_STORE_" + name.upper(), raising=False)
    assert Limits.from_config(None) == Limits(max_roi_pixels=4096 * 4096, max_array_bytes=1024**3,
                                              max_plan_cells=5_000_000)
    monkeypatch.setenv("RSEMBED_STORE_MAX_ROI_PIXELS", "1_000")
    monkeypatch.setenv("RSEMBED_STORE_MAX_ARRAY_BYTES", "2e9")
    assert Limits.from_config({"sources": {}}) == Limits(max_roi_pixels=1000, max_array_bytes=2_000_000_000)
    got = Limits.from_config({"limits": {"max_roi_pixels": 7, "max_plan_cells": 3}})
    assert (got.max_roi_pixels, got.max_array_bytes, got.max_plan_cells) == (7, 2_000_000_000, 3)


@pytest.mark.parametrize("config, match", [
    ({"limits": {"max_roi_pixels": 0}}, r"max_roi_pixels=0 is not accepted; use a positive integer"),
    ({"limits": {"max_array_bytes": -5}}, r"max_array_bytes=-5 is not accepted"),
    ({"limits": {"max_plan_cells": 1.5}}, r"max_plan_cells=1.5 is not accepted"),
    ({"limits": {"max_plan_cells": True}}, r"max_plan_cells=True is not accepted"),
    ({"limits": {"max_pixels": 10}}, r"unknown name\(s\) \['max_pixels'\]; accepted: \['max_roi_pixels'"),
    ({"limits": [1, 2]}, r"config 'limits'=\[1, 2\] must map limit names"),
])
def test_bad_limits_are_refused_naming_the_value(config, match):
    with pytest.raises(SpecError, match=match):
        Limits.from_config(config)


def test_a_bad_environment_variable_is_refused_naming_it(monkeypatch):
    monkeypatch.setenv("RSEMBED_STORE_MAX_ARRAY_BYTES", "lots")
    with pytest.raises(SpecError, match=r"\$RSEMBED_STORE_MAX_ARRAY_BYTES: max_array_bytes='lots'"):
        Limits.from_config(None)


# ---------------------------------------------------------------- estimates and the grid builder


def test_pixel_estimates_match_the_grids_built():
    for spatial in (PointBuffer(11.0, 46.0, 500), BBox(10.9, 45.9, 11.1, 46.1), BBox(20, 60, 20.2, 61)):
        grid = target_grid(spatial, 10)
        assert 0.85 <= roi_pixels(spatial, 10) / (grid.width * grid.height) <= 1.25  # the exact check follows


def test_the_grid_builder_checks_the_exact_size_before_allocating(monkeypatch):
    ring = BBox(-180, 10.1, 180, 10.4)  # small in lon/lat degrees, enormous in one UTM zone
    assert roi_pixels(ring, 1000) < Limits().max_roi_pixels
    monkeypatch.setattr(np, "ones", boom)
    monkeypatch.setattr(np, "meshgrid", boom)
    with pytest.raises(LimitError, match=r"the grid of BBox.* is [\d,]+ x [\d,]+ = [\d,]+ pixels") as info:
        target_grid(ring, 1000)
    assert_names_limit(str(info.value), "max_roi_pixels", 4096 * 4096)
    with pytest.raises(LimitError, match=r"100 x 100 = 10,000 pixels, more than the limit max_roi_pixels=99"):
        target_grid(PointBuffer(11.0, 46.0, 500), 10, max_pixels=99)


def test_the_local_provider_builds_grids_under_its_configured_limit():
    request = resolve(Request("spectral", PointBuffer(11.0, 46.0, 500), Y2023))
    provider = LocalProvider({"limits": {"max_roi_pixels": 9_999}})  # no sources: refused before reading any
    with pytest.raises(LimitError, match="max_roi_pixels=9,999"):
        provider.fetch(request)


# ---------------------------------------------------------------- Python: get, ingest, plan


@pytest.mark.parametrize("model, output, limit", [
    ("spectral", OutputSpec.pooled(), "max_roi_pixels"),
    ("mosaiks", OutputSpec.grid(), "max_roi_pixels"),
    ("gse", OutputSpec.grid(), "max_roi_pixels"),
    ("tessera", OutputSpec.pooled(), "max_roi_pixels"),
    ("copernicus", OutputSpec.pooled(), "max_array_bytes"),  # 1440 x 721 cells x 768 float32: 3.2 GB
    ("copernicus", OutputSpec.grid(), "max_array_bytes"),
])
def test_a_whole_world_request_is_refused_before_any_work(tmp_path, no_work, model, output, limit):
    store = Store.open(tmp_path / "db")
    year = TemporalSpec.year(2021)
    with pytest.raises(LimitError) as info:
        store.get(model, WORLD, year, output=output)
    err = info.value
    assert err.limit == limit and err.size > err.maximum == getattr(Limits(), limit)
    assert_names_limit(str(err), limit, err.maximum)
    assert f"{err.size:,.0f}" in str(err)
    assert store.spaces() == []  # nothing written


def test_ingest_fails_an_oversized_request_alone_and_never_fetches_it(tmp_path, monkeypatch, small_scene,
                                                                     scene_config):
    _, manifest = small_scene
    w, s, e, n = manifest["bounds_lonlat"]
    fetched = []
    real = LocalProvider.fetch
    monkeypatch.setattr(LocalProvider, "fetch", lambda self, r: fetched.append(r.key) or real(self, r))
    small = resolve(Request("spectral", PointBuffer((w + e) / 2, (s + n) / 2, 250), Y2023))
    huge = resolve(Request("spectral", WORLD, Y2023))
    store = Store.open(tmp_path / "db", config=scene_config)
    summary = store.ingest([huge, small])
    assert (summary.computed, summary.failed) == (1, 1)
    assert summary.failures[0].key == huge.key and summary.failures[0].error == "LimitError"
    assert "max_roi_pixels=16,777,216" in summary.failures[0].reason
    assert fetched == [small.key]
    assert store.lookup([huge, small])[0] is None


def test_limits_come_from_the_store_config(tmp_path, small_scene, scene_config):
    _, manifest = small_scene
    w, s, e, n = manifest["bounds_lonlat"]
    place = PointBuffer((w + e) / 2, (s + n) / 2, 250)  # 50 x 50 px at 10 m
    tight = Store.open(tmp_path / "db", config={**scene_config, "limits": {"max_roi_pixels": 2_499}})
    with pytest.raises(LimitError, match=r"about 2,500 pixels .*max_roi_pixels=2,499"):
        tight.get("spectral", place, Y2023)
    tight_bytes = Store.open(tmp_path / "db", config={**scene_config, "limits": {"max_array_bytes": 10_000}})
    with pytest.raises(LimitError, match=r"about 60,000 bytes \(2,500 pixels x 6 values .* max_array_bytes=10,000"):
        tight_bytes.get("spectral", place, Y2023)
    assert Store.open(tmp_path / "db", config={**scene_config, "limits": {"max_roi_pixels": 2_500}}).get(
        "spectral", place, Y2023).cached is False


def test_a_plan_whose_cells_are_too_large_to_compute_is_refused():
    cells = [h3.latlng_to_cell(46.0, 11.0, 2)]  # a res-2 hexagon is ~90,000 km2: ~10^9 px at 10 m
    with pytest.raises(LimitError, match=r"model 'spectral': H3Cell.* at 10 m .*max_roi_pixels"):
        plan("spectral", cells, 2, 2023)
    assert len(plan("spectral", cells, 2, 2023, limits=Limits(max_roi_pixels=10**12,
                                                              max_array_bytes=10**15)).requests) == 1


def test_a_plan_over_the_cells_limit_names_how_to_raise_it(monkeypatch):
    monkeypatch.setattr(h3, "h3shape_to_cells", boom)  # refused before enumerating
    with pytest.raises(LimitError) as info:
        plan("spectral", BBox(10, 45, 12, 47), 12, 2023, limits=Limits(max_plan_cells=1_000))
    assert_names_limit(str(info.value), "max_plan_cells", 1_000)
    assert "plan(..., max_cells=N)" in str(info.value)


# ---------------------------------------------------------------- HTTP


def post(app, path, body, token):
    async def send():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://rsembed-store") as client:
            return await client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})

    return asyncio.run(send())


def test_http_answers_413_in_the_one_error_shape_and_writes_nothing(tmp_path, no_work):
    from rsembed_store.query.service import create_app

    store = Store.open(tmp_path / "db")
    app = create_app(store, token="tok")
    world = {"model": "spectral", "spatial": WORLD.to_dict(), "temporal": {"mode": "year", "year": 2023}}
    res = post(app, "/embeddings", {"request": world, "compute": True}, "tok")
    assert res.status_code == 413, res.text
    err = res.json()["error"]
    assert set(res.json()) == {"error"} and err["code"] == "too_large" and err["field"] == "request"
    assert_names_limit(err["message"], "max_roi_pixels", 4096 * 4096)
    res = post(app, "/search", {"model": "spectral", "like": {"request": world}, "compute": True}, "tok")
    assert res.status_code == 413 and res.json()["error"]["code"] == "too_large", res.text
    assert store.spaces() == []


def test_http_ingest_of_cells_too_large_to_compute_is_413(tmp_path, no_work):
    from rsembed_store.query.service import create_app

    app = create_app(Store.open(tmp_path / "db", config={"limits": {"max_roi_pixels": 1_000}}), token="tok")
    body = {"model": "spectral", "region": {"cells": [h3.latlng_to_cell(46.0, 11.0, 8)]}, "h3_res": 8,
            "windows": [{"mode": "year", "year": 2023}]}
    res = post(app, "/ingest", body, "tok")  # a res-8 cell is ~ 90 x 90 px at 10 m: over 1,000
    assert res.status_code == 413, res.text
    assert "max_roi_pixels=1,000" in res.json()["error"]["message"]


# ---------------------------------------------------------------- CLI


def test_cli_refuses_with_the_flag_named_and_exit_2(tmp_path, no_work):
    runner = CliRunner()
    res = runner.invoke(main, ["--db", str(tmp_path / "db"), "get", "-m", "spectral", "--bbox=-180,-90,180,90",
                               "--year", "2023"])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("error: model 'spectral': BBox(")
    assert_names_limit(res.stderr, "max_roi_pixels", 4096 * 4096)
    res = runner.invoke(main, ["--db", str(tmp_path / "db"), "--max-plan-cells", "10", "ingest", "-m", "spectral",
                               "--bbox", "10,45,11,46", "--year", "2023", "--dry-run"])
    assert res.exit_code == 2 and "max_plan_cells=10;" in res.stderr, res.output
    assert "--max-plan-cells N on the command line" in res.stderr


def test_cli_limit_flags_reach_the_store(tmp_path, small_scene):
    out, manifest = small_scene
    w, s, e, n = manifest["bounds_lonlat"]
    args = ["--db", str(tmp_path / "db"), "--max-roi-pixels", "2499", "get", "-m", "spectral", "--point",
            f"{(w + e) / 2},{(s + n) / 2}", "--buffer-m", "250", "--year", "2023",
            "--source", f"s2-l2a={out / 'scenes'}"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and "max_roi_pixels=2,499" in res.stderr, res.output
    res = CliRunner().invoke(main, ["--max-roi-pixels", "0", "stats"])
    assert res.exit_code == 2 and "--max-roi-pixels" in res.output and "0 is not in the range" in res.output
