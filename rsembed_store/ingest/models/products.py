"""Shared machinery of the precomputed products (``gse``, ``tessera``, ``copernicus``).

A product model answers a request by reading embeddings that already exist: it
plans which source files the request needs, reads only the windows it needs
from them, puts the pixels on one north-up grid, and pools or keeps the grid.

Configuration (never part of a key) comes from, lowest precedence first: the
product's environment variables (e.g. ``RSEMBED_GSE_ROOT``), the model's own
section of the run config (``{"models": {"gse": {...}}}``, which the engine
merges into the top level), and ``{"products": {"gse": {...}}}``.

Batches
=======
:meth:`ProductModel.read_batch` is what the engine calls: requests are ordered
by the files they need and read through one :class:`Session`, which opens each
file at most once per batch (the open handle, and GDAL's block cache with it,
serves every request of the batch that touches that file).

Grids and mosaics
=================
Pixels are sampled with nearest-neighbour from each source raster onto the
request grid (see :mod:`.products_raster`): a target pixel takes the value of
the source pixel that contains its centre. Sources in other UTM zones are
reprojected point by point; a file stored bottom-up (positive y resolution) is
read through its own geotransform, so orientation never matters.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from dataclasses import replace
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ...embedding import Embedding
from ...errors import ComputeError, ProviderError, SpecError
from ...keys import ResolvedRequest
from ...limits import Limits
from ...model import Model, ModelInfo
from ...specs import EARTH_RADIUS_M, H3Cell, OutputSpec
from .outcomes import attempt

#: (path, overview level) -> how many times a Session opened it, process-wide (tests, benchmarks)
OPEN_COUNTS: Counter = Counter()

#: pooled answers read at most this many pixels at the finest level a product allows
MAX_POOL_PIXELS = 4_000_000
#: grid answers hold at most this many pixels (a float copy of one is made to pool it)
MAX_GRID_PIXELS = 4_000_000
POOL_CHUNK = 65_536  # pixels decoded to float at a time when pooling
_M_PER_DEG = EARTH_RADIUS_M * math.pi / 180.0


def estimate_pixels(spatial, scale_m: float) -> float:
    """About how many ``scale_m`` pixels the grid of ``spatial`` has (from its lon/lat bounds,
    without building it: a grid too large to build must be refused before it is allocated)."""
    w, s, e, n = spatial.bounds()
    dx = (e - w) * _M_PER_DEG * max(math.cos(math.radians(0.5 * (s + n))), 1e-3)
    dy = (n - s) * _M_PER_DEG
    if isinstance(spatial, H3Cell):  # the covering square
        dx = dy = max(dx, dy)
    return (dx / scale_m + 2.0) * (dy / scale_m + 2.0)


def check_grid_size(spatial, scale_m: float, limit: int, model: str) -> None:
    """Refuse a grid answer of more than ``limit`` pixels, naming the way out."""
    px = estimate_pixels(spatial, scale_m)
    if px > limit:
        raise SpecError(
            f"model {model!r}: {spatial!r} at {scale_m:g} m is about {px:,.0f} pixels, more than the {limit:,} "
            "one answer may read or hold; ask for a coarser scale_m or a smaller ROI (e.g. H3 cells)"
        )


def product_settings(config: Mapping, section: Sequence[str], env: Mapping[str, str],
                     keys: Sequence[str]) -> Dict[str, Any]:
    """The settings of a product: env vars < top-level config keys < ``config["products"][name]``.

    ``section`` lists the names whose ``products`` sections apply, later ones winning
    (``("gse", "gse-unit")``); ``env`` maps a setting to its environment variable;
    only ``keys`` are taken from the top level (the engine merges ``models.<name>`` there).
    """
    out: Dict[str, Any] = {}
    for key, var in env.items():
        if os.environ.get(var):
            out[key] = os.environ[var]
    for key in keys:
        if key in config and config[key] is not None:
            out[key] = config[key]
    products = config.get("products") or {}
    if not isinstance(products, Mapping):
        raise ProviderError(f"config 'products'={products!r} must map product names to settings")
    for name in section:
        part = products.get(name) or {}
        if not isinstance(part, Mapping):
            raise ProviderError(f"config products.{name}={part!r} must be an object of settings")
        out.update({k: v for k, v in part.items() if v is not None})
    return out


class Session:
    """Resources opened for one batch: each file at most once, all closed together."""

    def __init__(self):
        self._items: Dict[Any, Any] = {}
        self._closers: List[Callable[[], None]] = []

    def get(self, key, factory: Callable[[], Any], close: Optional[Callable[[Any], None]] = None, *,
            count: bool = True):
        """The object cached under ``key``, made by ``factory()`` on first use (an "open",
        counted in :data:`OPEN_COUNTS` unless ``count`` is false)."""
        if key not in self._items:
            obj = factory()
            self._items[key] = obj
            if count:
                OPEN_COUNTS[key] += 1
            if close is not None:
                self._closers.append(lambda: close(obj))
        return self._items[key]

    def raster(self, path: str, overview_level: Optional[int] = None):
        """An open rasterio dataset (``overview_level``: that internal overview as a dataset)."""
        import rasterio
        from rasterio.errors import RasterioError

        def opener():
            try:
                if overview_level is None:
                    return rasterio.open(path)
                return rasterio.open(path, overview_level=overview_level)
            except (RasterioError, OSError) as exc:
                raise ProviderError(f"could not open {path}: {exc}") from exc

        return self.get((str(path), overview_level), opener, lambda ds: ds.close())

    def blocks(self, path: str, overview_level: Optional[int] = None):
        """A :class:`~.products_raster.BlockReader` over :meth:`raster`, shared by the batch."""
        from .products_raster import BlockReader

        return self.get(("blocks", str(path), overview_level),
                        lambda: BlockReader(self.raster(path, overview_level)), count=False)

    def close(self) -> None:
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception:  # noqa: BLE001 - closing must not hide the real outcome
                pass
        self._items.clear()
        self._closers.clear()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------ pooling and answers


def pool_pixels(array: np.ndarray, usable: np.ndarray, decode: Callable[[np.ndarray], np.ndarray],
                pooling: str) -> Tuple[np.ndarray, int]:
    """Nodata-aware mean or max over the ``usable`` pixels of ``(D, H, W)`` ``array``.

    ``decode`` turns a ``(D, n)`` slice of stored values into float32 with NaN for no
    data; a pixel counts only when all its values are finite. Pixels are decoded in
    chunks so large ROIs never hold a full float copy. Returns ``(vector, n_pixels)``.
    """
    flat = array.reshape(array.shape[0], -1)
    idx = np.flatnonzero(np.asarray(usable).ravel())
    total = np.zeros(array.shape[0], np.float64)
    best = np.full(array.shape[0], -np.inf)
    count = 0
    for start in range(0, idx.size, POOL_CHUNK):
        values = decode(flat[:, idx[start:start + POOL_CHUNK]])
        ok = np.isfinite(values).all(axis=0)
        if not ok.any():
            continue
        values = values[:, ok]
        count += values.shape[1]
        if pooling == "max":
            best = np.maximum(best, values.max(axis=1))
        else:
            total += values.sum(axis=1, dtype=np.float64)
    if count == 0:
        raise ComputeError("no valid pixel inside the ROI (every pixel there is no data)")
    out = best if pooling == "max" else total / count
    return out.astype(np.float32), count


def unit_length(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector.astype(np.float64)))
    if not norm > 0:
        raise ComputeError("the pooled vector has length 0 and cannot be scaled to unit length")
    return (vector / norm).astype(np.float32)


def answer(request: ResolvedRequest, array: np.ndarray, usable: np.ndarray, *,
           decode: Callable[[np.ndarray], np.ndarray], fill, codec: str = "raw",
           unit: bool = False, meta: Optional[dict] = None) -> Embedding:
    """The Embedding of ``request`` from ``(D, H, W)`` stored values and the usable-pixel mask.

    Pooled: nodata-aware mean/max over the usable pixels (unit length when ``unit``).
    Grid: the array itself, ``fill`` (the product's no-data value) outside ``usable``
    (which must hold only valid pixels), decoded through ``codec``; its vector is the
    nan-mean of the decoded grid.
    """
    meta = dict(meta or {})
    if request.output.mode == "pooled":
        vector, n = pool_pixels(array, usable, decode, request.output.pooling)
        meta["pooled_px"] = n
        if unit:
            vector = unit_length(vector)
            meta["unit_length"] = True
        return Embedding(request=request, vector=vector, meta=meta)
    usable = np.asarray(usable, bool)
    if not usable.any():
        raise ComputeError("no valid pixel inside the ROI (every pixel there is no data)")
    grid = np.array(array, copy=True)
    grid[:, ~usable] = fill
    meta.update(grid_shape=list(grid.shape[1:]), valid_px=int(usable.sum()))
    return Embedding.from_grid(request, grid, grid_codec=codec, meta=meta)


# ------------------------------------------------------------------ the base model


class ProductModel(Model):
    """Base of the precomputed product readers (see the module docstring).

    Subclasses declare ``info``, ``section`` (their ``products.<name>`` sections),
    ``env`` and ``setting_keys``, and implement :meth:`plan` (what a request needs,
    including the ids of its source files) and :meth:`read_one`.
    """

    info: ClassVar[ModelInfo]
    section: ClassVar[Tuple[str, ...]] = ()
    env: ClassVar[Mapping[str, str]] = {}
    setting_keys: ClassVar[Tuple[str, ...]] = ()

    def __init__(self, config: Optional[Mapping] = None):
        self.config = dict(config or {})
        self.settings = product_settings(self.config, self.section, self.env, self.setting_keys)
        self.limits = Limits.from_config(self.config)  # the size limits of this run (rsembed_store.limits)
        self.check_version()

    # ------------------------------------------------------------ resolution

    @classmethod
    def resolve_output(cls, output: Optional[OutputSpec]) -> OutputSpec:
        """As :meth:`Model.resolve_output`; product grids are always north-up, so ``native``
        orientation asks for the same answer and shares its key."""
        out = super().resolve_output(output)
        if out.mode == "grid" and out.grid_orientation != "north_up":
            out = replace(out, grid_orientation="north_up")
        return out

    # ------------------------------------------------------------ configuration

    @property
    def version(self) -> str:
        return str(self.info.params["version"])

    def check_version(self) -> None:
        """A configured product version must be the one this model's revision names."""
        asked = self.settings.get("version")
        if asked is not None and str(asked) != self.version:
            raise ProviderError(
                f"model {self.info.id!r} (revision {self.info.revision!r}) reads product version "
                f"{self.version!r}, but the configuration asks for version {asked!r}; versions are never "
                f"mixed in one embedding space: remove the setting or register a model for version {asked!r}"
            )

    # ------------------------------------------------------------ reading

    def plan(self, request: ResolvedRequest) -> Any:  # pragma: no cover - interface
        """What ``request`` needs; the result has ``sources``, the ids of the files it reads
        (a batch is ordered by them, so requests on the same files are read together)."""
        raise NotImplementedError

    def read_one(self, request: ResolvedRequest, plan: Any, session: Session) -> Embedding:  # pragma: no cover
        """Read one planned request through the batch's session."""
        raise NotImplementedError

    def sources(self, request: ResolvedRequest) -> Tuple[str, ...]:
        return tuple(self.plan(request).sources)

    def check_request(self, request: ResolvedRequest) -> None:
        info = self.info
        if (request.model, request.revision) != (info.id, info.revision):
            raise ComputeError(
                f"request {request.key[:12]} is for {request.model!r} revision {request.revision!r}; "
                f"this model is {info.id!r} revision {info.revision!r}"
            )
        if request.temporal is None or request.temporal.mode != "year":
            raise SpecError(f"model {info.id!r} reads annual layers: resolve the request first (year mode)")

    def read(self, request: ResolvedRequest) -> Embedding:
        return self.read_batch([request], return_exceptions=False)[0]

    def read_batch(self, requests: Sequence[ResolvedRequest], *, return_exceptions: bool = False) -> list:
        """Answers for ``requests`` in order, opening each source file once for the whole batch.
        With ``return_exceptions`` a failed request yields its exception in place."""
        results: List[Any] = [None] * len(requests)
        order: List[Tuple[Tuple[str, ...], int, Any]] = []
        for i, r in enumerate(requests):
            plan = attempt(self._checked_plan, r, return_exceptions=return_exceptions)
            if isinstance(plan, Exception):
                results[i] = plan
            else:
                order.append((tuple(sorted(plan.sources)), i, plan))
        order.sort(key=lambda item: item[0])
        with Session() as session:
            for _, i, plan in order:
                t0 = time.perf_counter()
                emb = attempt(self.read_one, requests[i], plan, session, return_exceptions=return_exceptions)
                if not isinstance(emb, Exception):
                    emb.compute_s = time.perf_counter() - t0
                results[i] = emb
        return results

    def _checked_plan(self, request: ResolvedRequest):
        """The plan of a request after checking that it is one for this model."""
        self.check_request(request)
        return self.plan(request)


__all__ = [
    "MAX_GRID_PIXELS",
    "MAX_POOL_PIXELS",
    "OPEN_COUNTS",
    "ProductModel",
    "Session",
    "answer",
    "check_grid_size",
    "estimate_pixels",
    "pool_pixels",
    "product_settings",
    "unit_length",
]
