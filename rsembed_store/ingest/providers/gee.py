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
"""

from __future__ import annotations

import math
import os
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ...errors import NoImageryError, ProviderError, RsEmbedStoreError, require
from ...keys import ResolvedRequest
from .base import Pixels, Provider
from .gee_collections import POLARISATIONS, Band, Collection, lookup
from ..grid import TargetGrid, target_grid

ENV_PROJECT = ("EE_PROJECT", "GOOGLE_CLOUD_PROJECT")
ENV_KEY = "EE_SERVICE_ACCOUNT_KEY"
ENV_ACCOUNT = "EE_SERVICE_ACCOUNT"

MAX_REQUEST_BYTES = 50_331_648  # computePixels: 48 MiB of uncompressed pixels per request
MAX_REQUEST_SIDE = 32_768  # computePixels: "32K" pixels per side
BYTES_PER_VALUE = 4  # every band is requested as float32 (.toFloat())
MAX_SPLIT_DEPTH = 8
MAX_GRID_PX = 4096 * 4096  # a guard against fetching a country at 10 m by accident (config max_grid_px)

VALID_BAND = "rsembed_valid"
COUNT_BAND = "rsembed_n_images"
WINDOW_BAND = "rsembed_n_window"
RESAMPLING = ("nearest", "bilinear", "bicubic")

#: An ``ee``-like module used instead of ``import ee`` when set (tests, alternative clients).
EE_MODULE: Any = None


def load_ee():
    """The Earth Engine client module (``EE_MODULE`` if set), or MissingExtraError naming the extra."""
    if EE_MODULE is not None:
        return EE_MODULE
    return require("ee", "gee", "The Earth Engine provider")


# ------------------------------------------------------------------ initialisation


@dataclass(frozen=True)
class Auth:
    """Who to be and which Cloud project to bill: from configuration, then the environment."""

    project: Optional[str] = None
    key_file: Optional[str] = None
    account: Optional[str] = None
    url: Optional[str] = None

    @classmethod
    def from_config(cls, config: Mapping) -> "Auth":
        project = config.get("project")
        for name in ENV_PROJECT:
            project = project or os.environ.get(name) or None
        key_file = config.get("service_account_key") or os.environ.get(ENV_KEY) or None
        account = config.get("service_account") or os.environ.get(ENV_ACCOUNT) or None
        return cls(
            project=str(project) if project else None,
            key_file=os.path.expanduser(str(key_file)) if key_file else None,
            account=str(account) if account else None,
            url=config.get("url") or None,
        )

    @property
    def explicit(self) -> bool:
        return bool(self.project or self.key_file or self.url)


_init_lock = threading.Lock()
_initialized: Dict[int, Tuple[Any, Auth]] = {}  # id(ee module) -> (module, the Auth it was initialised with)

_HOW_TO = (
    "Set a Cloud project registered for Earth Engine with the provider config "
    "{'providers': {'gee': {'project': 'my-project'}}} or the environment variable EE_PROJECT "
    "(or GOOGLE_CLOUD_PROJECT); authenticate once with `earthengine authenticate` (or "
    "`gcloud auth application-default login`), or use a service account key via config "
    "'service_account_key' or EE_SERVICE_ACCOUNT_KEY=/path/key.json. See docs/providers/gee.md."
)


def initialize(config: Optional[Mapping] = None, *, ee_module=None):
    """Initialise Earth Engine once per process and return the ``ee`` module.

    Credentials: a service-account key file when one is configured
    (``ee.ServiceAccountCredentials``), otherwise the user's stored credentials
    (``earthengine authenticate`` or Application Default Credentials). The project:
    ``config["project"]``, ``EE_PROJECT``, ``GOOGLE_CLOUD_PROJECT``, else whatever
    the credentials carry. Later calls return at once; a later call that asks for a
    different project or key raises :class:`ProviderError` (Earth Engine holds one
    session per process).
    """
    ee = ee_module if ee_module is not None else load_ee()
    auth = Auth.from_config(config or {})
    done = _initialized.get(id(ee))
    if done is None:
        with _init_lock:
            done = _initialized.get(id(ee))
            if done is None:
                done = (ee, _initialize(ee, auth))
                _initialized[id(ee)] = done
    used = done[1]
    if auth.explicit and used.explicit and (auth.project, auth.key_file) != (used.project, used.key_file):
        raise ProviderError(
            f"Earth Engine is already initialised in this process with project={used.project!r}, "
            f"key={used.key_file!r}; cannot switch to project={auth.project!r}, key={auth.key_file!r}. "
            "Use one Earth Engine project per process."
        )
    return ee


def _initialize(ee, auth: Auth) -> Auth:
    already = False
    try:
        already = bool(ee.data.is_initialized())
    except Exception:  # older clients: no is_initialized
        already = False
    if already and not auth.explicit:
        return auth  # the caller ran ee.Initialize themselves
    try:
        if auth.key_file:
            if not os.path.isfile(auth.key_file):
                raise ProviderError(f"the Earth Engine service account key {auth.key_file!r} does not exist. {_HOW_TO}")
            credentials = ee.ServiceAccountCredentials(auth.account, key_file=auth.key_file)
        else:
            credentials = "persistent"
        kwargs = {"credentials": credentials, "project": auth.project}
        if auth.url:
            kwargs["url"] = auth.url
        ee.Initialize(**kwargs)
    except RsEmbedStoreError:
        raise
    except Exception as exc:
        raise ProviderError(
            f"Earth Engine could not be initialised (project={auth.project!r}, "
            f"{'key ' + repr(auth.key_file) if auth.key_file else 'user credentials'}): {exc}. {_HOW_TO}"
        ) from exc
    return auth


def reset_initialization() -> None:
    """Forget which clients were initialised (tests; a process that re-initialises ``ee`` itself)."""
    with _init_lock:
        _initialized.clear()


# ------------------------------------------------------------------ errors, retries, accounting


_STATUS_RE = re.compile(r"\b(?:http\s*)?(?:429|500|502|503|504)\b")


def classify(exc: BaseException) -> str:
    """``transient`` (quota, rate, 5xx, network: retry), ``too_large`` (split), ``no_bands``, or ``fatal``."""
    text = str(exc).lower()
    if ("total request size" in text or "pixel grid dimensions" in text or "user memory limit" in text
            or ("must be less than or equal to" in text and ("bytes" in text or "pixels" in text))):
        return "too_large"
    if "did not match any bands" in text:
        return "no_bands"
    transient = (
        "too many requests", "too many concurrent", "rate limit", "quota exceeded", "resource exhausted",
        "capacity exceeded", "deadline exceeded", "service unavailable", "internal error", "backend error",
        "connection reset", "connection aborted", "timed out",
    )
    if any(marker in text for marker in transient) or _STATUS_RE.search(text):
        return "transient"
    if isinstance(exc, (ConnectionError, TimeoutError)) or type(exc).__name__ in ("timeout", "HttpLib2Error"):
        return "transient"
    return "fatal"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: retry ``k`` (0-based) sleeps in ``[d/2, d]``, ``d = min(max_s, base_s * 2**k)``."""

    max_retries: int = 5
    base_s: float = 1.0
    max_s: float = 60.0

    def delay(self, retry: int, rng: random.Random) -> float:
        d = min(self.max_s, self.base_s * (2.0 ** retry))
        return d / 2.0 + rng.uniform(0.0, d / 2.0)


class CallStats:
    """Thread-safe counters of one provider: Earth Engine round trips, retries, splits and outcomes."""

    KEYS = ("calls", "retries", "splits", "failures", "no_imagery", "fetches")

    def __init__(self, prefix: str = "gee"):
        self.prefix = prefix
        self._lock = threading.Lock()
        self._counts = {k: 0 for k in self.KEYS}

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def snapshot(self) -> Dict[str, int]:
        with self._lock:
            return {f"{self.prefix}.{k}": v for k, v in self._counts.items()}


@dataclass
class _Tally:
    """What one fetch cost (goes into Pixels.meta)."""

    calls: int = 0
    retries: int = 0
    tiles: int = 0


# ------------------------------------------------------------------ grids and tiles


def _grid_parts(grid) -> Tuple[str, Tuple[float, ...], int, int]:
    """``(crs, gdal geotransform, width, height)`` of a TargetGrid or a ``{"crs", "transform", "width", "height"}`` dict."""
    if isinstance(grid, TargetGrid):
        return grid.crs, grid.gdal(), grid.width, grid.height
    if isinstance(grid, Mapping):
        crs, transform, width, height = grid.get("crs"), grid.get("transform"), grid.get("width"), grid.get("height")
    else:
        crs, transform = getattr(grid, "crs", None), getattr(grid, "transform", None)
        width, height = getattr(grid, "width", None), getattr(grid, "height", None)
    if hasattr(transform, "to_gdal"):
        transform = transform.to_gdal()
    try:
        gt = tuple(float(v) for v in transform)
        ok = isinstance(crs, str) and len(gt) == 6 and int(width) > 0 and int(height) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok or gt[2] != 0.0 or gt[4] != 0.0 or gt[1] <= 0 or gt[5] >= 0:
        raise ProviderError(
            f"grid {grid!r} is not a north-up grid; give a TargetGrid (rsembed_store.ingest.grid.target_grid) or "
            "{'crs': 'EPSG:32632', 'transform': (x0, xres, 0, y0, 0, -yres), 'width': W, 'height': H}"
        )
    return str(crs), gt, int(width), int(height)


def plan_tiles(width: int, height: int, n_bands: int, max_bytes: int, max_side: int) -> List[Tuple[int, int, int, int]]:
    """Windows ``(col, row, w, h)`` covering the grid, each within the byte and side limits."""
    per_px = max(1, n_bands) * BYTES_PER_VALUE
    tw, th = min(width, max_side), min(height, max_side)
    while tw * th * per_px > max_bytes:
        if tw == 1 and th == 1:
            raise ProviderError(
                f"one pixel of {n_bands} float32 bands ({per_px} bytes) exceeds max_request_bytes={max_bytes}"
            )
        if tw >= th:
            tw = (tw + 1) // 2
        else:
            th = (th + 1) // 2
    return [(c, r, min(tw, width - c), min(th, height - r))
            for r in range(0, height, th) for c in range(0, width, tw)]


def _halves(window: Tuple[int, int, int, int]) -> List[Tuple[int, int, int, int]]:
    c, r, w, h = window
    if w >= h:
        a = (w + 1) // 2
        return [(c, r, a, h), (c + a, r, w - a, h)]
    a = (h + 1) // 2
    return [(c, r, w, a), (c, r + a, w, h - a)]


_LIMIT_RE = re.compile(r"less than or equal to\s+(\d+)\s*bytes", re.IGNORECASE)


# ------------------------------------------------------------------ the provider


ImageLike = Union[str, Callable[[Any], Any], Any]


class EarthEngineProvider(Provider):
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
        return initialize(self.config, ee_module=module)

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

    # -------------------------------------------------------------- a request

    def _fetch(self, sensor, spatial, grid: TargetGrid, start_day, end_day) -> Pixels:
        """The composite of ``[start_day, end_day)`` of one sensor on ``grid`` (one request)."""
        coll = self.collection(sensor.collection)
        picked = [(name, coll.resolve_band(name)) for name in sensor.bands]
        start, end = start_day.isoformat(), end_day.isoformat()
        ee = self.ee()
        crs, gt, width, height = _grid_parts(grid)
        resampling = self.resampling
        base = filtered = prepared = None
        filters: Dict[str, Any] = {}
        for member in coll.members or (coll,):  # a merged collection (hls): each member by its own bands
            mine = [(name, member.resolve_band(name)) for name in sensor.bands]
            b = ee.ImageCollection(member.id).filterBounds(_rectangle(ee, crs, gt, width, height)).filterDate(start, end)
            f, found = _quality_filters(ee, member, b, mine, sensor.cloudy_pct)
            p = f.map(_band_picker(ee, mine, resampling, member.qa))
            filters.update(found)
            base, filtered, prepared = (b, f, p) if base is None else (base.merge(b), filtered.merge(f),
                                                                      prepared.merge(p))
        if sensor.composite == "median":
            composited = prepared.median()
        else:
            composited = prepared.sort("system:time_start").mosaic()
        names = [name for name, _ in picked]
        image = _guarded(ee, composited, names, filtered.size())
        counts = [(COUNT_BAND, filtered.size()), (WINDOW_BAND, base.size())]
        tally = _Tally()
        where = f"{coll.id} ({coll.name!r}) in [{start}, {end}) over {spatial!r}"
        planes, valid = self._pixels(ee, image, names, counts, crs, gt, width, height, tally, what=where)
        n_images, n_window = int(round(planes[COUNT_BAND])), int(round(planes[WINDOW_BAND]))
        if n_images == 0:
            raise NoImageryError(
                f"no Earth Engine image passes the filters for {where}: {n_window} image(s) over the ROI "
                f"in the window, none passing {_describe(filters)}"
            )
        usable = valid & grid.roi_mask
        if not usable.any():
            raise NoImageryError(
                f"{n_images} Earth Engine image(s) pass the filters for {where} but none has data inside the ROI"
            )
        array = np.empty((len(picked), height, width), dtype=np.float32)
        fill = np.float32(sensor.fill_value)
        for k, (name, band) in enumerate(picked):
            data = planes[name]
            if not band.categorical and (band.scale != 1.0 or band.offset != 0.0):
                data = data * np.float32(band.scale) + np.float32(band.offset)
            array[k] = np.where(valid, data, fill)
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
            "crs": crs,
            "transform": list(gt),
            "grid": {"crs": crs, "transform": list(gt), "width": width, "height": height},
            "ee_calls": tally.calls,
            "ee_retries": tally.retries,
            "tiles": tally.tiles,
        }
        return Pixels(
            array=np.ascontiguousarray(array),
            bands=tuple(sensor.bands),
            valid=valid,
            roi_mask=grid.roi_mask.copy(),
            crs=crs,
            transform=gt,  # type: ignore[arg-type]
            fill_value=float(sensor.fill_value),
            meta=meta,
        )

    def _fetch_image(self, image, grid, bands, year, start, end, composite, resampling, fill_value):
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
        crs, gt, width, height = _grid_parts(grid)
        ee = self.ee()
        names = list(bands)
        picked = [(b, Band(b)) for b in names]
        counts: List[Tuple[str, Any]] = []
        what = "an ee.Image"
        if isinstance(image, str):
            coll = ee.ImageCollection(image).filterBounds(_rectangle(ee, crs, gt, width, height))
            if start is not None:
                coll = coll.filterDate(start, end)
            prepared = coll.map(_band_picker(ee, picked, resampling))
            composited = prepared.median() if composite == "median" else prepared.sort("system:time_start").mosaic()
            expr = _guarded(ee, composited, names, coll.size())
            counts.append((COUNT_BAND, coll.size()))
            what = f"collection {image!r}" + (f" in [{start}, {end})" if start else "")
        else:
            if callable(image):
                image = image(ee)
            expr = ee.Image(image).select(names)
            if resampling != "nearest":
                expr = expr.resample(resampling)
        tally = _Tally()
        planes, valid = self._pixels(ee, expr, names, counts, crs, gt, width, height, tally, what=what)
        meta: Dict[str, Any] = {
            "valid": valid,
            "bands": names,
            "crs": crs,
            "transform": list(gt),
            "grid": {"crs": crs, "transform": list(gt), "width": width, "height": height},
            "ee_calls": tally.calls,
            "ee_retries": tally.retries,
            "tiles": tally.tiles,
        }
        if counts:
            meta["n_images"] = int(round(planes[COUNT_BAND]))
            if meta["n_images"] == 0:
                raise NoImageryError(f"no Earth Engine image of {what} covers the grid {meta['grid']}")
        array = np.stack([np.where(valid, planes[n], np.float32(fill_value)) for n in names]).astype(np.float32)
        return array, meta

    # -------------------------------------------------------------- pixels: tiles, retries

    def _pixels(self, ee, image, names: List[str], counts: List[Tuple[str, Any]], crs: str,
                gt: Tuple[float, ...], width: int, height: int, tally: _Tally, *, what: str):
        """Fetch ``image``'s ``names`` bands plus the valid mask and count bands on the grid.

        Returns ``({name: (H, W) float32, count name: float}, valid (H, W) bool)``. ``what``
        says what the image is, for errors; when it is a collection (``counts`` given),
        "no such band" from Earth Engine means the filtered collection is empty.
        """
        if width * height > self.max_grid_px:
            raise ProviderError(
                f"the grid of {what} is {width} x {height} px, more than max_grid_px={self.max_grid_px}; "
                "use a coarser scale_m, a smaller ROI, or raise max_grid_px in the gee provider config"
            )
        image = image.toFloat()
        valid_img = image.mask().reduce(ee.Reducer.min()).gt(0).rename(VALID_BAND)
        stacked = image.unmask(0, False).addBands(valid_img.unmask(0, False).toFloat())
        for band, number in counts:
            stacked = stacked.addBands(ee.Image.constant(number).toFloat().rename(band))
        band_ids = list(names) + [VALID_BAND] + [band for band, _ in counts]
        out = {n: np.zeros((height, width), dtype=np.float32) for n in band_ids}
        pending = [(w, 0) for w in plan_tiles(width, height, len(band_ids), self.max_request_bytes,
                                              self.max_request_side)]
        if len(pending) > 1:
            self._stats.add("splits", len(pending) - 1)
        while pending:
            window, depth = pending.pop(0)
            try:
                block = self._call(ee, stacked, band_ids, crs, gt, window, tally)
            except _NoBands as exc:
                if counts:
                    raise NoImageryError(f"no Earth Engine image to composite for {what}: {exc}") from None
                raise ProviderError(f"{what} lacks a requested band of {list(names)}: {exc}") from None
            except _TooLarge as exc:
                c, r, w, h = window
                if depth >= MAX_SPLIT_DEPTH or (w == 1 and h == 1):
                    raise ProviderError(
                        f"Earth Engine refused a {w} x {h} px tile of {len(band_ids)} float32 bands even after "
                        f"splitting {depth} time(s): {exc.message}. computePixels allows at most "
                        f"{self.max_request_bytes} bytes ({self.max_request_bytes / 2**20:.0f} MiB) and "
                        f"{self.max_request_side} px per side per request; use a coarser scale_m or a smaller ROI"
                    ) from None
                m = _LIMIT_RE.search(exc.message)
                if m:  # learn the server's limit so later requests are planned within it
                    self.max_request_bytes = min(self.max_request_bytes, int(m.group(1)))
                halves = _halves(window)
                self._stats.add("splits", len(halves) - 1)
                pending = [(hw, depth + 1) for hw in halves] + pending
                continue
            c, r, w, h = window
            for n in band_ids:
                out[n][r:r + h, c:c + w] = block[n]
            tally.tiles += 1
        valid = out.pop(VALID_BAND) > 0.5
        for band, _ in counts:
            plane = out.pop(band)
            out[band] = float(plane.flat[0])
        return out, valid

    def _call(self, ee, image, band_ids, crs, gt, window, tally: _Tally) -> Dict[str, np.ndarray]:
        """One computePixels round trip for a window, retried on quota/rate/transient errors."""
        c, r, w, h = window
        x0, xres, _, y0, _, yneg = gt
        request = {
            "expression": image,
            "fileFormat": "NUMPY_NDARRAY",
            "bandIds": list(band_ids),
            "grid": {
                "dimensions": {"width": int(w), "height": int(h)},
                "affineTransform": {
                    "scaleX": xres, "shearX": 0.0, "translateX": x0 + c * xres,
                    "shearY": 0.0, "scaleY": yneg, "translateY": y0 + r * yneg,
                },
                "crsCode": crs,
            },
        }
        retry = 0
        while True:
            self._stats.add("calls")
            tally.calls += 1
            try:
                with self._slots:
                    data = ee.data.computePixels(request)
                break
            except Exception as exc:
                kind = classify(exc)
                if kind == "too_large":
                    raise _TooLarge(str(exc)) from None
                if kind == "no_bands":
                    raise _NoBands(str(exc)) from None
                if kind != "transient":
                    raise ProviderError(f"Earth Engine computePixels failed: {type(exc).__name__}: {exc}") from exc
                if retry >= self.policy.max_retries:
                    raise ProviderError(
                        f"Earth Engine kept refusing (quota, rate or availability) after {retry + 1} attempt(s): "
                        f"{exc}. Lower max_concurrency / fetch_workers or try later"
                    ) from exc
                self._stats.add("retries")
                tally.retries += 1
                self._sleep(self.policy.delay(retry, self._rng))
                retry += 1
        return _unpack(data, band_ids, w, h)


class _TooLarge(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class _NoBands(Exception):
    """Earth Engine: "Image.select: Pattern 'B4' did not match any bands." (what an empty composite gives)."""


def _unpack(data, band_ids, w: int, h: int) -> Dict[str, np.ndarray]:
    """The structured array of a NUMPY_NDARRAY response -> {band: (h, w) float32}."""
    names = getattr(getattr(data, "dtype", None), "names", None)
    if not names:
        raise ProviderError(
            f"Earth Engine returned {type(data).__name__} instead of a structured NumPy array with fields {band_ids}"
        )
    missing = [b for b in band_ids if b not in names]
    if missing or data.shape != (h, w):
        raise ProviderError(
            f"Earth Engine returned fields {list(names)} of shape {data.shape}; expected {band_ids} of shape {(h, w)}"
        )
    return {b: np.asarray(data[b], dtype=np.float32) for b in band_ids}


# ------------------------------------------------------------------ expression pieces


def _rectangle(ee, crs: str, gt, width: int, height: int):
    """The grid's footprint as a planar rectangle in the grid's own CRS."""
    x0, xres, _, y0, _, yneg = gt
    return ee.Geometry.Rectangle([x0, y0 + height * yneg, x0 + width * xres, y0], crs, False)


def _quality_filters(ee, coll: Collection, images, picked, cloudy_pct: float):
    """Scene-level filters: cloud percentage for optical collections, IW/polarisation/orbit for Sentinel-1."""
    filters: Dict[str, Any] = {}
    if coll.cloud_property:
        images = images.filter(ee.Filter.lte(coll.cloud_property, float(cloudy_pct)))
        filters[coll.cloud_property] = f"<= {float(cloudy_pct):g}"
    if coll.instrument_mode:
        images = images.filter(ee.Filter.eq("instrumentMode", coll.instrument_mode))
        filters["instrumentMode"] = coll.instrument_mode
    if coll.polarisation_property:
        pols = [band.name for _, band in picked if band.name in POLARISATIONS]
        for pol in dict.fromkeys(pols):
            images = images.filter(ee.Filter.listContains(coll.polarisation_property, pol))
        if pols:
            filters[coll.polarisation_property] = sorted(set(pols))
    if coll.orbit_pass:
        images = images.filter(ee.Filter.eq("orbitProperties_pass", coll.orbit_pass))
        filters["orbitProperties_pass"] = coll.orbit_pass
    return images, filters


def _describe(filters: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v}" if str(v).startswith("<") else f"{k} = {v}" for k, v in filters.items()) or "(none)"


def _band_picker(ee, picked: Sequence[Tuple[str, Band]], resampling: str, qa: Optional[Tuple[str, int]] = None):
    """The per-image function: select (renamed to the requested spelling), resample continuous bands,
    and mask each pixel unless every band has data there (so a composite never mixes bands of
    different dates where one band is missing, as in the local provider), and where the
    collection's quality band ``qa = (band, bits)`` has any of ``bits`` set."""
    smooth = [(n, b.name) for n, b in picked if not b.categorical]
    classes = [(n, b.name) for n, b in picked if b.categorical]

    def pick(img):
        parts = []
        if smooth:
            part = img.select([b for _, b in smooth], [n for n, _ in smooth])
            parts.append(part.resample(resampling) if resampling != "nearest" else part)
        if classes:
            parts.append(img.select([b for _, b in classes], [n for n, _ in classes]))
        out = parts[0]
        for part in parts[1:]:
            out = out.addBands(part)
        if len(picked) > 1:
            out = out.updateMask(out.mask().reduce(ee.Reducer.min()))
        if qa is not None:  # the collection's own quality band: clouds, shadows, fill
            out = out.updateMask(img.select([qa[0]]).bitwiseAnd(qa[1]).eq(0))
        return out

    return pick


def _guarded(ee, composited, names: List[str], size):
    """The composite if any image passed, else a fully masked stand-in with the same bands.

    A composite of an empty collection has no bands, and selecting from it fails
    server-side; the stand-in keeps the one request valid so the count bands can say
    "no image" instead.
    """
    blank = ee.Image.constant([0] * len(names)).rename(list(names)).updateMask(0)
    return ee.Image(ee.Algorithms.If(size.gt(0), composited, blank)).select(list(names))


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
    "CallStats",
    "EarthEngineProvider",
    "MAX_REQUEST_BYTES",
    "MAX_REQUEST_SIDE",
    "RetryPolicy",
    "classify",
    "default_provider",
    "fetch_image_array",
    "initialize",
    "load_ee",
    "plan_tiles",
    "target_grid",
]
