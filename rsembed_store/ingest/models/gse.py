"""``gse``: the AlphaEarth Foundations annual Satellite Embedding (Google, 64-d, 10 m).

One layer per year (2017 onwards); each pixel is a 64-d vector of unit length.

Sources (the request's provider picks one; it is part of the key)
==================================================================
``cog`` (default)
    The published Cloud-Optimized GeoTIFFs (see :mod:`.gse_catalog` for the
    layout): 8192 x 8192 x 64 int8 per file, nodata -128, internal overviews whose
    pixels are the renormalised mean of the pixels under them. Settings: ``root``
    (a directory, or any path/URL GDAL opens, e.g. ``s3://...``, ``/vsigs/...``),
    ``index`` (a listing, needed for roots that cannot be listed). Env fallback:
    ``RSEMBED_GSE_ROOT``, ``RSEMBED_GSE_INDEX``.
``gee``
    Earth Engine, image collection ``GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL`` (bands
    ``A00``..``A63``), through :func:`rsembed_store.ingest.providers.gee.fetch_image_array`
    on the same grid; settings of the gee provider come from ``providers.gee`` and
    ``products.gse.gee``. Needs the ``gee`` extra; without it the request fails with
    an error naming it.

De-quantisation (the dataset's readme): ``x = sign(q) * (q / 127.5) ** 2`` for
``q`` in -127..127; ``q = -128`` is a masked pixel (in every channel at once).

Answers
=======
The grid is :func:`~rsembed_store.ingest.grid.target_grid` (UTM zone of
the ROI centre, ``scale_m`` pixels, north-up; the file grids use the same
10 m origin multiples, so at 10 m it is the files' own pixel grid). Each pixel is
the source pixel that contains its centre, from the zone files' own pixels first
(a neighbouring zone's file fills only what the own zone lacks).

* pooled: nodata-aware mean (or max) of the de-quantised pixels inside the ROI
  (inside the hexagon for an H3Cell), read at 10 m. Above
  :data:`~.products.MAX_POOL_PIXELS` pixels the finest overview level that fits is
  used instead (a fixed rule, recorded in ``meta["res_m"]``).
* grid: ``(64, H, W)`` int8, the quantised values themselves (codec ``gse_int8``),
  -128 outside the ROI and where there is no data. A ``scale_m`` coarser than 10 m
  reads the coarsest overview still at least as fine (10, 20, 40 ... m).
* ``gse-unit``: the same pooled vectors scaled to unit length (its own model id and
  revision, so the option is in the key); pooled only.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np

from ...embedding import Embedding, register_grid_codec
from ...errors import MissingExtraError, NoImageryError, ProviderError
from ...keys import ResolvedRequest
from ...model import ModelInfo
from ..grid import TargetGrid, overview_level, target_grid
from . import gse_catalog as cat
from .products import (MAX_GRID_PIXELS, MAX_POOL_PIXELS, ProductModel, Session, answer, check_grid_size,
                       estimate_pixels)
from .products_raster import mosaic, raster_part

COLLECTION = "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL"
BANDS = tuple(f"A{i:02d}" for i in range(64))
NODATA = -128
NATIVE_M = 10.0
ATTRIBUTION = "The AlphaEarth Foundations Satellite Embedding dataset is produced by Google and Google DeepMind."


def dequantise(q: np.ndarray) -> np.ndarray:
    """int8 -> float32 ``sign(q) * (q / 127.5)**2``; -128 (no data) -> NaN."""
    v = np.asarray(q).astype(np.float32)
    out = np.sign(v) * np.square(v / np.float32(127.5))
    out[np.asarray(q) == NODATA] = np.nan
    return out


def quantise(x: np.ndarray) -> np.ndarray:
    """float -> int8, the inverse mapping ``round(sign(x) * sqrt(|x|) * 127.5)`` in -127..127; NaN -> -128."""
    x = np.asarray(x, dtype=np.float64)
    finite = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    q = np.rint(np.sign(finite) * np.sqrt(np.abs(finite)) * 127.5)
    q = np.clip(q, -127, 127).astype(np.int8)
    q[~np.isfinite(x)] = NODATA
    return q


register_grid_codec("gse_int8", dequantise)


def _valid(values: np.ndarray) -> np.ndarray:
    return (values != NODATA).all(axis=0)


def _lonlat_box(spatial, scale_m: float) -> Tuple[float, float, float, float]:
    """A lon/lat box sure to hold the request grid (the ROI plus the covering square and the
    snapping to ``scale_m``), cheaper than projecting the grid back."""
    w, s, e, n = spatial.bounds()
    m = 0.3 * max(e - w, n - s) + 3.0 * scale_m / 111_000.0 + 1e-4
    return max(w - m, -180.0), max(s - m, -90.0), min(e + m, 180.0), min(n + m, 90.0)


@dataclass
class _Plan:
    year: int
    grid: TargetGrid
    scale_m: float
    files: List[cat.CogFile]
    sources: Tuple[str, ...]


class GseModel(ProductModel):
    """AlphaEarth annual Satellite Embedding from the published COGs or Earth Engine."""

    info = ModelInfo(
        id="gse",
        revision="gse-v1",
        kind="precomputed",
        dim=64,
        metric="cosine",
        outputs=("pooled", "grid"),
        temporal="year",
        providers=("cog", "gee"),
        grid_dtype="int8",
        years=(2017, 2025),
        seconds_per_request=0.02,  # reading a product: no imagery, no network
        description="AlphaEarth Foundations annual Satellite Embedding (Google), 64-d, 10 m, unit-length pixels",
        citation="Brown et al. 2025, AlphaEarth Foundations, arXiv:2507.22291. " + ATTRIBUTION + " CC-BY 4.0.",
        params={"version": "v1", "collection": COLLECTION, "bands": "A00..A63", "nodata": NODATA,
                "dequantisation": "sign(q) * (q / 127.5) ** 2", "native_m": NATIVE_M, "unit_pooled": False,
                "max_pool_pixels": MAX_POOL_PIXELS},
    )
    section = ("gse",)
    env = {"root": "RSEMBED_GSE_ROOT", "index": "RSEMBED_GSE_INDEX"}
    setting_keys = ("root", "index", "version")
    unit: bool = False

    def __init__(self, config=None):
        super().__init__(config)
        self._gee = None
        self._gee_lock = threading.Lock()

    # ------------------------------------------------------------ planning

    @classmethod
    def footprint(cls, request: ResolvedRequest):
        """As :meth:`Model.footprint`; a pooled answer is read at the finest level that holds at
        most :data:`MAX_POOL_PIXELS` pixels (int8 from the COGs, float32 from Earth Engine)."""
        if request.output.mode == "grid":
            return super().footprint(request)
        from ...limits import Footprint, roi_pixels

        scale = NATIVE_M
        while roi_pixels(request.spatial, scale) > MAX_POOL_PIXELS:
            scale *= 2
        return Footprint(roi_pixels(request.spatial, scale), cls.info.dim, 4 if request.provider == "gee" else 1,
                         scale, "gse embeddings")

    def catalogue(self) -> cat.Catalogue:
        root = self.settings.get("root")
        if not root:
            raise ProviderError(
                "the gse 'cog' source has no root: set config {'products': {'gse': {'root': '/data/gse'}}} "
                "(the directory holding one folder per year) or RSEMBED_GSE_ROOT"
            )
        return cat.catalogue(str(root), self.settings.get("index"))

    def _grid(self, request: ResolvedRequest) -> Tuple[TargetGrid, float]:
        out, spatial = request.output, request.spatial
        if out.mode == "grid":
            check_grid_size(spatial, out.scale_m, MAX_GRID_PIXELS, self.info.id)
            return target_grid(spatial, out.scale_m, max_pixels=self.limits.max_roi_pixels), float(out.scale_m)
        scale = NATIVE_M
        while estimate_pixels(spatial, scale) > MAX_POOL_PIXELS:  # before a grid is allocated
            scale *= 2
        grid = target_grid(spatial, scale)
        while grid.width * grid.height > MAX_POOL_PIXELS:
            scale *= 2
            grid = target_grid(spatial, scale)
        return grid, scale

    def plan(self, request: ResolvedRequest) -> _Plan:
        grid, scale = self._grid(request)
        year = request.temporal.year
        if request.provider == "gee":
            return _Plan(year, grid, scale, [], (f"gee:{year}",))
        catalogue = self.catalogue()
        box = _lonlat_box(request.spatial, scale)
        files = cat.files_for(catalogue, year, grid.crs, grid.bounds, box)
        if not files:
            if year not in catalogue.years():
                raise catalogue.missing_year(year)
            raise NoImageryError(
                f"no gse COG of {year} under {catalogue.root!r} covers {request.spatial!r} "
                f"(zones {cat.zones_for(box)})"
            )
        return _Plan(year, grid, scale, files, tuple(f.id for f in files))

    # ------------------------------------------------------------ reading

    def read_one(self, request: ResolvedRequest, plan: _Plan, session: Session) -> Embedding:
        if request.provider == "gee":
            return self._read_gee(request, plan)
        grid = plan.grid
        lat = request.spatial.center()[1]
        parts, levels = [], []
        for f in plan.files:
            level = None
            if plan.scale_m > NATIVE_M * (1 + 1e-9):
                level = overview_level(session.raster(f.path), plan.scale_m, lat)
            ds = session.raster(f.path, level)
            levels.append(0 if level is None else level + 1)
            parts.append(raster_part(ds, f.id, _valid, owns=cat.owner(f.zone), crs=f.crs,
                                     reader=session.blocks(f.path, level)))
        array, filled, used = mosaic(parts, grid.crs, grid.transform, grid.width, grid.height, channels=64,
                                     dtype=np.int8, fill=NODATA, need=grid.roi_mask)
        usable = filled & grid.roi_mask
        roi_px = int(grid.roi_mask.sum())
        meta = {
            "source": "cog", "year": plan.year, "files": used, "crs": grid.crs,
            "transform": list(grid.gdal()), "res_m": plan.scale_m, "overview_level": max(levels),
            "roi_px": roi_px, "nodata_fraction": round(float(1.0 - usable.sum() / max(roi_px, 1)), 6),
        }
        if not usable.any():
            raise NoImageryError(
                f"request {request.key[:12]} (gse {plan.year}, {request.spatial!r}): every pixel inside the "
                f"ROI is no data in {list(plan.sources)}"
            )
        return answer(request, array, usable, decode=dequantise, fill=NODATA, codec="gse_int8",
                      unit=self.unit, meta=meta)

    # ------------------------------------------------------------ Earth Engine

    def _gee_provider(self):
        try:  # through sys.modules, so the provider can be swapped (tests) or absent (gated)
            gee = importlib.import_module("rsembed_store.ingest.providers.gee")
        except ImportError as exc:
            raise MissingExtraError(
                f"the gse 'gee' source needs the Earth Engine provider (rsembed_store.ingest.providers.gee) "
                f"and earthengine-api (pip install 'rsembed-store[gee]'): {exc}"
            ) from exc
        with self._gee_lock:
            if self._gee is None:
                cfg = dict((self.config.get("providers") or {}).get("gee") or {})
                cfg.update(self.settings.get("gee") or {})
                self._gee = gee.EarthEngineProvider(cfg)
            return gee, self._gee

    def _read_gee(self, request: ResolvedRequest, plan: _Plan) -> Embedding:
        gee, provider = self._gee_provider()
        grid = plan.grid
        array, info = gee.fetch_image_array(COLLECTION, grid, list(BANDS), year=plan.year, composite="mosaic",
                                            resampling="nearest", provider=provider)
        array = np.asarray(array, dtype=np.float32)
        valid = np.asarray(info.get("valid", np.isfinite(array).all(axis=0)), bool) & np.isfinite(array).all(axis=0)
        usable = valid & grid.roi_mask
        if not usable.any():
            raise NoImageryError(
                f"request {request.key[:12]} (gse {plan.year} from Earth Engine): no valid pixel in the ROI"
            )
        meta = {"source": "gee", "year": plan.year, "collection": COLLECTION, "crs": grid.crs,
                "transform": list(grid.gdal()), "res_m": plan.scale_m,
                **{k: info[k] for k in ("ee_calls", "tiles", "n_images") if k in info}}
        if request.output.mode == "pooled":
            return answer(request, array, usable, decode=lambda v: v, fill=np.nan, unit=self.unit, meta=meta)
        # grids are stored as the dataset stores them: int8 with the published quantisation
        meta["requantised"] = True
        return answer(request, quantise(np.where(valid, array, np.nan)), usable, decode=dequantise,
                      fill=NODATA, codec="gse_int8", meta=meta)


class GseUnitModel(GseModel):
    """``gse`` with pooled vectors scaled to unit length (a separate space, so the option is keyed)."""

    info = ModelInfo(**{
        **GseModel.info.__dict__,
        "id": "gse-unit",
        "revision": "gse-v1-unit",
        "outputs": ("pooled",),
        "description": GseModel.info.description + "; pooled vectors scaled to unit length",
        "params": {**GseModel.info.params, "unit_pooled": True},
    })
    section = ("gse", "gse-unit")
    unit = True


__all__ = ["BANDS", "COLLECTION", "GseModel", "GseUnitModel", "dequantise", "quantise"]
