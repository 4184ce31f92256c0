"""Earth Engine transport for the ``gee`` provider: computePixels round trips, retries and tiles.

One request is one ``ee.data.computePixels`` call on a window of the target grid.
This module decides how a grid is cut into windows that fit the per-request limits,
which errors are worth a retry (quota, rate, 5xx, network) and how long to wait, which
mean "split and try again", and counts every call so that the engine can report what a
run cost. It knows nothing of collections or composites: it fetches whatever image
expression it is given.
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Tuple

import numpy as np

from ...errors import NoImageryError, ProviderError
from ..grid import TargetGrid

MAX_REQUEST_BYTES = 50_331_648  # computePixels: 48 MiB of uncompressed pixels per request
MAX_REQUEST_SIDE = 32_768  # computePixels: "32K" pixels per side
BYTES_PER_VALUE = 4  # every band is requested as float32 (.toFloat())
MAX_SPLIT_DEPTH = 8
MAX_GRID_PX = 4096 * 4096  # a guard against fetching a country at 10 m by accident (config max_grid_px)

VALID_BAND = "rsembed_valid"
COUNT_BAND = "rsembed_n_images"
WINDOW_BAND = "rsembed_n_window"


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
class Tally:
    """What one fetch cost (goes into Pixels.meta)."""

    calls: int = 0
    retries: int = 0
    tiles: int = 0


# ------------------------------------------------------------------ grids and tiles


def grid_parts(grid) -> Tuple[str, Tuple[float, ...], int, int]:
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



# ------------------------------------------------------------------ fetching pixels


class PixelFetcher:
    """computePixels with tiles and retries, mixed into the provider.

    Uses the provider's ``max_grid_px``, ``max_request_bytes`` (lowered when the server
    states a smaller limit), ``max_request_side``, ``policy`` (a :class:`RetryPolicy`),
    ``_slots`` (a semaphore bounding calls in flight), ``_stats`` (:class:`CallStats`),
    ``_sleep`` and ``_rng`` (replaceable in tests).
    """

    max_grid_px: int
    max_request_bytes: int
    max_request_side: int
    policy: RetryPolicy
    _slots: threading.BoundedSemaphore
    _stats: CallStats
    _rng: random.Random

    def _pixels(self, ee, image, names: List[str], counts: List[Tuple[str, Any]], crs: str,
                gt: Tuple[float, ...], width: int, height: int, tally: Tally, *, what: str):
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

    def _call(self, ee, image, band_ids, crs, gt, window, tally: Tally) -> Dict[str, np.ndarray]:
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
        return unpack(data, band_ids, w, h)


class _TooLarge(Exception):
    """Earth Engine refused a request as too large (bytes or pixels): split the window and retry."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class _NoBands(Exception):
    """Earth Engine: "Image.select: Pattern 'B4' did not match any bands." (what an empty composite gives)."""


def unpack(data, band_ids, w: int, h: int) -> Dict[str, np.ndarray]:
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



__all__ = [
    "BYTES_PER_VALUE",
    "COUNT_BAND",
    "CallStats",
    "MAX_GRID_PX",
    "MAX_REQUEST_BYTES",
    "MAX_REQUEST_SIDE",
    "MAX_SPLIT_DEPTH",
    "PixelFetcher",
    "RetryPolicy",
    "Tally",
    "VALID_BAND",
    "WINDOW_BAND",
    "classify",
    "grid_parts",
    "plan_tiles",
    "unpack",
]
