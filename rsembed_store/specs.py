"""Request specs: where, when, which pixels, which output.

The names, fields and defaults follow the rs-embed library (``PointBuffer``,
``BBox``, ``TemporalSpec``, ``SensorSpec``, ``OutputSpec``, ``InputPrepSpec``) so
its users feel at home and its objects convert one-to-one (:func:`coerce_spec`).
Validation is stricter than rs-embed's: coordinates must be finite and in range,
H3 cells must be valid, and only EPSG:4326 is accepted.

Every spec is a frozen, hashable dataclass that validates itself on creation
and round-trips through ``to_dict()`` / ``from_dict()`` as plain JSON values.

>>> PointBuffer(lon=11.0, lat=46.0, buffer_m=500).to_dict()
{'type': 'PointBuffer', 'lon': 11.0, 'lat': 46.0, 'buffer_m': 500.0, 'crs': 'EPSG:4326'}
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from datetime import date, timedelta
from typing import Any, Iterable, Mapping, Optional, Tuple, Union

import h3

from .errors import SpecError
from .h3int import cell_id as h3_cell_id  # parsing lives in h3int; specs keeps its public name

ACCEPTED_CRS = "EPSG:4326"
EARTH_RADIUS_M = 6_371_008.8
_M_PER_DEG = EARTH_RADIUS_M * math.pi / 180.0


# ---------------------------------------------------------------- validation helpers


def _number(owner: str, name: str, value: Any, *, lo=None, hi=None, lo_open=False) -> float:
    """Return ``value`` as a finite float in range or raise a SpecError naming it."""
    if isinstance(value, bool):
        raise SpecError(f"{owner}.{name} must be a number, got {value!r}")
    try:
        number = float(value)  # ints, floats, numpy scalars, numeric strings from JSON/CLI
    except (TypeError, ValueError):
        raise SpecError(f"{owner}.{name} must be a number, got {value!r}") from None
    except OverflowError:  # an int beyond any float, e.g. 10**400
        raise SpecError(f"{owner}.{name}={_short_repr(value)} is too large to be a number") from None
    if not math.isfinite(number):
        raise SpecError(f"{owner}.{name} must be a finite number, got {value!r}")
    too_low = lo is not None and (number <= lo if lo_open else number < lo)
    too_high = hi is not None and number > hi
    if too_low or too_high:
        left = "(" if lo_open else "["
        right = "]" if hi is not None else ")"
        accepted = f"{left}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}{right}"
        raise SpecError(f"{owner}.{name}={value!r} is out of range; accepted: {accepted}")
    return number


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _choice(owner: str, name: str, value: Any, accepted: Tuple[str, ...]) -> str:
    if value not in accepted:
        raise SpecError(f"{owner}.{name}={value!r} is not accepted; use one of {list(accepted)}")
    return value


def _check_crs(owner: str, crs: Any) -> None:
    if crs != ACCEPTED_CRS:
        raise SpecError(
            f"{owner}.crs={crs!r} is not supported; only {ACCEPTED_CRS!r} (lon/lat degrees) is "
            "accepted: reproject your coordinates to WGS84 first"
        )


def _set(obj, name, value):
    object.__setattr__(obj, name, value)


def _positive_int(owner: str, name: str, value: Any, *, allow_none: bool = False) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        accepted = "a positive integer" + (" or None" if allow_none else "")
        raise SpecError(f"{owner}.{name}={value!r} is not accepted; use {accepted}")
    return int(value)


def metres_to_degrees(lat: float, dx_m: float, dy_m: float) -> Tuple[float, float]:
    """Convert ground metres east/north at latitude ``lat`` to degrees (spherical Earth)."""
    dlat = dy_m / _M_PER_DEG
    coslat = max(math.cos(math.radians(lat)), 1e-6)
    return dx_m / (_M_PER_DEG * coslat), dlat


# ---------------------------------------------------------------- spatial specs


@dataclass(frozen=True)
class PointBuffer:
    """A square ROI centred on ``(lon, lat)``; ``buffer_m`` is half its side in ground metres."""

    lon: float
    lat: float
    buffer_m: float
    crs: str = ACCEPTED_CRS

    def __post_init__(self):
        _check_crs("PointBuffer", self.crs)
        _set(self, "lon", _number("PointBuffer", "lon", self.lon, lo=-180, hi=180))
        _set(self, "lat", _number("PointBuffer", "lat", self.lat, lo=-90, hi=90))
        _set(self, "buffer_m", _number("PointBuffer", "buffer_m", self.buffer_m, lo=0, lo_open=True))
        if self.buffer_m > 500_000:
            raise SpecError(
                f"PointBuffer.buffer_m={self.buffer_m!r} is too large; accepted: (0, 500000] metres"
            )

    def center(self) -> Tuple[float, float]:
        return self.lon, self.lat

    def bounds(self) -> Tuple[float, float, float, float]:
        """Approximate lon/lat bounds of the square (spherical Earth)."""
        dlon, dlat = metres_to_degrees(self.lat, self.buffer_m, self.buffer_m)
        return (
            max(self.lon - dlon, -180.0),
            max(self.lat - dlat, -90.0),
            min(self.lon + dlon, 180.0),
            min(self.lat + dlat, 90.0),
        )

    def polygon(self) -> list:
        w, s, e, n = self.bounds()
        return [(w, s), (e, s), (e, n), (w, n), (w, s)]

    def to_dict(self) -> dict:
        return {"type": "PointBuffer", **asdict(self)}


@dataclass(frozen=True)
class BBox:
    """A lon/lat rectangle ``[minlon, maxlon] x [minlat, maxlat]`` in EPSG:4326."""

    minlon: float
    minlat: float
    maxlon: float
    maxlat: float
    crs: str = ACCEPTED_CRS

    def __post_init__(self):
        _check_crs("BBox", self.crs)
        for name in ("minlon", "maxlon"):
            _set(self, name, _number("BBox", name, getattr(self, name), lo=-180, hi=180))
        for name in ("minlat", "maxlat"):
            _set(self, name, _number("BBox", name, getattr(self, name), lo=-90, hi=90))
        if not self.minlon < self.maxlon:
            raise SpecError(
                f"BBox needs minlon < maxlon, got minlon={self.minlon!r}, maxlon={self.maxlon!r} "
                "(boxes across the antimeridian are not supported: split them in two)"
            )
        if not self.minlat < self.maxlat:
            raise SpecError(
                f"BBox needs minlat < maxlat, got minlat={self.minlat!r}, maxlat={self.maxlat!r}"
            )

    def center(self) -> Tuple[float, float]:
        return (self.minlon + self.maxlon) / 2.0, (self.minlat + self.maxlat) / 2.0

    def bounds(self) -> Tuple[float, float, float, float]:
        return self.minlon, self.minlat, self.maxlon, self.maxlat

    def polygon(self) -> list:
        w, s, e, n = self.bounds()
        return [(w, s), (e, s), (e, n), (w, n), (w, s)]

    def to_dict(self) -> dict:
        return {"type": "BBox", **asdict(self)}


@dataclass(frozen=True)
class H3Cell:
    """An H3 hexagon as the ROI. ``cell`` may be given as a hex string or an int.

    A model that needs a rectangular input gets the smallest square that covers
    the hexagon; pooling over precomputed pixels uses only the pixels inside it.
    """

    cell: str

    def __post_init__(self):
        _set(self, "cell", h3_cell_id(self.cell, "H3Cell.cell"))

    @property
    def resolution(self) -> int:
        return h3.get_resolution(self.cell)

    @property
    def cell_int(self) -> int:
        return h3.str_to_int(self.cell)

    def center(self) -> Tuple[float, float]:
        lat, lon = h3.cell_to_latlng(self.cell)
        return lon, lat

    def polygon(self) -> list:
        ring = [(lon, lat) for lat, lon in h3.cell_to_boundary(self.cell)]
        return ring + [ring[0]]

    def bounds(self) -> Tuple[float, float, float, float]:
        lats, lons = zip(*h3.cell_to_boundary(self.cell))
        return min(lons), min(lats), max(lons), max(lats)

    def to_dict(self) -> dict:
        return {"type": "H3Cell", "cell": self.cell}


SpatialSpec = Union[PointBuffer, BBox, H3Cell]
_SPATIAL_TYPES = {"PointBuffer": PointBuffer, "BBox": BBox, "H3Cell": H3Cell}


def spatial_from_dict(data: Mapping[str, Any]) -> SpatialSpec:
    """Build a spatial spec from its ``to_dict`` form (the ``type`` field picks the class)."""
    if not isinstance(data, Mapping):
        raise SpecError(f"spatial must be an object with a 'type' field, got {data!r}")
    kind = data.get("type")
    cls = _SPATIAL_TYPES.get(kind)
    if cls is None:
        raise SpecError(f"spatial.type={kind!r} is not accepted; use one of {sorted(_SPATIAL_TYPES)}")
    return _from_fields(cls, {k: v for k, v in data.items() if k != "type"}, "spatial")


# ---------------------------------------------------------------- temporal


def _iso_date(owner: str, name: str, value: Any) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except (TypeError, ValueError):
        raise SpecError(f"{owner}.{name}={value!r} is not an ISO date; use 'YYYY-MM-DD'") from None


@dataclass(frozen=True)
class TemporalSpec:
    """A time window: a calendar year, or a half-open range ``[start, end)`` of ISO dates.

    The window is composited (median or mosaic), not a single scene.
    """

    mode: str
    year: Optional[int] = None
    start: Optional[str] = None
    end: Optional[str] = None

    def __post_init__(self):
        _choice("TemporalSpec", "mode", self.mode, ("year", "range"))
        if self.mode == "year":
            y = self.year
            if isinstance(y, bool) or not isinstance(y, int):
                raise SpecError(f"TemporalSpec.year={y!r} must be an integer year in [1, 9998]")
            if not 1 <= y <= 9998:
                raise SpecError(f"TemporalSpec.year={y!r} is out of range; accepted: [1, 9998]")
            if self.start is not None or self.end is not None:
                raise SpecError("TemporalSpec(mode='year') takes no start/end; use TemporalSpec.range")
        else:
            if self.year is not None:
                raise SpecError("TemporalSpec(mode='range') takes no year; use TemporalSpec.year")
            if self.start is None or self.end is None:
                raise SpecError(
                    f"TemporalSpec.range needs both start and end, got start={self.start!r}, end={self.end!r}"
                )
            s = _iso_date("TemporalSpec", "start", self.start)
            e = _iso_date("TemporalSpec", "end", self.end)
            if not s < e:
                raise SpecError(
                    f"TemporalSpec.range needs start < end (the window is half-open [start, end)), "
                    f"got start={s.isoformat()!r}, end={e.isoformat()!r}"
                )
            _set(self, "start", s.isoformat())
            _set(self, "end", e.isoformat())

    def window(self) -> Tuple[date, date]:
        """The half-open window ``[start, end)`` as dates (a year is Jan 1 to next Jan 1)."""
        if self.mode == "year":
            return date(self.year, 1, 1), date(self.year + 1, 1, 1)
        return date.fromisoformat(self.start), date.fromisoformat(self.end)

    def last_day(self) -> date:
        return self.window()[1] - timedelta(days=1)

    def overlaps(self, start: date, end: date) -> bool:
        s, e = self.window()
        return s < end and start < e

    def to_dict(self) -> dict:
        if self.mode == "year":
            return {"mode": "year", "year": self.year}
        return {"mode": "range", "start": self.start, "end": self.end}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TemporalSpec":
        return _from_fields(cls, data, "temporal")


# ``year`` is both a field and (as in rs-embed) a factory. The factories are
# attached after the dataclass is built so the field default stays None; an
# instance's own ``year`` value shadows the class-level factory.
TemporalSpec.year = staticmethod(lambda y: TemporalSpec(mode="year", year=y))  # type: ignore[assignment]
TemporalSpec.range = staticmethod(lambda start, end: TemporalSpec(mode="range", start=start, end=end))  # type: ignore[assignment]


def parse_time(text: str) -> TemporalSpec:
    """Parse the CLI forms ``2022`` (a year) and ``2022-06-01/2022-09-01`` (a half-open range)."""
    text = str(text).strip()
    if "/" in text:
        start, _, end = text.partition("/")
        return TemporalSpec.range(start.strip(), end.strip())
    if text.isdigit():
        return TemporalSpec.year(int(text))
    raise SpecError(f"time {text!r} is not accepted; use a year '2022' or a range 'START/END' of ISO dates")


# ---------------------------------------------------------------- sensor, output, input prep


@dataclass(frozen=True)
class SensorSpec:
    """What imagery an on-the-fly model reads, and how it is composited."""

    collection: str
    bands: Tuple[str, ...]
    scale_m: float = 10
    cloudy_pct: float = 30
    fill_value: float = 0.0
    composite: str = "median"
    check_input: bool = False
    check_raise: bool = True
    check_save_dir: Optional[str] = None

    def __post_init__(self):
        if not isinstance(self.collection, str) or not self.collection.strip():
            raise SpecError(f"SensorSpec.collection={self.collection!r} must be a non-empty string")
        bands = self.bands
        if isinstance(bands, str):
            bands = (bands,)
        if not isinstance(bands, Iterable):
            raise SpecError(f"SensorSpec.bands={bands!r} must be a list of band names")
        bands = tuple(bands)
        if not bands or not all(isinstance(b, str) and b.strip() for b in bands):
            raise SpecError(f"SensorSpec.bands={self.bands!r} must be a non-empty list of band names")
        if len(set(bands)) != len(bands):
            raise SpecError(f"SensorSpec.bands={list(bands)!r} repeats a band")
        _set(self, "bands", bands)
        _set(self, "scale_m", _number("SensorSpec", "scale_m", self.scale_m, lo=0, lo_open=True))
        _set(self, "cloudy_pct", _number("SensorSpec", "cloudy_pct", self.cloudy_pct, lo=0, hi=100))
        _set(self, "fill_value", _number("SensorSpec", "fill_value", self.fill_value))
        _choice("SensorSpec", "composite", self.composite, ("median", "mosaic"))
        for name in ("check_input", "check_raise"):
            if not isinstance(getattr(self, name), bool):
                raise SpecError(f"SensorSpec.{name}={getattr(self, name)!r} must be true or false")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bands"] = list(self.bands)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SensorSpec":
        return _from_fields(cls, data, "sensor")


@dataclass(frozen=True)
class OutputSpec:
    """``pooled`` gives a ``(D,)`` vector; ``grid`` gives ``(D, H, W)``, north-up by default."""

    mode: str
    scale_m: float = 10
    pooling: str = "mean"
    grid_orientation: str = "north_up"

    def __post_init__(self):
        _choice("OutputSpec", "mode", self.mode, ("pooled", "grid"))
        _choice("OutputSpec", "pooling", self.pooling, ("mean", "max"))
        _choice("OutputSpec", "grid_orientation", self.grid_orientation, ("north_up", "native"))
        _set(self, "scale_m", _number("OutputSpec", "scale_m", self.scale_m, lo=0, lo_open=True))

    @staticmethod
    def pooled(pooling: str = "mean") -> "OutputSpec":
        return OutputSpec(mode="pooled", pooling=pooling)

    @staticmethod
    def grid(scale_m: float = 10, *, grid_orientation: str = "north_up") -> "OutputSpec":
        return OutputSpec(mode="grid", scale_m=scale_m, grid_orientation=grid_orientation)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "OutputSpec":
        return _from_fields(cls, data, "output")


@dataclass(frozen=True)
class InputPrepSpec:
    """How a large ROI is fed to a model: ``resize`` it, ``tile`` it, or ``auto`` (tile when large)."""

    mode: str = "resize"
    tile_size: Optional[int] = None
    tile_stride: Optional[int] = None
    max_tiles: int = 9
    pad_edges: bool = True

    def __post_init__(self):
        _choice("InputPrepSpec", "mode", self.mode, ("resize", "tile", "auto"))
        _positive_int("InputPrepSpec", "tile_size", self.tile_size, allow_none=True)
        _positive_int("InputPrepSpec", "tile_stride", self.tile_stride, allow_none=True)
        _positive_int("InputPrepSpec", "max_tiles", self.max_tiles)
        if not isinstance(self.pad_edges, bool):
            raise SpecError(f"InputPrepSpec.pad_edges={self.pad_edges!r} must be true or false")

    @staticmethod
    def resize() -> "InputPrepSpec":
        return InputPrepSpec(mode="resize")

    @staticmethod
    def tile(*, tile_size=None, tile_stride=None, max_tiles=9, pad_edges=True) -> "InputPrepSpec":
        return InputPrepSpec("tile", tile_size, tile_stride, max_tiles, pad_edges)

    @staticmethod
    def auto(*, tile_size=None, tile_stride=None, max_tiles=9, pad_edges=True) -> "InputPrepSpec":
        return InputPrepSpec("auto", tile_size, tile_stride, max_tiles, pad_edges)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "InputPrepSpec":
        return _from_fields(cls, data, "input_prep")


# ---------------------------------------------------------------- dict and rs-embed conversion


def _from_fields(cls, data: Mapping[str, Any], what: str):
    if not isinstance(data, Mapping):
        raise SpecError(f"{what} must be an object, got {data!r}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise SpecError(f"{what} has unknown field(s) {unknown}; accepted: {sorted(names)}")
    try:
        return cls(**dict(data))
    except TypeError as exc:
        raise SpecError(f"{what} is incomplete: {exc}") from None


def _is_rs_embed(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] == "rs_embed"


def _rs_embed_fields(obj: Any, ours: type) -> dict:
    """The fields of an rs-embed spec (a dataclass) that our spec ``ours`` has.

    rs-embed's ``TemporalSpec`` has a ``year`` field shadowed by its ``year()``
    factory, so a range spec carries the function as its ``year``: that is read
    as "no year". A field rs-embed has and we do not (``SensorSpec.modality``,
    ``orbit``, the Sentinel-1 switches; ``InputPrepSpec.max_tiles_hard``,
    ``tile_snap_frac``) is dropped only while it holds rs-embed's own default,
    which is what our computation does; any other value is refused, naming it.
    """
    ours_names = {f.name for f in fields(ours)}
    data = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.name == "year" and callable(value):
            value = None
        if f.name in ours_names:
            data[f.name] = value
        elif value != f.default:
            raise SpecError(
                f"rs-embed {type(obj).__name__}.{f.name}={value!r} has no counterpart here; accepted: "
                f"its default {f.default!r} (fields carried over: {sorted(ours_names)})"
            )
    return data


_RS_EMBED_KINDS = {
    "PointBuffer": PointBuffer,
    "BBox": BBox,
    "TemporalSpec": TemporalSpec,
    "SensorSpec": SensorSpec,
    "OutputSpec": OutputSpec,
    "InputPrepSpec": InputPrepSpec,
}


def coerce_spec(obj: Any, kind: type):
    """Return ``obj`` as our spec class ``kind``.

    Accepts an instance of ``kind``, its ``to_dict`` form, or the rs-embed
    library's spec of the same name (converted field by field; a field rs-embed
    has and we do not is dropped at rs-embed's default and refused otherwise,
    see :func:`_rs_embed_fields`).
    """
    if obj is None or isinstance(obj, kind):
        return obj
    if kind is SpatialSpec or kind in (PointBuffer, BBox, H3Cell):
        if isinstance(obj, (PointBuffer, BBox, H3Cell)):
            return obj
        if isinstance(obj, Mapping):
            return spatial_from_dict(obj)
    elif isinstance(obj, Mapping):
        return kind.from_dict(obj)
    if _is_rs_embed(obj):
        ours = _RS_EMBED_KINDS.get(type(obj).__name__)
        spatial_ok = kind is SpatialSpec and ours in (PointBuffer, BBox)
        if ours is not None and (ours is kind or spatial_ok):
            return _from_fields(ours, _rs_embed_fields(obj, ours), type(obj).__name__)
    expected = "a spatial spec (PointBuffer, BBox, H3Cell)" if kind is SpatialSpec else kind.__name__
    raise SpecError(f"expected {expected} or its dict form, got {type(obj).__name__}: {obj!r}")


__all__ = [
    "ACCEPTED_CRS",
    "BBox",
    "H3Cell",
    "InputPrepSpec",
    "OutputSpec",
    "PointBuffer",
    "SensorSpec",
    "SpatialSpec",
    "TemporalSpec",
    "coerce_spec",
    "h3_cell_id",
    "metres_to_degrees",
    "parse_time",
    "spatial_from_dict",
]
