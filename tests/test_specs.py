import json
import math

import h3
import numpy as np
import pytest

from rsembed_store.errors import SpecError
from rsembed_store.specs import (
    BBox,
    H3Cell,
    InputPrepSpec,
    OutputSpec,
    PointBuffer,
    SensorSpec,
    TemporalSpec,
    SpatialSpec,
    coerce_spec,
    parse_time,
    spatial_from_dict,
)

ALL_SPECS = [
    PointBuffer(11.0, 46.0, 500),
    BBox(10.9, 45.9, 11.1, 46.1),
    H3Cell("8928308280fffff"),
    TemporalSpec.year(2022),
    TemporalSpec.range("2022-06-01", "2022-09-01"),
    SensorSpec("s2-l2a", ("B02", "B04"), scale_m=20, cloudy_pct=10, composite="mosaic"),
    OutputSpec.pooled("max"),
    OutputSpec.grid(grid_orientation="native"),
    InputPrepSpec.tile(tile_size=64, max_tiles=4),
]


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda s: type(s).__name__)
def test_round_trip_through_json(spec):
    data = json.loads(json.dumps(spec.to_dict()))
    kind = type(spec)
    back = spatial_from_dict(data) if kind in (PointBuffer, BBox, H3Cell) else kind.from_dict(data)
    assert back == spec
    assert hash(back) == hash(spec)


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: PointBuffer(180.5, 0, 10), ["lon", "180.5", "[-180, 180]"]),
        (lambda: PointBuffer(0, -90.01, 10), ["lat", "-90.01", "[-90, 90]"]),
        (lambda: PointBuffer(math.nan, 0, 10), ["lon", "finite"]),
        (lambda: PointBuffer(0, 0, math.inf), ["buffer_m", "finite"]),
        (lambda: PointBuffer(0, 0, 0), ["buffer_m", "(0"]),
        (lambda: PointBuffer(0, 0, -5), ["buffer_m", "-5"]),
        (lambda: PointBuffer("east", 0, 5), ["lon", "'east'"]),
        (lambda: PointBuffer(0, 0, 5, crs="EPSG:3857"), ["EPSG:3857", "EPSG:4326"]),
        (lambda: BBox(2, 0, 1, 1), ["minlon < maxlon", "minlon=2.0"]),
        (lambda: BBox(0, 1, 1, 1), ["minlat < maxlat"]),
        (lambda: BBox(0, 0, 1, 91), ["maxlat", "91"]),
        (lambda: H3Cell("not-a-cell"), ["not-a-cell", "H3"]),
        (lambda: H3Cell(12345), ["12345"]),
        (lambda: TemporalSpec.range("2022-09-01", "2022-06-01"), ["start < end", "2022-09-01"]),
        (lambda: TemporalSpec.range("2022-06-01", "2022-06-01"), ["start < end"]),
        (lambda: TemporalSpec.range("2022-13-01", "2023-01-01"), ["2022-13-01", "YYYY-MM-DD"]),
        (lambda: TemporalSpec.year(0), ["year", "0"]),
        (lambda: TemporalSpec.year("2022"), ["year", "'2022'"]),
        (lambda: SensorSpec("s2", ()), ["bands"]),
        (lambda: SensorSpec("s2", ("B04", "B04")), ["repeats"]),
        (lambda: SensorSpec("s2", ("B04",), cloudy_pct=120), ["cloudy_pct", "120", "[0, 100]"]),
        (lambda: SensorSpec("s2", ("B04",), composite="mean"), ["composite", "'mean'", "median"]),
        (lambda: SensorSpec("", ("B04",)), ["collection"]),
        (lambda: OutputSpec.pooled("median"), ["pooling", "'median'", "mean"]),
        (lambda: OutputSpec(mode="vector"), ["mode", "'vector'"]),
        (lambda: InputPrepSpec(mode="crop"), ["mode", "'crop'"]),
        (lambda: InputPrepSpec.tile(tile_size=0), ["tile_size", "positive"]),
    ],
)
def test_bad_values_are_named(make, words):
    with pytest.raises(SpecError) as info:
        make()
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} missing from {message!r}"
    assert isinstance(info.value, ValueError)


def test_year_is_a_factory_and_a_field():
    y = TemporalSpec.year(2021)
    assert y.year == 2021 and y.mode == "year"
    r = TemporalSpec.range("2021-03-01", "2021-04-01")
    assert r.year is None
    assert y.window()[0].isoformat() == "2021-01-01" and y.window()[1].isoformat() == "2022-01-01"


def test_half_open_window_overlap():
    w = TemporalSpec.range("2022-06-01", "2022-07-01")
    from datetime import date

    assert not w.overlaps(date(2022, 7, 1), date(2022, 8, 1))  # end is exclusive
    assert w.overlaps(date(2022, 6, 30), date(2022, 7, 5))


def test_h3_cell_accepts_int_and_uppercase():
    import h3

    c = "8928308280fffff"
    assert H3Cell(h3.str_to_int(c)).cell == c
    assert H3Cell(c.upper()).cell == c
    assert H3Cell(c).resolution == 9


@pytest.mark.parametrize("cell", [2**64, 10**30, -1, -(2**63), 0, "-1", "ffffffffffffffffff", "0x", "",
                                  "8928308280fffff0", "89283082 80fffff", 1.5])
def test_h3_cell_out_of_h3s_range_is_a_spec_error(cell):
    """Values h3's native code cannot take (negative, 65-bit, not hex) are SpecErrors naming the value."""
    with pytest.raises(SpecError) as info:
        H3Cell(cell)
    assert repr(cell)[:20] in str(info.value) and "8928308280fffff" in str(info.value)


def test_h3_cell_spellings_of_one_cell_give_one_key():
    from rsembed_store import Request, resolve

    c = "8928308280fffff"
    spellings = [c, c.upper(), "0" + c, "0x" + c, f"  {c} ", h3.str_to_int(c), np.uint64(h3.str_to_int(c))]
    assert {H3Cell(s).cell for s in spellings} == {c}
    keys = {resolve(Request("spectral", {"type": "H3Cell", "cell": s}, TemporalSpec.year(2023))).key
            for s in spellings}
    assert len(keys) == 1


@pytest.mark.parametrize("make", [
    lambda: PointBuffer(10**400, 46.0, 100),
    lambda: PointBuffer(11.0, 46.0, 10**400),
    lambda: BBox(0, 0, 10**400, 1),
    lambda: SensorSpec("s2-l2a", ("B2",), cloudy_pct=10**400),
])
def test_ints_beyond_any_float_are_spec_errors(make):
    with pytest.raises(SpecError, match="too large"):
        make()


def test_pointbuffer_bounds_are_square_in_metres():
    pb = PointBuffer(10.0, 60.0, 1000)
    w, s, e, n = pb.bounds()
    # at 60 degrees north a degree of longitude is half as long
    assert (e - w) == pytest.approx(2 * (n - s), rel=1e-3)
    assert (n - s) * 111_195 == pytest.approx(2000, rel=1e-3)


def test_parse_time():
    assert parse_time("2022") == TemporalSpec.year(2022)
    assert parse_time("2022-06-01/2022-09-01") == TemporalSpec.range("2022-06-01", "2022-09-01")
    with pytest.raises(SpecError, match="June"):
        parse_time("June")


def test_unknown_dict_fields_are_refused():
    with pytest.raises(SpecError, match="unknown field"):
        SensorSpec.from_dict({"collection": "s2", "bands": ["B04"], "clouds": 3})
    with pytest.raises(SpecError, match="spatial.type"):
        spatial_from_dict({"type": "Circle", "r": 1})


def test_rs_embed_specs_convert_one_to_one():
    rs = pytest.importorskip("rs_embed")
    pairs = [
        (rs.PointBuffer(lon=1.0, lat=2.0, buffer_m=30), PointBuffer(1, 2, 30)),
        (rs.BBox(minlon=1, minlat=2, maxlon=3, maxlat=4), BBox(1, 2, 3, 4)),
        (rs.TemporalSpec.year(2020), TemporalSpec.year(2020)),
        # rs-embed's range spec carries its year() factory as the year field: read as "no year"
        (rs.TemporalSpec.range("2022-06-01", "2022-09-01"), TemporalSpec.range("2022-06-01", "2022-09-01")),
        (rs.SensorSpec(collection="s2-l2a", bands=("B02", "B04"), scale_m=20, cloudy_pct=10, composite="mosaic"),
         SensorSpec("s2-l2a", ("B02", "B04"), scale_m=20, cloudy_pct=10, composite="mosaic")),
        (rs.OutputSpec.pooled("max"), OutputSpec.pooled("max")),
        (rs.OutputSpec.grid(grid_orientation="native"), OutputSpec.grid(grid_orientation="native")),
        (rs.InputPrepSpec.tile(tile_size=64, max_tiles=4), InputPrepSpec.tile(tile_size=64, max_tiles=4)),
        (rs.InputPrepSpec.resize(), InputPrepSpec(mode="resize", max_tiles=64)),
    ]
    for theirs, ours in pairs:
        assert coerce_spec(theirs, type(ours)) == ours, theirs
    assert coerce_spec(rs.BBox(1, 2, 3, 4), SpatialSpec) == BBox(1, 2, 3, 4)


def test_rs_embed_fields_we_lack_are_dropped_only_at_their_defaults():
    rs = pytest.importorskip("rs_embed")
    import dataclasses

    ours = {f.name for f in dataclasses.fields(SensorSpec)}
    theirs = {f.name for f in dataclasses.fields(rs.SensorSpec)}
    assert ours <= theirs  # every field of ours is filled from theirs
    for spec, field in [
        (rs.SensorSpec(collection="s1", bands=("VV",), orbit="ASCENDING"), "orbit"),
        (rs.SensorSpec(collection="s2", bands=("B4",), modality="s2"), "modality"),
        (rs.InputPrepSpec.tile(tile_size=32, max_tiles_hard=100), "max_tiles_hard"),
    ]:
        with pytest.raises(SpecError, match=field):
            coerce_spec(spec, SensorSpec if "Sensor" in type(spec).__name__ else InputPrepSpec)


def test_rs_embed_specs_meet_our_stricter_validation():
    rs = pytest.importorskip("rs_embed")
    with pytest.raises(SpecError, match="lon"):
        coerce_spec(rs.PointBuffer(lon=200.0, lat=0.0, buffer_m=10), PointBuffer)  # rs-embed accepts it
    with pytest.raises(SpecError, match="start < end"):
        coerce_spec(rs.TemporalSpec.range("2022-09-01", "2022-06-01"), TemporalSpec)
    with pytest.raises(SpecError, match="PointBuffer"):
        coerce_spec(rs.PointBuffer(lon=1.0, lat=2.0, buffer_m=30), TemporalSpec)


def test_rs_embed_lookalikes_from_their_module_convert(monkeypatch):
    """rs-embed is optional and absent from the core test environment: a stand-in class from a
    module of its name keeps the converter's detection and validation covered there."""
    import dataclasses
    import sys
    import types

    mod = types.ModuleType("rs_embed.core.specs")

    @dataclasses.dataclass(frozen=True)
    class PointBuffer_:  # noqa: N801
        lon: float
        lat: float
        buffer_m: float
        crs: str = "EPSG:4326"

    PointBuffer_.__name__ = "PointBuffer"
    PointBuffer_.__module__ = "rs_embed.core.specs"
    monkeypatch.setitem(sys.modules, "rs_embed.core.specs", mod)
    theirs = PointBuffer_(5.0, 6.0, 100.0)
    assert coerce_spec(theirs, PointBuffer) == PointBuffer(5, 6, 100)
    with pytest.raises(SpecError):
        coerce_spec(PointBuffer_(500.0, 6.0, 100.0), PointBuffer)
