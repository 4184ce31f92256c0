"""Vectorised keys equal resolve()'s, value for value, rounding edges included."""

import h3
import numpy as np
import pytest

from rsembed_store import BBox, H3Cell, PointBuffer, Request, TemporalSpec, resolve
from rsembed_store.io.keys import KeyTemplate, format_float, keys_for
from rsembed_store.io.model import declare_imported
from rsembed_store.keys import canonical_json

N = 2000


@pytest.fixture(scope="module")
def models():
    return (declare_imported("keys-composite", revision="r1", dim=4).id,
            declare_imported("keys-year", revision="2024.1", dim=4, temporal="year").id)


def edge_values(rng, lo, hi, digits, n):
    """Random values plus the ones rounding can get wrong: halves at the last digit, tiny
    values Python prints with an exponent, -0.0, whole numbers, the range ends."""
    scale = 10 ** digits
    k = rng.integers(int(lo * scale), int(hi * scale), n // 4)
    halves = (k + 0.5) / scale
    near = halves + rng.choice([-1, 1], n // 4) * np.spacing(halves) * rng.integers(0, 3, n // 4)
    special = np.array([0.0, -0.0, 1e-7, -1e-7, 5e-8, 4.9999999e-5, 5e-5, 0.0001, 1.0, -1.0, lo, hi, 12.5,
                        0.1 + 0.2, 1.23456785, 2 / 3, 1e-4 - 1e-12])
    special = special[(special >= lo) & (special <= hi)]
    rand = rng.uniform(lo, hi, n - 2 * (n // 4) - len(special))
    out = np.concatenate([rand, halves, near, special])
    return np.clip(out, lo, hi)


@pytest.mark.parametrize("name,lo,hi,digits", [("lon", -180, 180, 7), ("lat", -90, 90, 7),
                                                ("buffer_m", 0.001, 500_000, 3)])
def test_format_float_is_json_of_round(name, lo, hi, digits):
    rng = np.random.default_rng(digits)
    x = edge_values(rng, lo, hi, digits, N)
    got = format_float(x, name).to_pylist()
    want = [canonical_json({name: float(v)})[len(name) + 4:-1] for v in x]
    bad = [(v, g, w) for v, g, w in zip(x, got, want) if g != w]
    assert not bad, bad[:5]


def _dates(rng, n):
    start = np.datetime64("1990-01-01") + rng.integers(0, 20_000, n).astype("timedelta64[D]")
    end = start + rng.integers(1, 400, n).astype("timedelta64[D]")
    start[:3] = np.array(["0001-01-01", "2024-02-29", "9998-12-30"], dtype="datetime64[D]")
    end[:3] = np.array(["0001-01-02", "2024-03-01", "9998-12-31"], dtype="datetime64[D]")
    return start, end


def _window(kind, i, years, start, end):
    if kind == "year":
        return TemporalSpec.year(int(years[i]))
    return TemporalSpec.range(str(start[i]), str(end[i]))


@pytest.mark.parametrize("window", ["year", "range"])
@pytest.mark.parametrize("spatial", ["PointBuffer", "BBox", "H3Cell"])
@pytest.mark.parametrize("which", [0, 1])
def test_keys_equal_resolve(models, spatial, window, which):
    model = models[which]
    rng = np.random.default_rng(hash((spatial, window, which)) % 2**32)
    n = 600
    lon = edge_values(rng, -179.9, 179.9, 7, n)
    lat = edge_values(rng, -89, 89, 7, n)
    rng.shuffle(lat)
    buf = edge_values(rng, 0.5, 50_000, 3, n)
    years = rng.integers(1, 9998, n)
    start, end = _dates(rng, n)
    values = {"lon": lon, "lat": lat, "buffer_m": buf, "minlon": lon, "minlat": lat,
              "maxlon": lon + rng.uniform(1e-6, 0.05, n), "maxlat": lat + rng.uniform(1e-6, 0.05, n)}
    cells = [h3.latlng_to_cell(float(a), float(o), int(r)) for a, o, r in zip(lat, lon, rng.integers(0, 16, n))]
    values["cell"] = cells
    if window == "year":
        values["year"] = years
        values["start"] = np.array([f"{y:04d}-01-01" for y in years], dtype="datetime64[D]")
        values["end"] = np.array([f"{y + 1:04d}-01-01" for y in years], dtype="datetime64[D]")
    else:
        values["start"], values["end"] = start, end
        values["year"] = start.astype("datetime64[Y]").astype(int) + 1970
    t = KeyTemplate.for_model(model, spatial, window)
    text, keys = keys_for(t, values)
    for i in range(n):
        sp = {"PointBuffer": lambda: PointBuffer(float(lon[i]), float(lat[i]), float(buf[i])),
              "BBox": lambda: BBox(float(lon[i]), float(lat[i]), float(values["maxlon"][i]),
                                   float(values["maxlat"][i])),
              "H3Cell": lambda: H3Cell(cells[i])}[spatial]()
        r = resolve(Request(model, sp, _window(window, i, years, start, end)))
        assert text[i].as_py() == r.canonical, i
        assert keys[i].as_py() == r.key, i


def test_template_refuses_a_changed_layout(models, monkeypatch):
    import rsembed_store.io.keys as k

    monkeypatch.setattr(k, "_PROBE_CELL", "not-a-cell")
    with pytest.raises(Exception):
        KeyTemplate.for_model(models[0], "H3Cell", "year")
