"""The ``local`` imagery provider: GeoTIFF/COG scenes in local directories -> :class:`Pixels`.

Configuration (machine-specific, never part of a key)::

    LocalProvider({"sources": {"s2-l2a": "/data/s2", ...},   # collection -> directory
                   "resampling": "bilinear"})                 # optional (nearest, cubic, average, ...)

The environment variable ``RSEMBED_SOURCES=name=dir[,name=dir]`` is the fallback for
collections the configuration does not name.

Scenes
======
Every ``*.tif``/``*.tiff`` under a source directory is catalogued once (dated
multi-band files, or folders of single-band files named after their bands, with
dates and clouds from tags, ``index.json`` or STAC sidecars): see :mod:`.catalog`.

The grid
========
Every request is answered on a north-up grid in the UTM zone of the ROI centre
(``EPSG:326zz`` north, ``EPSG:327zz`` south), with square pixels of
``sensor.scale_m`` ground metres and the origin on a multiple of ``scale_m``. See
:func:`rsembed_store.ingest.grid.target_grid` for how each ROI kind maps onto it.

Landsat and HLS
===============
The collection names ``landsat-c2-l2``, ``landsat-l1``, ``hls-s30``, ``hls-l30`` and
``hls`` (see :mod:`.sensors`) read product files grouped by product id
(``<product id>_SR_B4.TIF``, ``HLS.S30.<tile>.<date>.v2.0.B04.tif``), name bands by
common name (``red``, ``nir``, ...), scale DN as each product documents (the MTL for
Level-1) and mask the pixels each product's quality band rejects. See
:mod:`.local_products` and ``docs/providers/local.md``.

Reading and compositing
=======================
Each selected scene is read through a GDAL warped VRT on the target grid: GDAL
computes the source window the grid needs and reads only those blocks, from the
coarsest internal overview that is still at least as fine as the grid when the grid
is coarser than the data. No data (the file's nodata value, NaN, or
outside the file) becomes NaN. A scene pixel counts only when every requested band
has data there. ``median`` takes the per-band NaN-median over scenes; ``mosaic``
takes the whole spectrum of the latest valid scene (by date, then id); see
:mod:`rsembed_store.ingest.composite`.

This module re-exports the names callers used to import from it (``canonical_band``,
``target_grid``, ``catalogue``, ``composite``, ...); new code imports them from their
own modules.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import Resampling

from ...errors import NoImageryError, ProviderError
from ...keys import ResolvedRequest
from ..composite import composite
from ..grid import LONLAT, TargetGrid, overview_level, target_grid, utm_crs
from .bands import BAND_ALIASES, CATEGORICAL_BANDS, canonical_band
from .base import Pixels, Provider
from ...geo import intersects
from .catalog import INDEX_NAME, BandSource, Scene, build_index, catalogue, forget
from .sensors import family

ENV_SOURCES = "RSEMBED_SOURCES"


# ------------------------------------------------------------------ the provider


def _parse_sources_env(text: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, directory = part.partition("=")
        if not sep or not name.strip() or not directory.strip():
            raise ProviderError(
                f"{ENV_SOURCES}={text!r} is not accepted: entry {part!r} must be 'name=dir' "
                "(several entries separated by commas)"
            )
        out[name.strip()] = directory.strip()
    return out


class LocalProvider(Provider):
    """Imagery from GeoTIFF/COG scenes on local disk (see the module docstring)."""

    name = "local"

    def __init__(self, config: Optional[Mapping] = None):
        super().__init__(config)
        sources = self.config.get("sources", {})
        if not isinstance(sources, Mapping) or not all(
            isinstance(k, str) and isinstance(v, (str, os.PathLike)) for k, v in sources.items()
        ):
            raise ProviderError(
                f"local provider config 'sources'={sources!r} must map collection names to directories, "
                "e.g. {'s2-l2a': '/data/s2'}"
            )
        self._sources = {k: os.fspath(v) for k, v in sources.items()}
        name = str(self.config.get("resampling", "bilinear"))
        try:
            self._resampling = Resampling[name]
        except KeyError:
            raise ProviderError(
                f"local provider config resampling={name!r} is not accepted; use one of "
                "['nearest', 'bilinear', 'cubic', 'average', 'lanczos', 'mode']"
            ) from None

    # -------------------------------------------------------------- configuration

    def sources(self) -> Dict[str, str]:
        """Collection -> directory: the configuration, over ``RSEMBED_SOURCES`` as fallback."""
        merged = _parse_sources_env(os.environ.get(ENV_SOURCES, ""))
        merged.update(self._sources)
        return merged

    def source_dir(self, collection: str) -> Path:
        sources = self.sources()
        if collection not in sources:
            raise ProviderError(
                f"the local provider has no source for collection {collection!r}; configured: "
                f"{sorted(sources)}; give it with --source {collection}=DIR on the command line, config "
                f"{{'sources': {{{collection!r}: '/path/to/dir'}}}} in Python, or "
                f"{ENV_SOURCES}='{collection}=/path/to/dir'"
            )
        root = Path(sources[collection]).expanduser()
        if not root.is_dir():
            raise ProviderError(f"the local source of collection {collection!r} is {str(root)!r}, which is not a directory")
        return root.resolve()

    def scenes(self, collection: str) -> List[Scene]:
        """Every dated scene of a collection's directory, by date (cached in memory)."""
        fam = family(collection)
        if fam is not None:
            from .local_products import product_catalogue

            return list(product_catalogue(self.source_dir(collection), fam)[0])
        return list(catalogue(self.source_dir(collection)).scenes)

    @staticmethod
    def build_index(directory) -> Path:
        """Scan ``directory`` and write its ``index.json``; return the path (see :func:`.catalog.build_index`)."""
        return build_index(directory)

    # -------------------------------------------------------------- fetching

    def fetch(self, request: ResolvedRequest) -> Pixels:
        """One composite of the window, or one per frame (see ``Provider.assemble``); extra
        modalities are read on the primary sensor's grid."""
        sensor, _, spatial = self.inputs(request)
        grid = target_grid(spatial, sensor.scale_m, max_pixels=self.limits.max_roi_pixels)
        return self.assemble(request, lambda s, start, end: self._composite(s, spatial, grid, start, end))

    def _composite(self, sensor, spatial, grid: TargetGrid, start: date, end: date) -> Pixels:
        """The composite of ``[start, end)`` of one sensor on ``grid``; NoImageryError when empty."""
        root = self.source_dir(sensor.collection)
        fam = family(sensor.collection)
        if fam is None:
            cat = catalogue(root)
            scenes, skipped = cat.scenes, cat.skipped
            wanted = [canonical_band(b) for b in sensor.bands]
        else:  # Landsat / HLS products: common band names, each scene's own band numbering
            from .local_products import product_catalogue

            scenes, skipped = product_catalogue(root, fam)
            wanted = fam.resolve(sensor.bands)
        roi_box = grid.bounds_lonlat()

        rejected = {"date": 0, "footprint": 0, "cloud": 0, "bands": 0}
        selected: List[Scene] = []
        for scene in scenes:
            if not start <= scene.date < end:
                rejected["date"] += 1
            elif not intersects(scene.bounds_lonlat, roi_box):
                rejected["footprint"] += 1
            elif scene.cloud_pct is not None and scene.cloud_pct > sensor.cloudy_pct:
                rejected["cloud"] += 1
            elif scene.missing(wanted):
                rejected["bands"] += 1
            else:
                selected.append(scene)
        where = (
            f"collection {sensor.collection!r} ({root}), window [{start.isoformat()}, {end.isoformat()}), "
            f"ROI {spatial!r}"
        )
        if not selected:
            raise NoImageryError(
                f"no scene passes the filters for {where}: {len(scenes)} scene(s) catalogued "
                f"({len(skipped)} file(s) skipped as undated or unreadable); rejected: "
                f"{rejected['date']} outside the window, {rejected['footprint']} not over the ROI, "
                f"{rejected['cloud']} with cloud % > {sensor.cloudy_pct:g}, "
                f"{rejected['bands']} missing a band of {list(sensor.bands)}"
            )

        stacks: List[np.ndarray] = []
        used: List[Scene] = []
        empty: List[str] = []
        for scene in selected:
            data = self._read_scene(scene, wanted, grid, sensor.scale_m)
            if np.isnan(data[0]).all():
                empty.append(scene.id)
                continue
            stacks.append(data)
            used.append(scene)
        if not used:
            raise NoImageryError(
                f"{len(selected)} scene(s) pass the filters for {where} but none has data inside the ROI "
                f"(all nodata there): {empty}"
            )

        array, valid = composite(stacks, sensor.composite)
        array[:, ~valid] = sensor.fill_value
        array = np.ascontiguousarray(array, dtype=np.float32)
        gt = grid.gdal()
        meta = {
            "scenes": [sc.id for sc in used],
            "n_scenes": len(used),
            "dates": [sc.date.isoformat() for sc in used],
            "cloud_pct": [sc.cloud_pct for sc in used],
            "nodata_fraction": float(1.0 - valid.mean()),
            "composite": sensor.composite,
            "crs": grid.crs,
            "transform": list(gt),
            "provider": self.name,
            "resampling": self._resampling.name,
            "rejected": dict(rejected, no_data_in_roi=len(empty)),
        }
        if fam is not None:
            meta["family"] = fam.name
            meta["sensors"] = [sc.sensor for sc in used]
            meta["bands_common"] = list(wanted)
        return Pixels(
            array=array,
            bands=tuple(sensor.bands),
            valid=valid,
            roi_mask=grid.roi_mask.copy(),
            crs=grid.crs,
            transform=gt,
            fill_value=float(sensor.fill_value),
            meta=meta,
        )

    def _read_scene(self, scene: Scene, wanted: Sequence[str], grid: TargetGrid, scale_m: float) -> np.ndarray:
        """The scene's ``wanted`` bands on ``grid`` as float32 (C, H, W); NaN where any band lacks data."""
        out = np.full((len(wanted), grid.height, grid.width), np.nan, dtype=np.float32)
        by_file: Dict[Tuple[str, bool], List[Tuple[int, BandSource]]] = {}
        for k, band in enumerate(wanted):
            src = scene.bands[band]
            by_file.setdefault((src.path, band in CATEGORICAL_BANDS), []).append((k, src))
        lat = 0.5 * (scene.bounds_lonlat[1] + scene.bounds_lonlat[3])
        for (path, categorical), items in by_file.items():
            resampling = Resampling.nearest if categorical else self._resampling
            dest = np.full((len(items), grid.height, grid.width), np.nan, dtype=np.float32)
            _read_file(scene, path, [src.index for _, src in items], dest, grid, resampling, scale_m, lat)
            for j, (k, src) in enumerate(items):
                band = dest[j]
                if src.scale != 1.0 or src.offset != 0.0:
                    band *= np.float32(src.scale)
                    band += np.float32(src.offset)
                out[k] = band
        if scene.qa is not None and scene.qa_rule is not None:
            qa = np.full((1, grid.height, grid.width), np.nan, dtype=np.float32)
            _read_file(scene, scene.qa.path, [scene.qa.index], qa, grid, Resampling.nearest, scale_m, lat,
                       quality=True)
            seen = ~np.isnan(qa[0])
            rejected = np.zeros(seen.shape, dtype=bool)
            rejected[seen] = scene.qa_rule.reject(qa[0][seen])
            out[:, rejected] = np.nan
        out[:, np.isnan(out).any(axis=0)] = np.nan
        return out


def _read_file(scene: Scene, path: str, indexes: List[int], dest: np.ndarray, grid: TargetGrid,
               resampling: Resampling, scale_m: float, lat: float, *, quality: bool = False) -> None:
    """Warp bands ``indexes`` of ``path`` onto ``grid`` into ``dest`` (NaN = no data).

    A ``quality`` band (bit flags) is always read at full resolution, since an overview
    averages bits into nonsense, and its zero is a value, not the scene's fill DN."""
    try:
        with rasterio.open(path) as ds:
            src_nodata = scene.fill_dn if not quality and ds.nodata is None else None
            level = None if quality else overview_level(ds, scale_m, lat)
            if level is None:
                _warp(ds, indexes, dest, grid, resampling, src_nodata)
            else:
                with rasterio.open(path, overview_level=level) as ovr:
                    _warp(ovr, indexes, dest, grid, resampling, src_nodata)
    except RasterioError as exc:
        raise ProviderError(f"could not read {path} (scene {scene.id!r}): {exc}") from exc


def _warp(ds, indexes: List[int], dest: np.ndarray, grid: TargetGrid, resampling: Resampling,
          src_nodata: Optional[float] = None) -> None:
    """Warp the needed part of ``ds`` onto ``grid`` into ``dest`` (float32, NaN = no data).

    A GDAL warped VRT on the target grid: reading it makes GDAL compute, block by block,
    the source window each part of the grid needs and read only those source blocks.
    (``rasterio.warp.reproject`` into an array does the same but builds an in-memory
    dataset whose creation emits spurious NotGeoreferencedWarnings under threads.)
    """
    extra = {} if src_nodata is None else {"src_nodata": src_nodata}
    with WarpedVRT(
        ds,
        **extra,
        crs=grid.crs,
        transform=grid.transform,
        width=grid.width,
        height=grid.height,
        resampling=resampling,
        nodata=np.nan,
        dtype="float32",
        init_dest_nodata=True,
    ) as vrt:
        vrt.read(indexes, out=dest)


__all__ = [
    "BAND_ALIASES",
    "BandSource",
    "ENV_SOURCES",
    "INDEX_NAME",
    "LONLAT",
    "LocalProvider",
    "Scene",
    "TargetGrid",
    "canonical_band",
    "catalogue",
    "composite",
    "forget",
    "target_grid",
    "utm_crs",
]
