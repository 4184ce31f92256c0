"""The local provider's scene catalogue: which GeoTIFF/COG scenes a source directory holds.

Every ``*.tif``/``*.tiff`` under a source directory (recursively) is inspected once,
headers only, never pixels. A scene is

* a multi-band file whose band descriptions name its bands (``B02``, ``B03``, ...), or
* a folder holding one single-band file per band, named after the band (``B04.tif``
  or an alias such as ``red.tif``), the layout of Element84 earth-search
  Sentinel-2 L2A COGs.

The acquisition date and cloud percentage come from the dataset tags
``ACQUISITION_DATE`` (``YYYY-MM-DD``) and ``CLOUDY_PIXEL_PERCENTAGE``, or from the
``index.json`` of the source directory (see :func:`build_index`), or
from a STAC item JSON next to the scene (``properties.datetime``,
``properties["eo:cloud_cover"]``). Files without a date (a label raster, say) are
skipped. Digital numbers become physical values as ``DN * BOA_SCALE + BOA_OFFSET``
(dataset tags; else GDAL's per-band scale/offset; else the STAC ``raster:bands``;
else 1 and 0).

The catalogue is kept in memory per directory (thread-safe; one scan per directory at
a time) and re-read when its ``index.json`` changes. Landsat and HLS products have
their own catalogue in :mod:`.local_products`, made of the same :class:`Scene` records.
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import rasterio
from rasterio.errors import RasterioError
from rasterio.warp import transform_bounds

from ...errors import ProviderError
from ...geo import union_lonlat
from ..grid import LONLAT
from .bands import band_from_stem, canonical_band

INDEX_NAME = "index.json"
TIFF_SUFFIXES = (".tif", ".tiff")

_DATE_TAGS = ("ACQUISITION_DATE", "SENSING_DATE", "DATE_ACQUIRED")
_CLOUD_TAGS = ("CLOUDY_PIXEL_PERCENTAGE", "CLOUD_COVERAGE_ASSESSMENT", "CLOUD_COVER", "CLOUD_COVERAGE")


@dataclass(frozen=True)
class BandSource:
    """Where one band of a scene lives: a file, its 1-based band index, and how DN become values."""

    path: str
    index: int
    scale: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True)
class Scene:
    """One acquisition: an id (path relative to the source dir), its date, cloud %, footprint, bands."""

    id: str
    path: str
    date: date
    cloud_pct: Optional[float]
    crs: str
    bounds_lonlat: Tuple[float, float, float, float]  # west > east when it crosses the antimeridian
    bands: Mapping[str, BandSource]  # canonical band name -> source (common names for Landsat/HLS)
    sensor: Optional[str] = None  # the instrument, for product families (Landsat 7 ETM+, HLS S30, ...)
    qa: Optional[BandSource] = None  # the quality band whose rule masks pixels
    qa_rule: Any = None  # a sensors.QaRule
    fill_dn: Optional[float] = None  # a stored value that means no data when the file declares none

    def missing(self, canonical_bands: Sequence[str]) -> List[str]:
        return [b for b in canonical_bands if b not in self.bands]


def _parse_date(value: Any) -> Optional[date]:
    if value is None:
        return None
    if isinstance(value, date):
        return value
    text = str(value).strip()
    for candidate in (text[:10], text[:10].replace(":", "-"), text[:8]):
        try:
            if len(candidate) == 8 and candidate.isdigit():
                return date(int(candidate[:4]), int(candidate[4:6]), int(candidate[6:8]))
            return date.fromisoformat(candidate)
        except ValueError:
            continue
    return None


def _parse_float(value: Any) -> Optional[float]:
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _first_tag(tags: Mapping[str, str], names: Sequence[str]) -> Optional[str]:
    upper = {k.upper(): v for k, v in tags.items()}
    for name in names:
        if upper.get(name) not in (None, ""):
            return upper[name]
    return None


def _lonlat_bounds(crs, bounds) -> Tuple[float, float, float, float]:
    return tuple(float(v) for v in transform_bounds(crs, LONLAT, *bounds, densify_pts=21))  # type: ignore[return-value]


@dataclass
class FileInfo:
    """What one raster file's header says: georeferencing, band names, date, clouds, scaling."""

    path: Path
    crs: str
    bounds: Tuple[float, float, float, float]
    bounds_lonlat: Tuple[float, float, float, float]
    count: int
    descriptions: Tuple[Optional[str], ...]
    date: Optional[date]
    cloud_pct: Optional[float]
    scales: Tuple[float, ...]
    offsets: Tuple[float, ...]
    has_scale: bool  # scale/offset came from the file (tags or GDAL metadata)
    width: int
    height: int
    res: Tuple[float, float]


def inspect_file(path: Path) -> Optional[FileInfo]:
    """Read a file's header (never its pixels). None when it is not a georeferenced raster."""
    try:
        with rasterio.open(path) as ds:
            if ds.crs is None:
                return None
            tags = ds.tags()
            scale_tag = _parse_float(_first_tag(tags, ("BOA_SCALE",)))
            offset_tag = _parse_float(_first_tag(tags, ("BOA_OFFSET",)))
            if scale_tag is not None or offset_tag is not None:
                scales = (scale_tag if scale_tag is not None else 1.0,) * ds.count
                offsets = (offset_tag if offset_tag is not None else 0.0,) * ds.count
                has_scale = True
            else:
                scales = tuple(float(v) if v is not None else 1.0 for v in ds.scales)
                offsets = tuple(float(v) if v is not None else 0.0 for v in ds.offsets)
                has_scale = any(v != 1.0 for v in scales) or any(v != 0.0 for v in offsets)
            crs = ds.crs.to_string()
            bounds = tuple(float(v) for v in ds.bounds)
            return FileInfo(
                path=path,
                crs=crs,
                bounds=bounds,  # type: ignore[arg-type]
                bounds_lonlat=_lonlat_bounds(ds.crs, bounds),
                count=ds.count,
                descriptions=tuple(ds.descriptions),
                date=_parse_date(_first_tag(tags, _DATE_TAGS)),
                cloud_pct=_parse_float(_first_tag(tags, _CLOUD_TAGS)),
                scales=scales,
                offsets=offsets,
                has_scale=has_scale,
                width=ds.width,
                height=ds.height,
                res=(float(ds.res[0]), float(ds.res[1])),
            )
    except (RasterioError, ValueError):
        return None


def _stac_sidecar(candidates: Sequence[Path]) -> Optional[dict]:
    """Date, cloud % and per-band scale/offset from a STAC item JSON, if one of ``candidates`` is one."""
    for path in candidates:
        if path.name == INDEX_NAME or not path.is_file():
            continue
        try:
            item = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        props = item.get("properties") if isinstance(item, dict) else None
        if not isinstance(props, dict):
            continue
        when = _parse_date(props.get("datetime") or props.get("start_datetime"))
        if when is None:
            continue
        scales: Dict[str, Tuple[float, float]] = {}
        for key, asset in (item.get("assets") or {}).items():
            rb = asset.get("raster:bands") if isinstance(asset, dict) else None
            if isinstance(rb, list) and rb and isinstance(rb[0], dict) and "scale" in rb[0]:
                scales[canonical_band(key)] = (float(rb[0].get("scale", 1.0)), float(rb[0].get("offset", 0.0)))
        return {"date": when, "cloud_pct": _parse_float(props.get("eo:cloud_cover")), "scales": scales}
    return None


def relative_id(root: Path, path: Path, *, strip_suffix: bool) -> str:
    """A scene id: ``path`` relative to the source directory (POSIX, optionally without suffix)."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = path
    if strip_suffix:
        rel = rel.with_suffix("")
    text = rel.as_posix()
    return path.name if text in ("", ".") else text


def _file_scene(root: Path, info: FileInfo, hint: Mapping[str, Any]) -> Tuple[Optional[Scene], str]:
    """A multi-band file as a scene, or (None, why it was skipped)."""
    names: Sequence[Optional[str]] = hint.get("bands") or info.descriptions
    if len(names) != info.count:
        names = list(names)[: info.count] + [None] * max(0, info.count - len(names))
    side = _stac_sidecar([info.path.with_suffix(".json")])
    when = info.date or _parse_date(hint.get("date")) or (side or {}).get("date")
    if when is None:
        return None, "no acquisition date"
    cloud = info.cloud_pct if info.cloud_pct is not None else _parse_float(hint.get("cloud_pct"))
    if cloud is None and side:
        cloud = side["cloud_pct"]
    bands: Dict[str, BandSource] = {}
    for i, name in enumerate(names):
        if not name:
            continue
        band = canonical_band(name)
        scale, offset = info.scales[i], info.offsets[i]
        if not info.has_scale:
            scale, offset = _hinted_scale(hint, band, scale, offset)
        bands.setdefault(band, BandSource(str(info.path), i + 1, scale, offset))
    if not bands:
        return None, "no band names (set band descriptions or list 'bands' in index.json)"
    scene = Scene(
        id=relative_id(root, info.path, strip_suffix=True),
        path=str(info.path),
        date=when,
        cloud_pct=cloud,
        crs=info.crs,
        bounds_lonlat=info.bounds_lonlat,
        bands=bands,
    )
    return scene, ""


def _hinted_scale(hint: Mapping[str, Any], band: str, scale: float, offset: float) -> Tuple[float, float]:
    per_band = hint.get("scales") or {}
    per_band_off = hint.get("offsets") or {}
    if band in per_band:
        return float(per_band[band]), float(per_band_off.get(band, 0.0))
    if hint.get("boa_scale") is not None or hint.get("boa_offset") is not None:
        s = _parse_float(hint.get("boa_scale"))
        o = _parse_float(hint.get("boa_offset"))
        return (s if s is not None else 1.0), (o if o is not None else 0.0)
    return scale, offset


def _folder_scene(root: Path, folder: Path, members: Mapping[str, FileInfo], hint: Mapping[str, Any]):
    """A folder of single-band files as a scene, or (None, why it was skipped)."""
    dated = [m for m in members.values() if m.date is not None]
    side = _stac_sidecar(sorted(folder.glob("*.json")))
    when = (dated[0].date if dated else None) or _parse_date(hint.get("date")) or (side or {}).get("date")
    if when is None:
        return None, "no acquisition date"
    clouds = [m.cloud_pct for m in members.values() if m.cloud_pct is not None]
    cloud = clouds[0] if clouds else _parse_float(hint.get("cloud_pct"))
    if cloud is None and side:
        cloud = side["cloud_pct"]
    bands: Dict[str, BandSource] = {}
    for band, info in sorted(members.items()):
        scale, offset = info.scales[0], info.offsets[0]
        if not info.has_scale:
            if side and band in side["scales"]:
                scale, offset = side["scales"][band]
            else:
                scale, offset = _hinted_scale(hint, band, scale, offset)
        bands[band] = BandSource(str(info.path), 1, scale, offset)
    first = next(iter(members.values()))
    scene = Scene(
        id=relative_id(root, folder, strip_suffix=False),
        path=str(folder),
        date=when,
        cloud_pct=cloud,
        crs=first.crs,
        bounds_lonlat=union_lonlat([m.bounds_lonlat for m in members.values()]),
        bands=bands,
    )
    return scene, ""


def tiff_files(root: Path) -> List[Path]:
    """Every GeoTIFF under ``root``, sorted, skipping hidden files and folders."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(TIFF_SUFFIXES):
                out.append(Path(dirpath) / name)
    return out


def _read_index(root: Path) -> Optional[List[dict]]:
    path = root / INDEX_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ProviderError(f"{path} is not a readable JSON index: {exc}; rebuild it with LocalProvider.build_index") from exc
    if isinstance(data, dict):
        data = data.get("scenes")
    if not isinstance(data, list) or not all(isinstance(e, dict) and "path" in e for e in data):
        raise ProviderError(
            f"{path} must be a JSON list of objects with at least 'path' (and 'date', 'cloud_pct'); "
            "rebuild it with LocalProvider.build_index"
        )
    return data


def _index_key(root: Path, value: str) -> str:
    p = Path(value)
    return str((p if p.is_absolute() else root / p).resolve())


def _scan(root: Path, hints: Mapping[str, Mapping[str, Any]]) -> Tuple[List[Scene], List[Tuple[str, str]]]:
    """Inspect every GeoTIFF under ``root``; ``hints`` (absolute path -> index entry) fill gaps."""
    scenes: List[Scene] = []
    skipped: List[Tuple[str, str]] = []
    folders: Dict[Path, Dict[str, FileInfo]] = {}
    for path in tiff_files(root):
        info = inspect_file(path)
        if info is None:
            skipped.append((str(path), "not a georeferenced raster"))
            continue
        band = band_from_stem(path.stem) if info.count == 1 else None
        if band is not None:
            folders.setdefault(path.parent, {}).setdefault(band, info)
            continue
        scene, why = _file_scene(root, info, hints.get(str(path.resolve()), {}))
        if scene is None:
            skipped.append((str(path), why))
        else:
            scenes.append(scene)
    for folder, members in sorted(folders.items()):
        scene, why = _folder_scene(root, folder, members, hints.get(str(folder.resolve()), {}))
        if scene is None:
            skipped.append((str(folder), why))
        else:
            scenes.append(scene)
    scenes.sort(key=lambda sc: (sc.date, sc.id))
    return scenes, skipped


def _scene_from_entry(root: Path, entry: Mapping[str, Any]) -> Tuple[Optional[Scene], str]:
    """An index entry as a scene; complete entries need no file access, others are inspected."""
    path = Path(_index_key(root, str(entry["path"])))
    when = _parse_date(entry.get("date"))
    if when is None:
        return None, "index entry without a valid 'date'"
    is_dir = entry.get("kind") == "folder" or (entry.get("kind") is None and path.is_dir())
    complete = bool(entry.get("bounds_lonlat") and entry.get("crs") and entry.get("bands"))
    if complete and is_dir and not entry.get("files"):
        complete = False
    if complete:
        bands: Dict[str, BandSource] = {}
        scales = entry.get("scales") or {}
        offsets = entry.get("offsets") or {}
        default_scale = _parse_float(entry.get("boa_scale"))
        default_offset = _parse_float(entry.get("boa_offset"))
        files = entry.get("files") or {}
        for i, name in enumerate(entry["bands"]):
            if not name:
                continue
            band = canonical_band(name)
            if files:
                rel = files.get(band) or files.get(name)
                if rel is None:
                    continue
                source_path, index = str((path / rel).resolve()), 1
            else:
                source_path, index = str(path), i + 1
            scale = _parse_float(scales.get(band))
            offset = _parse_float(offsets.get(band))
            bands.setdefault(
                band,
                BandSource(
                    source_path,
                    index,
                    scale if scale is not None else (default_scale if default_scale is not None else 1.0),
                    offset if offset is not None else (default_offset if default_offset is not None else 0.0),
                ),
            )
        box = tuple(float(v) for v in entry["bounds_lonlat"])
        scene = Scene(
            id=relative_id(root, path, strip_suffix=not is_dir),
            path=str(path),
            date=when,
            cloud_pct=_parse_float(entry.get("cloud_pct")),
            crs=str(entry["crs"]),
            bounds_lonlat=box,  # type: ignore[arg-type]
            bands=bands,
        )
        return scene, ""
    # incomplete (hand-written) entry: inspect the file or folder, the entry wins for date/cloud
    if is_dir:
        members: Dict[str, FileInfo] = {}
        for f in sorted(path.iterdir()):
            if f.suffix.lower() in TIFF_SUFFIXES and band_from_stem(f.stem):
                info = inspect_file(f)
                if info is not None and info.count == 1:
                    members.setdefault(band_from_stem(f.stem), info)  # type: ignore[arg-type]
        if not members:
            return None, "index entry folder holds no single-band files named after bands"
        scene, why = _folder_scene(root, path, members, entry)
    else:
        info = inspect_file(path)
        if info is None:
            return None, "index entry path is not a readable georeferenced raster"
        scene, why = _file_scene(root, info, entry)
    if scene is None:
        return None, why
    cloud = _parse_float(entry.get("cloud_pct"))
    return (
        Scene(scene.id, scene.path, when, cloud if cloud is not None else scene.cloud_pct, scene.crs,
              scene.bounds_lonlat, scene.bands),
        "",
    )


@dataclass
class Catalogue:
    """The scenes of one source directory, what was skipped and why, and where they came from."""

    scenes: List[Scene]
    skipped: List[Tuple[str, str]]
    index_stamp: Optional[Tuple[int, int]]  # (mtime_ns, size) of index.json when read; None: scanned
    from_index: bool


_CATALOGUES: Dict[str, Catalogue] = {}
_CATALOGUE_LOCK = threading.Lock()
_DIR_LOCKS: Dict[str, threading.Lock] = {}


def _index_stamp(root: Path) -> Optional[Tuple[int, int]]:
    try:
        st = (root / INDEX_NAME).stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _load_catalogue(root: Path) -> Catalogue:
    stamp = _index_stamp(root)
    entries = _read_index(root) if stamp is not None else None
    if entries is None:
        scenes, skipped = _scan(root, {})
        return Catalogue(scenes, skipped, None, False)
    scenes, skipped = [], []
    for entry in entries:
        scene, why = _scene_from_entry(root, entry)
        if scene is None:
            skipped.append((str(entry.get("path")), why))
        else:
            scenes.append(scene)
    scenes.sort(key=lambda sc: (sc.date, sc.id))
    return Catalogue(scenes, skipped, stamp, True)


def catalogue(directory) -> Catalogue:
    """The (cached) scene catalogue of a source directory; re-read when its index.json changes."""
    root = Path(directory).expanduser().resolve()
    if not root.is_dir():
        raise ProviderError(f"local imagery source {str(root)!r} is not a directory")
    key = str(root)
    with _CATALOGUE_LOCK:
        dir_lock = _DIR_LOCKS.setdefault(key, threading.Lock())
    with dir_lock:  # one scan per directory at a time; other directories proceed
        with _CATALOGUE_LOCK:
            cached = _CATALOGUES.get(key)
        stamp = _index_stamp(root)
        if cached is not None and cached.index_stamp == stamp:
            return cached
        fresh = _load_catalogue(root)
        with _CATALOGUE_LOCK:
            _CATALOGUES[key] = fresh
        return fresh


def forget(directory=None) -> None:
    """Drop the cached catalogue of ``directory`` (all directories when None)."""
    from .local_products import forget as forget_products

    forget_products(directory)
    with _CATALOGUE_LOCK:
        if directory is None:
            _CATALOGUES.clear()
        else:
            _CATALOGUES.pop(str(Path(directory).expanduser().resolve()), None)


def _index_entry(root: Path, scene: Scene) -> dict:
    path = Path(scene.path)
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        rel = str(path)
    names = list(scene.bands)
    entry: Dict[str, Any] = {
        "path": rel,
        "kind": "folder" if path.is_dir() else "file",
        "date": scene.date.isoformat(),
        "cloud_pct": scene.cloud_pct,
        "crs": scene.crs,
        "bounds_lonlat": [round(v, 9) for v in scene.bounds_lonlat],
    }
    if path.is_dir():
        entry["bands"] = names
        entry["files"] = {b: Path(src.path).relative_to(path).as_posix() for b, src in scene.bands.items()}
    else:
        by_index: List[Optional[str]] = [None] * max(src.index for src in scene.bands.values())
        for b, src in scene.bands.items():
            by_index[src.index - 1] = b
        entry["bands"] = by_index
    first = next(iter(scene.bands.values()))
    try:
        with rasterio.open(first.path) as ds:
            entry["bounds"] = [float(v) for v in ds.bounds]
            entry["width"], entry["height"] = ds.width, ds.height
            entry["res"] = [float(ds.res[0]), float(ds.res[1])]
            entry["nodata"] = ds.nodata if ds.nodata is None or math.isfinite(ds.nodata) else None
    except RasterioError:  # pragma: no cover - the scan just opened it
        pass
    scales = {b: src.scale for b, src in scene.bands.items()}
    offsets = {b: src.offset for b, src in scene.bands.items()}
    if len(set(scales.values())) == 1 and len(set(offsets.values())) == 1:
        entry["boa_scale"] = first.scale
        entry["boa_offset"] = first.offset
    entry["scales"] = scales
    entry["offsets"] = offsets
    return entry


def build_index(directory) -> Path:
    """Scan ``directory`` and write its ``index.json``; return the path.

    One entry per scene: ``path`` (relative), ``kind`` (file|folder), ``date``,
    ``cloud_pct``, ``crs``, ``bounds_lonlat``, ``bounds``, ``bands`` (in band order
    for a file), ``files`` (band -> file, folders), ``width``/``height``/``res``,
    ``nodata``, ``boa_scale``/``boa_offset`` and per-band ``scales``/``offsets``.
    Dates, clouds and scales in an existing index fill in what file tags lack.
    The file is replaced atomically, so readers never see half an index.
    """
    root = Path(directory).expanduser().resolve()
    if not root.is_dir():
        raise ProviderError(f"cannot index {str(root)!r}: not a directory")
    hints: Dict[str, Mapping[str, Any]] = {}
    for entry in _read_index(root) or []:
        hints[_index_key(root, str(entry["path"]))] = entry
    scenes, _skipped = _scan(root, hints)
    entries = [_index_entry(root, sc) for sc in scenes]
    target = root / INDEX_NAME
    tmp = root / f".{INDEX_NAME}.tmp-{os.getpid()}-{threading.get_ident()}"
    tmp.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, target)
    forget(root)
    return target


__all__ = [
    "BandSource",
    "Catalogue",
    "FileInfo",
    "INDEX_NAME",
    "Scene",
    "TIFF_SUFFIXES",
    "build_index",
    "catalogue",
    "forget",
    "inspect_file",
    "relative_id",
    "tiff_files",
]
