"""Where the AlphaEarth / Google Satellite Embedding COGs are: the published layout.

The published layout (``gs://alphaearth_foundations/satellite_embedding/v1/annual``
and its mirrors) is one directory per year, one per UTM zone inside it (``32N``,
``7S``: zone number and hemisphere), and in each zone directory a number of
8192 x 8192 x 64 int8 COGs in that zone's CRS (EPSG:326zz north, 327zz south).

A :class:`Catalogue` lists the files of one (year, zone) on first use and keeps
their footprints in memory (one header read per file, once per process):

* a local ``root`` is listed directly (``*.tif``/``*.tiff``; ``.vrt`` sidecars that
  some mirrors ship to flip bottom-up files are ignored: the reader handles either
  orientation itself);
* any ``root`` GDAL can open but not list (``s3://``, ``gs://``, ``https://``,
  ``/vsi...``) needs an ``index``: a Parquet or CSV table with a ``path`` column
  (relative to ``root``, or absolute/URL) and ``year``, and optionally ``utm_zone``,
  ``crs`` and ``utm_west``/``utm_south``/``utm_east``/``utm_north`` (with those, no
  header is read to plan a request). A local root may use one too.
"""

from __future__ import annotations

import math
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ...errors import NoImageryError, ProviderError
from ..grid import utm_crs_of_zone, utm_zone, utm_zones
from .products_raster import bounds_of

ZONE_RE = re.compile(r"^(\d{1,2})([NS])$")
_SUFFIXES = (".tif", ".tiff")


def zone_name(lon: float, lat: float) -> str:
    """The zone directory name of a point: ``32N``, ``7S``."""
    return f"{utm_zone(lon)}{'N' if lat >= 0 else 'S'}"


def zone_crs(zone: str) -> str:
    """The CRS of a zone directory name: ``32N`` -> ``EPSG:32632``."""
    m = ZONE_RE.match(zone)
    if not m:
        raise ProviderError(f"{zone!r} is not a UTM zone directory name such as '32N' or '7S'")
    return utm_crs_of_zone(int(m.group(1)), m.group(2) == "N")


def zones_for(bounds_lonlat: Tuple[float, float, float, float]) -> List[str]:
    """The zone directories a lon/lat box touches, west to east, south before north."""
    w, s, e, n = bounds_lonlat
    first, last = utm_zone(w), utm_zone(e)
    hemis = ([] if s >= 0 else ["S"]) + ([] if n < 0 else ["N"])
    return [f"{z}{h}" for z in range(first, last + 1) for h in hemis]


def owner(zone: str):
    """``owns(lon, lat)`` for files of ``zone``: pixel centres in that zone and hemisphere."""
    m = ZONE_RE.match(zone)
    number, north = int(m.group(1)), m.group(2) == "N"

    def owns(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        return (utm_zones(lon) == number) & ((lat >= 0) if north else (lat < 0))

    return owns


def is_remote(root: str) -> bool:
    return "://" in root or root.startswith("/vsi")


def join(root: str, rel: str) -> str:
    if is_remote(rel) or os.path.isabs(rel):
        return rel
    return root.rstrip("/") + "/" + rel.lstrip("/")


@dataclass(frozen=True)
class CogFile:
    """One COG: ``id`` (``year/zone/name``), the path GDAL opens, its zone, CRS and footprint."""

    id: str
    path: str
    zone: str
    crs: str
    bounds: Tuple[float, float, float, float]  # minx, miny, maxx, maxy in crs


def _header(path: str, rel: str, zone: str) -> CogFile:
    import rasterio
    from rasterio.errors import RasterioError

    try:
        with rasterio.open(path) as ds:
            if ds.count != 64 or ds.dtypes[0] != "int8" or ds.crs is None:
                raise ProviderError(
                    f"{path} is not a Satellite Embedding COG: expected 64 int8 bands with a CRS, "
                    f"got {ds.count} band(s) of {ds.dtypes[0]} (crs {ds.crs})"
                )
            return CogFile(rel, path, zone, ds.crs.to_string(), bounds_of(ds.transform, ds.width, ds.height))
    except (RasterioError, OSError) as exc:
        raise ProviderError(f"could not read the header of {path}: {exc}") from exc


def _read_index(path: str) -> List[dict]:
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    try:
        table = pcsv.read_csv(path) if path.lower().endswith(".csv") else pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a configuration problem
        raise ProviderError(f"could not read the GSE index {path!r}: {exc}") from exc
    if "path" not in table.column_names or "year" not in table.column_names:
        raise ProviderError(
            f"the GSE index {path!r} needs columns 'path' and 'year' (optional: utm_zone, crs, utm_west, "
            f"utm_south, utm_east, utm_north); it has {table.column_names}"
        )
    return table.to_pylist()


class Catalogue:
    """The COGs under one root, listed per (year, zone) on first use (thread-safe)."""

    def __init__(self, root: str, index: Optional[str] = None):
        self.root = str(root)
        self.index = index
        self._lock = threading.Lock()
        self._files: Dict[Tuple[int, str], List[CogFile]] = {}
        self._rows: Optional[Dict[Tuple[int, str], List[dict]]] = None
        if index is None and is_remote(self.root):
            raise ProviderError(
                f"gse root {self.root!r} cannot be listed: give the setting 'index' (a Parquet or CSV file "
                "listing the COGs, columns path and year; see docs/products.md)"
            )
        if index is None and not Path(self.root).is_dir():
            raise ProviderError(f"gse root {self.root!r} is not a directory (it should hold one folder per year)")

    def years(self) -> List[int]:
        if self.index is not None:
            return sorted({y for y, _ in self._index_rows()})
        return sorted(int(p.name) for p in Path(self.root).iterdir() if p.is_dir() and p.name.isdigit())

    def files(self, year: int, zone: str) -> List[CogFile]:
        key = (int(year), zone)
        with self._lock:
            if key not in self._files:
                self._files[key] = self._list(*key)
            return self._files[key]

    def _index_rows(self) -> Dict[Tuple[int, str], List[dict]]:
        if self._rows is None:
            rows: Dict[Tuple[int, str], List[dict]] = {}
            for row in _read_index(self.index):
                rel = str(row["path"])
                zone = row.get("utm_zone") or next((p for p in reversed(rel.split("/")[:-1]) if ZONE_RE.match(p)), None)
                if zone is None:
                    raise ProviderError(f"GSE index row {rel!r} names no UTM zone (column utm_zone or a '32N' folder)")
                rows.setdefault((int(row["year"]), str(zone)), []).append(row)
            self._rows = rows
        return self._rows

    def _list(self, year: int, zone: str) -> List[CogFile]:
        out: List[CogFile] = []
        if self.index is not None:
            for row in self._index_rows().get((year, zone), []):
                rel = str(row["path"])
                path = join(self.root, rel)
                box = [row.get(k) for k in ("utm_west", "utm_south", "utm_east", "utm_north")]
                if row.get("crs") and all(v is not None and math.isfinite(float(v)) for v in box):
                    out.append(CogFile(rel, path, zone, str(row["crs"]), tuple(float(v) for v in box)))
                else:
                    out.append(_header(path, rel, zone))
            return out
        folder = Path(self.root) / str(year) / zone
        if not folder.is_dir():
            return out
        for f in sorted(folder.iterdir()):
            if f.name.startswith(".") or f.suffix.lower() not in _SUFFIXES:
                continue
            out.append(_header(str(f), f"{year}/{zone}/{f.name}", zone))
        return out

    def missing_year(self, year: int) -> NoImageryError:
        have = self.years()
        return NoImageryError(
            f"the gse root {self.root!r} holds no layer for year {year} (years present: {have or 'none'})"
        )


_CATALOGUES: Dict[Tuple[str, Optional[str]], Catalogue] = {}
_LOCK = threading.Lock()


def catalogue(root: str, index: Optional[str] = None) -> Catalogue:
    """The shared catalogue of ``root`` (one per process, so headers are read once)."""
    key = (str(root), None if index is None else str(index))
    with _LOCK:
        if key not in _CATALOGUES:
            _CATALOGUES[key] = Catalogue(*key)
        return _CATALOGUES[key]


def forget() -> None:
    with _LOCK:
        _CATALOGUES.clear()


def files_for(cat: Catalogue, year: int, grid_crs: str, grid_bounds: Sequence[float],
              bounds_lonlat: Tuple[float, float, float, float]) -> List[CogFile]:
    """The files of ``year`` whose footprint meets a grid; the grid's own zone first."""
    from rasterio.warp import transform_bounds

    from .products_raster import overlaps

    zones = zones_for(bounds_lonlat)
    zones.sort(key=lambda z: zone_crs(z) != grid_crs)
    out: List[CogFile] = []
    for zone in zones:
        files = cat.files(year, zone)
        if not files:
            continue
        crs = zone_crs(zone)
        box = tuple(grid_bounds) if crs == grid_crs else transform_bounds(grid_crs, crs, *grid_bounds, densify_pts=21)
        out.extend(f for f in files if overlaps(f.bounds, box))  # type: ignore[arg-type]
    return out


__all__ = ["Catalogue", "CogFile", "catalogue", "files_for", "forget", "owner", "zone_crs", "zone_name", "zones_for"]
