"""Landsat and HLS products on local disk -> :class:`~.catalog.Scene` (the local provider's catalogue).

A product is every file that shares a product id, wherever they sit: the Debian
``r-cran-satellite`` folder holds two Landsat scenes side by side, so files are
grouped by the id in their names (``LE07_L1TP_195025_20010730_20170204_01_T1_B4.TIF``,
``HLS.S30.T32UMB.2020123T103021.v2.0.B04.tif``), never by folder. The declarations
(band tables, scaling, quality bits) live in :mod:`.sensors`; this module reads file
headers and MTL metadata and never the pixels.
"""

from __future__ import annotations

import math
import threading
from datetime import date
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ...errors import ProviderError
from ...geo import union_lonlat
from .catalog import BandSource, Scene, inspect_file, relative_id, tiff_files
from .sensors import (HLS_SCALE, LANDSAT_SR_OFFSET, LANDSAT_SR_SCALE, LANDSAT_ST_OFFSET, LANDSAT_ST_SCALE,
                      Family, ProductFile, parse_mtl)

_CACHE: Dict[Tuple[str, str], Tuple[List[Scene], List[Tuple[str, str]]]] = {}
_LOCK = threading.Lock()


def _mtl(folder: Path, product_id: str) -> Optional[Dict[str, str]]:
    for name in (f"{product_id}_MTL.txt", f"{product_id}_MTL.TXT"):
        path = folder / name
        if path.is_file():
            try:
                return parse_mtl(path.read_text(errors="replace"))
            except OSError as exc:
                raise ProviderError(f"cannot read the Landsat metadata {path}: {exc}") from exc
    return None


def _float(meta: Dict[str, str], key: str) -> Optional[float]:
    try:
        value = float(meta[key])
    except (KeyError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _band_number(suffix: str) -> str:
    """``B4`` -> ``4``, ``B6_VCID_1`` -> ``6_VCID_1``, ``SR_B4`` -> ``4`` (MTL key spelling)."""
    text = suffix.upper()
    for prefix in ("SR_", "ST_"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    return text[1:] if text.startswith("B") else text


def _scaling(fam: Family, pf: ProductFile, suffix: str, mtl: Optional[Dict[str, str]]) -> Optional[Tuple[float, float]]:
    """(scale, offset) that turn a band's DN into physical values, or None when they cannot be known."""
    if fam.kind == "hls":
        return HLS_SCALE, 0.0
    if fam.kind == "landsat-l2":
        if suffix.upper().startswith("ST_"):
            return LANDSAT_ST_SCALE, LANDSAT_ST_OFFSET
        return LANDSAT_SR_SCALE, LANDSAT_SR_OFFSET
    if mtl is None:
        return None
    n = _band_number(suffix)
    mult, add = _float(mtl, f"REFLECTANCE_MULT_BAND_{n}"), _float(mtl, f"REFLECTANCE_ADD_BAND_{n}")
    if mult is not None and add is not None:
        elevation = _float(mtl, "SUN_ELEVATION")
        s = math.sin(math.radians(elevation)) if elevation is not None and elevation > 0 else 1.0
        return mult / s, add / s
    mult, add = _float(mtl, f"RADIANCE_MULT_BAND_{n}"), _float(mtl, f"RADIANCE_ADD_BAND_{n}")
    if mult is not None and add is not None:
        return mult, add
    return None


def scan_products(root: Path, fam: Family) -> Tuple[List[Scene], List[Tuple[str, str]]]:
    """Every product of ``fam`` under ``root`` as a Scene keyed by common band names."""
    groups: Dict[Tuple[Path, str], Dict[str, Tuple[ProductFile, Path]]] = {}
    skipped: List[Tuple[str, str]] = []
    for path in tiff_files(root):
        pf = fam.parse(path.stem)
        if pf is None:
            skipped.append((str(path), f"not a {fam.title} file name"))
            continue
        groups.setdefault((path.parent, pf.product_id), {})[pf.suffix.upper()] = (pf, path)
    scenes: List[Scene] = []
    for (folder, pid), files in sorted(groups.items()):
        pf = next(iter(files.values()))[0]
        mtl = _mtl(folder, pid) if fam.kind.startswith("landsat") else None
        if fam.kind == "landsat-l1" and mtl is None:
            skipped.append((str(folder / pid), "Level-1 product without its _MTL.txt (needed for reflectance)"))
            continue
        when = pf.acquired
        cloud = _float(mtl, "CLOUD_COVER") if mtl else None
        if mtl and mtl.get("DATE_ACQUIRED"):
            try:
                when = date.fromisoformat(mtl["DATE_ACQUIRED"][:10])
            except ValueError:
                pass
        bands: Dict[str, BandSource] = {}
        infos = []
        for common, suffix in pf.sensor.bands.items():
            hit = files.get(suffix.upper())
            if hit is None:
                continue
            info = inspect_file(hit[1])
            if info is None:
                skipped.append((str(hit[1]), "not a georeferenced raster"))
                continue
            scaling = _scaling(fam, pf, suffix, mtl)
            if scaling is None:
                skipped.append((str(hit[1]), f"no scaling for band {suffix} in the MTL"))
                continue
            bands[common] = BandSource(str(hit[1]), 1, *scaling)
            infos.append(info)
            if cloud is None and info.cloud_pct is not None:
                cloud = info.cloud_pct
        if not bands:
            skipped.append((str(folder / pid), "no band file of the product"))
            continue
        rule = fam.qa_rule(pf)
        qa_hit = files.get(rule.band.upper())
        scenes.append(Scene(
            id=relative_id(root, folder / pid, strip_suffix=False),
            path=str(folder),
            date=when,
            cloud_pct=cloud,
            crs=infos[0].crs,
            bounds_lonlat=union_lonlat([i.bounds_lonlat for i in infos]),
            bands=bands,
            sensor=pf.sensor.title,
            qa=BandSource(str(qa_hit[1]), 1) if qa_hit else None,
            qa_rule=rule if qa_hit else None,
            fill_dn=0.0 if fam.kind.startswith("landsat") else None,
        ))
    scenes.sort(key=lambda sc: (sc.date, sc.id))
    return scenes, skipped


def product_catalogue(root: Path, fam: Family) -> Tuple[List[Scene], List[Tuple[str, str]]]:
    """The (cached) products of ``fam`` under ``root``; :func:`forget` drops the cache."""
    key = (str(root), fam.name)
    with _LOCK:
        cached = _CACHE.get(key)
    if cached is not None:
        return cached
    fresh = scan_products(root, fam)
    with _LOCK:
        _CACHE[key] = fresh
    return fresh


def forget(directory=None) -> None:
    with _LOCK:
        if directory is None:
            _CACHE.clear()
        else:
            root = str(Path(directory).expanduser().resolve())
            for key in [k for k in _CACHE if k[0] == root]:
                del _CACHE[key]


__all__ = ["forget", "product_catalogue", "scan_products"]
