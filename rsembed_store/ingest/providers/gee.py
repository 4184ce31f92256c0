"""The ``gee`` imagery provider: composites computed by Google Earth Engine -> :class:`Pixels`.

Needs the ``gee`` extra (``pip install 'rsembed-store[gee]'``, package
``earthengine-api``); the core never imports ``ee``.

Configuration (machine-specific, never part of a key)::

    EarthEngineProvider({
        "project": "my-cloud-project",          # else EE_PROJECT, else GOOGLE_CLOUD_PROJECT
        "service_account_key": "/keys/sa.json",  # else EE_SERVICE_ACCOUNT_KEY; else user credentials
        "service_account": "sa@proj.iam.gserviceaccount.com",  # only for .pem keys (EE_SERVICE_ACCOUNT)
        "url": None,                             # e.g. the high-volume endpoint for big batch runs
        "max_concurrency": 8,                    # computePixels calls in flight per provider
        "max_retries": 5, "backoff_s": 1.0, "backoff_max_s": 60.0,
        "max_request_bytes": 50331648, "max_request_side": 32768,  # split into tiles beyond these
        "max_grid_px": 16777216,                 # refuse grids larger than this (4096 x 4096 px)
        "resampling": "bilinear",                # nearest | bilinear | bicubic (categorical bands: nearest)
        "collections": {...},                    # more collections, see gee_collections.Collection.from_dict
    })

With the engine, put it under ``{"providers": {"gee": {...}}}``.

Initialisation happens once per process, on the first fetch, with the first
configuration that asks; :func:`initialize` explains what to do when no project or
credentials are found. If the caller already ran ``ee.Initialize`` and configures
no project or key, that initialisation is used as is.

A request costs one ``ee.data.computePixels`` round trip: the collection filters,
composite, band selection, reprojection onto the declared grid, the valid mask and
the image counts all travel as one expression and come back as one NumPy array.
It costs more only when the grid is larger than Earth Engine's per-request limit
(one call per tile) or a call is retried. The first request of a process also pays
for ``ee.Initialize`` (credentials plus the algorithm list).

The grid is :func:`~rsembed_store.ingest.grid.target_grid`, the same
one the ``local`` provider answers on: UTM zone of the ROI centre, ``scale_m``
metre pixels, north-up, ROI measured in ground metres.

The provider is spread over four modules: this one (configuration and the two
faces, :meth:`EarthEngineProvider.fetch` and :func:`fetch_image_array`, which share
one filter-composite-fetch path), :mod:`.gee_auth` (initialisation),
:mod:`.gee_expressions` (the server-side expression) and :mod:`.gee_transport`
(computePixels calls, tiles, retries, counters).
"""

from __future__ import annotations

import math
import random
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ...errors import NoImageryError, ProviderError, require
from ...keys import ResolvedRequest
from ..grid import TargetGrid, target_grid
from .base import Pixels, Provider
from .gee_auth import ENV_ACCOUNT, ENV_KEY, ENV_PROJECT, Auth, initialize_module, reset_initialization
from .gee_collections import Band, Collection, lookup
from .gee_expressions import describe, filtered_composite, guarded, rectangle
from .gee_transport import (COUNT_BAND, MAX_GRID_PX, MAX_REQUEST_BYTES, MAX_REQUEST_SIDE, VALID_BAND, WINDOW_BAND,
                            CallStats, PixelFetcher, RetryPolicy, Tally, classify, grid_parts, plan_tiles)

RESAMPLING = ("nearest", "bilinear", "bicubic")

#: An ``ee``-like module used instead of ``import ee`` when set (tests, alternative clients).
EE_MODULE: Any = None


def load_ee():
    """The Earth Engine client module (``EE_MODULE`` if set), or MissingExtraError naming the extra."""
    if EE_MODULE is not None:
        return EE_MODULE
    return require("ee", "gee", "The Earth Engine provider")

def initialize(config: Optional[Mapping] = None, *, ee_module=None):
    """Initialise Earth Engine once per process and return the ``ee`` module (see :mod:`.gee_auth`).

    ``ee_module`` defaults to :func:`load_ee`. Later calls return at once; one that asks
    for a different project or key raises :class:`ProviderError`.
    """
    return initialize_module(ee_module if ee_module is not None else load_ee(), config)


# ------------------------------------------------------------------ the provider


ImageLike = Union[str, Callable[[Any], Any], Any]


class EarthEngineProvider(PixelFetcher, Provider):
    """Imagery from Google Earth Engine: filter, composite and fetch on the declared grid in one call.

    For a request: ``ImageCollection(collection.id)`` -> ``filterBounds`` (the grid's
    rectangle) -> ``filterDate(start, end)`` (end exclusive: the half-open window) ->
    the scene cloud filter (``CLOUDY_PIXEL_PERCENTAGE`` for Sentinel-2, ``CLOUD_COVER``
    for Landsat, ``<= sensor.cloudy_pct``) or the Sentinel-1 filters (IW,
    polarisations, orbit pass) -> per image: select (aliases resolved) and resample ->
    ``median()`` or ``sort('system:time_start').mosaic()`` (the latest on top) ->
    ``computePixels`` as float32 on the grid, with a valid-mask band and the image
    counts. Digital numbers are scaled to physical values here.
    """

    name = "gee"

    def __init__(self, config: Optional[Mapping] = None, *, ee_module=None):
        super().__init__(config)
        cfg = self.config
        self._ee_module = ee_module
        self.auth = Auth.from_config(cfg)
        self.policy = RetryPolicy(
            max_retries=self._int("max_retries", 5, lo=0),
            base_s=self._float("backoff_s", 1.0),
            max_s=self._float("backoff_max_s", 60.0),
        )
        self.max_request_bytes = self._int("max_request_bytes", MAX_REQUEST_BYTES, lo=1)
        self.max_request_side = self._int("max_request_side", MAX_REQUEST_SIDE, lo=1)
        self.max_concurrency = self._int("max_concurrency", 8, lo=1)
        self.max_grid_px = self._int("max_grid_px", MAX_GRID_PX, lo=1)
        self.resampling = str(cfg.get("resampling", "bilinear"))
        if self.resampling not in RESAMPLING:
            raise ProviderError(f"gee provider config resampling={self.resampling!r} is not accepted; use one of {list(RESAMPLING)}")
        extra = cfg.get("collections") or {}
        if not isinstance(extra, Mapping):
            raise ProviderError(f"gee provider config 'collections'={extra!r} must map names to declarations")
        self.collections = {name: Collection.from_dict(name, spec) for name, spec in extra.items()}
        self._slots = threading.BoundedSemaphore(self.max_concurrency)
        self._stats = CallStats(self.name)
        self._sleep = time.sleep
        self._rng = random.Random()

    def _int(self, key: str, default: int, lo: int) -> int:
        value = self.config.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ProviderError(f"gee provider config {key}={value!r} must be an integer >= {lo}")
        return value

    def _float(self, key: str, default: float) -> float:
        value = self.config.get(key, default)
        try:
            out = float(value)
        except (TypeError, ValueError):
            out = float("nan")
        if not (math.isfinite(out) and out >= 0):
            raise ProviderError(f"gee provider config {key}={value!r} must be a non-negative number of seconds")
        return out

    # -------------------------------------------------------------- public faces

    def ee(self):
        """The initialised ``ee`` module (initialising Earth Engine on first use in this process)."""
        module = self._ee_module if self._ee_module is not None else load_ee()
        return initialize_module(module, self.config)

    def collection(self, name: str) -> Collection:
        return lookup(name, self.collections)

    def stats(self) -> Dict[str, int]:
        """Cumulative counters of this provider: ``gee.calls`` (computePixels round trips,
        retries and tiles included), ``gee.retries``, ``gee.splits``, ``gee.fetches``,
        ``gee.failures`` (fetches that raised an error other than no imagery) and
        ``gee.no_imagery``. The engine adds their per-run deltas to ``IngestSummary.calls``."""
        return self._stats.snapshot()

    def fetch(self, request: ResolvedRequest) -> Pixels:
        """One composite of the window, or one per frame; extra modalities on the primary grid.

        A time series costs one computePixels round trip per frame and modality
        (``Provider.assemble`` composites each sub-window separately), so that an
        empty frame is seen as empty and back-filled like the local provider does.
        """
        sensor, _, spatial = self.inputs(request)
        grid = target_grid(spatial, sensor.scale_m, max_pixels=self.limits.max_roi_pixels)
        compositor = lambda s, start, end: self._fetch(s, spatial, grid, start, end)  # noqa: E731
        return self._counted(lambda: self.assemble(request, compositor))

    def fetch_image_array(self, image: ImageLike, grid, bands: Sequence[str], *, year: Optional[int] = None,
                          start: Optional[str] = None, end: Optional[str] = None, composite: str = "mosaic",
                          resampling: str = "nearest", fill_value: float = float("nan")) -> Tuple[np.ndarray, dict]:
        """Any Earth Engine image on a declared grid: see the module function :func:`fetch_image_array`."""
        return self._counted(lambda: self._fetch_image(image, grid, bands, year, start, end, composite,
                                                       resampling, fill_value))

    def _counted(self, fn):
        self._stats.add("fetches")
        try:
            return fn()
        except NoImageryError:
            self._stats.add("no_imagery")
            raise
        except Exception:
            self._stats.add("failures")
            raise

    # -------------------------------------------------------------- the one path

    def _fetch(self, sensor, spatial, grid: TargetGrid, start_day, end_day) -> Pixels:
        """The composite of ``[start_day, end_day)`` of one sensor on ``grid`` (one request)."""
        coll = self.collection(sensor.collection)
        picked = [(name, coll.resolve_band(name)) for name in sensor.bands]
        start, end = start_day.isoformat(), end_day.isoformat()
        ee = self.ee()
        parts = grid_parts(grid)
        resampling = self.resampling
        sources = [(member.id, [(name, member.resolve_band(name)) for name in sensor.bands], member)
                   for member in coll.members or (coll,)]  # a merged collection (hls): each member by its own bands
        composited, filtered, base, filters = filtered_composite(
            ee, sources, _footprint(parts), start, end, sensor.composite, resampling, sensor.cloudy_pct)
        names = [name for name, _ in picked]
        counts = [(COUNT_BAND, filtered.size()), (WINDOW_BAND, base.size())]
        where = f"{coll.id} ({coll.name!r}) in [{start}, {end}) over {spatial!r}"
        planes, valid, fetched = self._fetch_planes(ee, guarded(ee, composited, names, filtered.size()), names,
                                                    counts, parts, where)
        n_images, n_window = int(round(planes[COUNT_BAND])), int(round(planes[WINDOW_BAND]))
        if n_images == 0:
            raise NoImageryError(
                f"no Earth Engine image passes the filters for {where}: {n_window} image(s) over the ROI "
                f"in the window, none passing {describe(filters)}"
            )
        usable = valid & grid.roi_mask
        if not usable.any():
            raise NoImageryError(
                f"{n_images} Earth Engine image(s) pass the filters for {where} but none has data inside the ROI"
            )
        array = _stack(planes, valid, picked, sensor.fill_value, scaled=True)
        meta = {
            "provider": self.name,
            "collection": coll.id,
            "n_images": n_images,
            "n_window": n_window,
            "filters": filters,
            "composite": sensor.composite,
            "bands_ee": [band.name for _, band in picked],
            "resampling": resampling,
            "nodata_fraction": float(1.0 - valid.mean()),
            **fetched,
        }
        return Pixels(
            array=np.ascontiguousarray(array),
            bands=tuple(sensor.bands),
            valid=valid,
            roi_mask=grid.roi_mask.copy(),
            crs=parts[0],
            transform=parts[1],  # type: ignore[arg-type]
            fill_value=float(sensor.fill_value),
            meta=meta,
        )

    def _fetch_image(self, image, grid, bands, year, start, end, composite, resampling, fill_value):
        """:func:`fetch_image_array` on this provider: the same path as :meth:`_fetch`, raw bands."""
        if isinstance(bands, str) or not bands or not all(isinstance(b, str) and b for b in bands):
            raise ProviderError(f"bands={bands!r} must be a non-empty list of band names")
        if composite not in ("mosaic", "median"):
            raise ProviderError(f"composite={composite!r} is not accepted; use 'mosaic' or 'median'")
        if resampling not in RESAMPLING:
            raise ProviderError(f"resampling={resampling!r} is not accepted; use one of {list(RESAMPLING)}")
        if year is not None:
            if start is not None or end is not None:
                raise ProviderError("give either year or start/end, not both")
            start, end = f"{int(year):04d}-01-01", f"{int(year) + 1:04d}-01-01"
        elif (start is None) != (end is None):
            raise ProviderError(f"start={start!r} and end={end!r} go together (a half-open window)")
        parts = grid_parts(grid)
        ee = self.ee()
        names = list(bands)
        picked = [(b, Band(b)) for b in names]
        counts: List[Tuple[str, Any]] = []
        what = "an ee.Image"
        if isinstance(image, str):
            composited, filtered, _, _ = filtered_composite(ee, [(image, picked, None)], _footprint(parts), start,
                                                            end, composite, resampling)
            expr = guarded(ee, composited, names, filtered.size())
            counts.append((COUNT_BAND, filtered.size()))
            what = f"collection {image!r}" + (f" in [{start}, {end})" if start else "")
        else:
            if callable(image):
                image = image(ee)
            expr = ee.Image(image).select(names)
            if resampling != "nearest":
                expr = expr.resample(resampling)
        planes, valid, fetched = self._fetch_planes(ee, expr, names, counts, parts, what)
        meta: Dict[str, Any] = {"valid": valid, "bands": names, **fetched}
        if counts:
            meta["n_images"] = int(round(planes[COUNT_BAND]))
            if meta["n_images"] == 0:
                raise NoImageryError(f"no Earth Engine image of {what} covers the grid {meta['grid']}")
        return _stack(planes, valid, picked, fill_value, scaled=False), meta

    def _fetch_planes(self, ee, image, names: List[str], counts: List[Tuple[str, Any]],
                      parts: Tuple[str, Tuple[float, ...], int, int], what: str):
        """Fetch ``image`` on the grid (tiles, retries); returns ``(planes, valid, meta)``, where
        ``meta`` holds the grid and what the fetch cost, the part both faces share."""
        crs, gt, width, height = parts
        tally = Tally()
        planes, valid = self._pixels(ee, image, names, counts, crs, gt, width, height, tally, what=what)
        meta = {
            "crs": crs,
            "transform": list(gt),
            "grid": {"crs": crs, "transform": list(gt), "width": width, "height": height},
            "ee_calls": tally.calls,
            "ee_retries": tally.retries,
            "tiles": tally.tiles,
        }
        return planes, valid, meta


def _footprint(parts: Tuple[str, Tuple[float, ...], int, int]) -> Callable[[Any], Any]:
    """``ee -> the grid's rectangle``, for :func:`.gee_expressions.filtered_composite`."""
    crs, gt, width, height = parts
    return lambda ee: rectangle(ee, crs, gt, width, height)


def _stack(planes: Dict[str, np.ndarray], valid: np.ndarray, picked: Sequence[Tuple[str, Band]], fill_value: float,
           *, scaled: bool) -> np.ndarray:
    """The picked bands as float32 ``(C, H, W)``, ``fill_value`` where not valid; ``scaled``
    turns DN into physical values with each band's declared scale and offset."""
    height, width = valid.shape
    array = np.empty((len(picked), height, width), dtype=np.float32)
    fill = np.float32(fill_value)
    for k, (name, band) in enumerate(picked):
        data = planes[name]
        if scaled and not band.categorical and (band.scale != 1.0 or band.offset != 0.0):
            data = data * np.float32(band.scale) + np.float32(band.offset)
        array[k] = np.where(valid, data, fill)
    return array


# ------------------------------------------------------------------ for other modules (gse)

_default_lock = threading.Lock()
_default: Optional[EarthEngineProvider] = None


def default_provider(config: Optional[Mapping] = None) -> EarthEngineProvider:
    """A provider for callers outside the engine: a new one for ``config``, else one shared per process."""
    global _default
    if config is not None:
        return EarthEngineProvider(config)
    with _default_lock:
        if _default is None:
            _default = EarthEngineProvider({})
        return _default


def fetch_image_array(image: ImageLike, grid, bands: Sequence[str], *, year: Optional[int] = None,
                      start: Optional[str] = None, end: Optional[str] = None, composite: str = "mosaic",
                      resampling: str = "nearest", fill_value: float = float("nan"),
                      provider: Optional[EarthEngineProvider] = None,
                      config: Optional[Mapping] = None) -> Tuple[np.ndarray, dict]:
    """Fetch any Earth Engine image on a declared grid as float32 ``(C, H, W)``, north-up.

    ``image`` is one of

    * an Earth Engine ImageCollection id (``"GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL"``):
      filtered to the grid's footprint and to ``year`` (Jan 1 to next Jan 1) or
      ``[start, end)``, then composited (``mosaic``: the latest image on top, or
      ``median``);
    * a function ``ee -> ee.Image`` (so the caller need not import ``ee``);
    * an ``ee.Image``.

    ``grid`` is a :class:`~rsembed_store.ingest.grid.TargetGrid` (e.g.
    ``target_grid(spatial, 10)``) or ``{"crs", "transform" (GDAL), "width", "height"}``.
    ``bands`` are Earth Engine band names, returned in that order, raw (no scaling).

    Goes through the same path as the provider's fetches: one initialisation per
    process, bounded concurrency, retries with backoff on quota/rate errors, tiles
    when the grid exceeds the request limit, and the provider's counters (pass the
    engine's ``provider`` to have them in the ingest summary). Returns
    ``(array, meta)``: ``array`` holds ``fill_value`` (NaN by default) where the image
    has no data; ``meta["valid"]`` is that mask as ``(H, W)`` bool, plus ``grid``,
    ``ee_calls``, ``tiles`` and, for a collection id, ``n_images``. Raises
    :class:`NoImageryError` when no image of the collection covers the grid and
    :class:`ProviderError` for other failures. It costs one computePixels call per tile.

    >>> arr, meta = fetch_image_array("GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL",
    ...                               target_grid(PointBuffer(11, 46, 500), 10),
    ...                               [f"A{i:02d}" for i in range(64)], year=2022)  # doctest: +SKIP
    """
    provider = provider if provider is not None else default_provider(config)
    return provider.fetch_image_array(image, grid, bands, year=year, start=start, end=end, composite=composite,
                                      resampling=resampling, fill_value=fill_value)


__all__ = [
    "Auth",
    "COUNT_BAND",
    "CallStats",
    "ENV_ACCOUNT",
    "ENV_KEY",
    "ENV_PROJECT",
    "EarthEngineProvider",
    "MAX_REQUEST_BYTES",
    "MAX_REQUEST_SIDE",
    "RetryPolicy",
    "VALID_BAND",
    "WINDOW_BAND",
    "classify",
    "default_provider",
    "fetch_image_array",
    "initialize",
    "load_ee",
    "lookup",
    "plan_tiles",
    "reset_initialization",
    "target_grid",
]
