"""backend="auto": per request, the first provider that can serve it; cache-first across providers.

A local source covers half the region and a faked Earth Engine (tests/fake_ee.py) the rest.
"""

from __future__ import annotations

import pytest

from fake_ee import FakeEE, Scene
from rsembed_store import NoProviderError, Store
from rsembed_store.compat import PointBuffer, TemporalSpec, get_embeddings_batch
from rsembed_store.ingest.providers import gee

S2 = "COPERNICUS/S2_SR_HARMONIZED"
EE_BANDS = ("B2", "B3", "B4", "B8", "B11", "B12")
YEAR = TemporalSpec.year(2023)


@pytest.fixture
def fake(monkeypatch):
    for name in ("EE_PROJECT", "GOOGLE_CLOUD_PROJECT", "EE_SERVICE_ACCOUNT_KEY", "EE_SERVICE_ACCOUNT"):
        monkeypatch.delenv(name, raising=False)
    bands = {b: 1000.0 + 150.0 * i for i, b in enumerate(EE_BANDS)}
    ee = FakeEE({S2: [Scene("s2a", "2023-06-10", bands, {"CLOUDY_PIXEL_PERCENTAGE": 5.0})]})
    monkeypatch.setattr(gee, "EE_MODULE", ee)
    gee.reset_initialization()
    yield ee
    gee.reset_initialization()


def region(manifest):
    """Two places inside the local scene's footprint and two east of it (outside)."""
    w, s, e, n = manifest["bounds_lonlat"]
    cy = (s + n) / 2
    inside = [PointBuffer(w + (e - w) * f, cy, 150) for f in (0.3, 0.6)]
    outside = [PointBuffer(e + (e - w) * f, cy, 150) for f in (0.5, 1.0)]
    return inside, outside


def test_local_where_it_covers_earth_engine_for_the_rest_then_all_hits(tmp_path, small_scene, scene_config, fake):
    db = Store.open(tmp_path / "db", config={**scene_config, "providers": {"gee": {"project": "p"}}})
    inside, outside = region(small_scene[1])
    first = get_embeddings_batch("spectral", spatials=inside + outside, temporal=YEAR, store=db)
    assert [e.provider for e in first] == ["local", "local", "gee", "gee"]
    assert [e.meta["backend"] for e in first] == ["local", "local", "gee", "gee"]
    assert not any(e.cached for e in first)
    calls = len(fake.requests)
    assert calls == 2  # only the two places the local source does not cover went to Earth Engine
    again = get_embeddings_batch("spectral", spatials=inside + outside, temporal=YEAR, store=db)
    assert all(e.cached for e in again) and len(fake.requests) == calls
    assert [e.key for e in again] == [e.key for e in first]


def test_any_providers_answer_is_a_hit_unless_strict(tmp_path, small_scene, scene_config, fake):
    db = Store.open(tmp_path / "db", config={**scene_config, "providers": {"gee": {"project": "p"}}})
    inside, _ = region(small_scene[1])
    by_gee = get_embeddings_batch("spectral", spatials=inside, temporal=YEAR, backend="gee", store=db)
    assert [e.provider for e in by_gee] == ["gee", "gee"]
    calls = len(fake.requests)
    auto = get_embeddings_batch("spectral", spatials=inside, temporal=YEAR, store=db)
    assert all(e.cached for e in auto) and [e.provider for e in auto] == ["gee", "gee"]
    assert [e.key for e in auto] == [e.key for e in by_gee]
    strict = get_embeddings_batch("spectral", spatials=inside, temporal=YEAR, store=db, strict_provider=True)
    assert not any(e.cached for e in strict) and [e.provider for e in strict] == ["local", "local"]
    assert len(fake.requests) == calls  # the local source served the strict misses


def test_strict_is_a_setting_too(tmp_path, small_scene, scene_config, fake, monkeypatch):
    db = Store.open(tmp_path / "db", config={**scene_config, "providers": {"gee": {"project": "p"}}})
    inside, _ = region(small_scene[1])
    get_embeddings_batch("spectral", spatials=inside[:1], temporal=YEAR, backend="gee", store=db)
    monkeypatch.setenv("RSEMBED_STORE_STRICT_PROVIDER", "1")
    (strict,) = get_embeddings_batch("spectral", spatials=inside[:1], temporal=YEAR, store=db)
    assert strict.provider == "local" and not strict.cached


def test_no_provider_names_every_provider_tried_and_why(tmp_path, small_scene, scene_config, fake):
    db = Store.open(tmp_path / "db", config=scene_config)  # Earth Engine not configured
    _, outside = region(small_scene[1])
    with pytest.raises(NoProviderError) as err:
        get_embeddings_batch("spectral", spatials=outside[:1], temporal=YEAR, store=db)
    assert [name for name, _ in err.value.tried] == ["local", "gee"]
    text = str(err.value)
    assert "local: no local scene" in text and "covers the ROI" in text and "gee: Earth Engine is not configured" in text
    assert not fake.requests and db.spaces() == [] or all(db.count(s.name) == 0 for s in db.spaces())


def test_cli_ingest_with_provider_auto_uses_both_and_reruns_all_hits(tmp_path, small_scene, fake, monkeypatch):
    """One ingest of a region half covered by the local source: the dry run says which provider takes how
    many requests and the expected Earth Engine calls; the ingest uses both; a second run is all hits."""
    import json

    from click.testing import CliRunner

    from rsembed_store.cli import main

    out, manifest = small_scene
    w, s, e, n = manifest["bounds_lonlat"]
    bbox = f"{w + 0.003},{s + 0.003},{e + (e - w)},{n - 0.003}"
    monkeypatch.setenv("EE_PROJECT", "p")
    args = ["--db", str(tmp_path / "db"), "ingest", "-m", "spectral", "--bbox", bbox, "--h3-res", "8",
            "--year", "2023", "--source", f"s2-l2a={out / 'scenes'}", "--provider", "auto", "--json"]

    def run(*extra):
        res = CliRunner().invoke(main, args + list(extra), catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return json.loads(res.output)

    dry = run("--dry-run")["plan"]
    providers = dry["providers"]
    assert set(providers) == {"local", "gee"} and providers["local"]["requests"] > 0
    assert providers["local"]["requests"] + providers["gee"]["requests"] == dry["n_requests"]
    assert dry["earth_engine_calls"] == providers["gee"]["to_compute"] > 0
    assert not fake.requests  # a dry run fetches nothing
    done = run()
    assert done["summary"]["computed"] == dry["n_requests"] and done["summary"]["failed"] == 0
    assert len(fake.requests) == providers["gee"]["requests"]
    again = run("--dry-run")["plan"]
    assert again["cached"] == again["n_requests"] and again["earth_engine_calls"] == 0


def test_gse_takes_a_cog_root_that_covers_the_tile_else_earth_engine(tmp_path, fake, monkeypatch):
    from rsembed_store.compat.auto import Candidates
    from rsembed_store.testing import products as syn
    from rsembed_store.keys import Request

    monkeypatch.delenv("RSEMBED_GSE_ROOT", raising=False)
    root = tmp_path / "gse"
    syn.make_gse_file(root, 2022, "32N", 500000, 5100000, (256, 256), seed=1)  # 2.56 km west of 9 E, 46 N
    inside = PointBuffer(9.0 + 1000 / 77_300, 46.04 - 1000 / 111_200, 200)
    outside = PointBuffer(9.5, 46.0, 200)
    when = TemporalSpec.year(2022)
    with_root = {"products": {"gse": {"root": str(root)}}, "providers": {"gee": {"project": "p"}}}
    assert Candidates(Request("gse", inside, when)).choose(with_root).provider == "cog"
    assert Candidates(Request("gse", outside, when)).choose(with_root).provider == "gee"
    with pytest.raises(NoProviderError) as err:
        Candidates(Request("gse", inside, when)).choose({})
    assert [name for name, _ in err.value.tried] == ["cog", "gee"] and "no root" in str(err.value)
