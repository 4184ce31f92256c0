"""``tessera``: TESSERA annual embeddings (University of Cambridge; 128-d, 10 m).

The product is cut into 0.1-degree tiles named by their centre
(``grid_0.15_52.05``), each in the UTM projection of its own zone. The layout of a
local copy (the layout of the geotessera library's ``embeddings_dir``)::

    <root>/global_0.1_degree_representation/<year>/grid_<lon>_<lat>/
        grid_<lon>_<lat>.npy           int8 (H, W, 128)
        grid_<lon>_<lat>_scales.npy    float32 (H, W) or (H, W, 128)
    <root>/global_0.1_degree_tiff_all/grid_<lon>_<lat>.tiff   landmask: the tile's CRS and transform

(the flat ``<year>/grid_*.npy`` variant is read too). A ``<root>/<version>/`` folder
holding that layout is used when present, so several versions can sit side by
side. De-quantisation, as geotessera documents it: ``values * scales``. A pixel
whose scale is 0 or not finite is no data.

Settings (``products.tessera``; env ``RSEMBED_TESSERA_ROOT``, ``RSEMBED_TESSERA_VERSION``):
``root``, ``version`` (must be this model's, ``v1``: versions are never mixed),
``access``: ``auto`` (default: local tiles; tiles missing locally through the
``geotessera`` library when it is installed), ``local`` (offline only) or
``geotessera``; ``geotessera`` (keyword arguments for ``GeoTessera(...)``, e.g.
``cache_dir``, ``registry_dir``).

Mosaics are built on the request grid (UTM zone of the ROI centre, 10 m): each
pixel takes the tile pixel that contains its centre, first from the tile whose
0.1-degree cell contains that centre, so adjacent tiles in different UTM zones meet
without gap or overlap. Grids are float32 ``(128, H, W)`` (the de-quantised values;
the scales are per pixel, so no single int8 recipe covers a grid). A coarser
``scale_m`` that is a multiple of 10 averages the 10 m pixels under each cell.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from affine import Affine

from ...embedding import Embedding
from ...errors import MissingExtraError, NoImageryError, ProviderError, SpecError
from ...keys import ResolvedRequest
from ...model import ModelInfo
from ..grid import TargetGrid, target_grid
from .products import ProductModel, Session, answer, check_grid_size
from .products_raster import Part, array_part, mosaic

EMBEDDINGS_DIR = "global_0.1_degree_representation"
LANDMASKS_DIR = "global_0.1_degree_tiff_all"
NATIVE_M = 10.0
MAX_POOL_PIXELS = 1_000_000  # (128, H, W) float32 per request
NEIGHBOUR_DEG = 0.01  # how far past the ROI neighbouring tiles are looked for
ATTRIBUTION = ("TESSERA embeddings (CC0 1.0; attribution requested), University of Cambridge, "
               "Feng et al. 2025, arXiv:2506.20380; contains modified Copernicus Sentinel data.")


def tile_name(lon: float, lat: float) -> str:
    return f"grid_{lon:.2f}_{lat:.2f}"


def cells_for(bounds_lonlat: Tuple[float, float, float, float]) -> List[Tuple[int, int]]:
    """Indices ``(i, j)`` (cell = ``[i/10, (i+1)/10) x [j/10, (j+1)/10)``) a lon/lat box touches."""
    w, s, e, n = bounds_lonlat
    return [(i, j) for j in range(math.floor(s * 10), math.floor(n * 10) + 1)
            for i in range(math.floor(w * 10), math.floor(e * 10) + 1)]


def centre(i: int, j: int) -> Tuple[float, float]:
    return round((i + 0.5) / 10, 2), round((j + 0.5) / 10, 2)


def dequantise(q: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """``(h, w, 128)`` int8 and ``(h, w)`` or ``(h, w, 128)`` scales -> ``(128, h, w)`` float32, NaN = no data."""
    s = np.asarray(scales, np.float32)
    s3 = s[..., None] if s.ndim == 2 else s
    out = q.astype(np.float32) * s3
    bad = ~np.isfinite(s3) | (s3 == 0)
    bad = bad[..., 0] if s.ndim == 2 else bad.all(axis=-1)
    out[bad] = np.nan
    return np.moveaxis(out, -1, 0)


def _valid(values: np.ndarray) -> np.ndarray:
    return np.isfinite(values).all(axis=0)


def _owner(i: int, j: int):
    def owns(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        return (np.floor(lon * 10) == i) & (np.floor(lat * 10) == j)
    return owns


@dataclass
class _Tile:
    i: int
    j: int
    name: str
    local: Optional[Dict[str, Path]] = None  # embedding, scales, landmask


@dataclass
class _Plan:
    year: int
    grid: TargetGrid  # the grid the pixels are read on (10 m, or the output scale)
    out: TargetGrid  # the grid of the answer
    factor: int  # out pixel = factor x factor read pixels
    tiles: List[_Tile]
    sources: Tuple[str, ...]


class TesseraModel(ProductModel):
    """TESSERA annual embeddings from a local tile layout or through the geotessera library."""

    info = ModelInfo(
        id="tessera",
        revision="tessera-v1",
        kind="precomputed",
        dim=128,
        metric="cosine",
        outputs=("pooled", "grid"),
        temporal="year",
        providers=("geotessera",),
        grid_dtype="float32",
        years=(2017, 2025),
        seconds_per_request=0.02,  # reading a product: no imagery, no network
        description="TESSERA annual Sentinel-1/2 pixel embeddings (Cambridge), 128-d, 10 m, 0.1-degree UTM tiles",
        citation=ATTRIBUTION,
        params={"version": "v1", "tile_deg": 0.1, "dequantisation": "q * scales", "native_m": NATIVE_M,
                "max_pool_pixels": MAX_POOL_PIXELS},
    )
    section = ("tessera",)
    env = {"root": "RSEMBED_TESSERA_ROOT", "version": "RSEMBED_TESSERA_VERSION"}
    setting_keys = ("root", "version", "access")

    def __init__(self, config=None):
        super().__init__(config)
        self.access = str(self.settings.get("access", "auto"))
        if self.access not in ("auto", "local", "geotessera"):
            raise ProviderError(
                f"tessera setting access={self.access!r} is not accepted; use 'auto', 'local' or 'geotessera'"
            )
        self._client = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------ where tiles are

    def base(self) -> Optional[Path]:
        root = self.settings.get("root")
        if not root:
            return None
        root = Path(str(root)).expanduser()
        versioned = root / self.version
        return versioned if (versioned / EMBEDDINGS_DIR).is_dir() else root

    def _local(self, base: Optional[Path], year: int, name: str) -> Optional[Dict[str, Path]]:
        if base is None:
            return None
        mask = base / LANDMASKS_DIR / f"{name}.tiff"
        for folder in (base / EMBEDDINGS_DIR / str(year) / name, base / EMBEDDINGS_DIR / str(year)):
            emb, scales = folder / f"{name}.npy", folder / f"{name}_scales.npy"
            if emb.is_file() and scales.is_file():
                if not mask.is_file():
                    raise ProviderError(f"tessera tile {name} ({year}) has no landmask {mask}: it carries the tile's "
                                        "projection, and the tile cannot be placed without it")
                return {"embedding": emb, "scales": scales, "landmask": mask}
        return None

    def client(self):
        """The geotessera client (built once), or MissingExtraError when the library is absent."""
        with self._lock:
            if self._client is None:
                try:
                    import geotessera
                except ImportError as exc:
                    raise MissingExtraError(
                        "tessera tiles missing locally need the geotessera library (pip install geotessera), "
                        f"or download them into the configured root first: {exc}"
                    ) from exc
                kwargs = dict(self.settings.get("geotessera") or {})
                if self.settings.get("root") and "embeddings_dir" not in kwargs:
                    kwargs["embeddings_dir"] = str(self.base())
                self._client = geotessera.GeoTessera(dataset_version=self.version, **kwargs)
            return self._client

    def plan(self, request: ResolvedRequest) -> _Plan:
        out = request.output
        year = request.temporal.year
        scale = out.scale_m if out.mode == "grid" else NATIVE_M
        check_grid_size(request.spatial, scale, MAX_POOL_PIXELS, self.info.id)  # before allocating it
        out_grid = target_grid(request.spatial, scale, max_pixels=self.limits.max_roi_pixels)
        factor = int(round(scale / NATIVE_M))
        if out.mode == "grid" and factor > 1 and abs(factor * NATIVE_M - scale) < 1e-6 and \
                out_grid.width * out_grid.height * factor * factor <= MAX_POOL_PIXELS:
            t = out_grid.transform
            fh, fw = out_grid.height * factor, out_grid.width * factor
            fine = TargetGrid(out_grid.crs, Affine(NATIVE_M, 0.0, t.c, 0.0, -NATIVE_M, t.f), fw, fh,
                              np.ones((fh, fw), bool))
            read_grid = fine
        else:
            factor, read_grid = 1, out_grid
        if read_grid.width * read_grid.height > MAX_POOL_PIXELS:
            raise SpecError(
                f"tessera reads at most {MAX_POOL_PIXELS} pixels per request; {request.spatial!r} at "
                f"{read_grid.transform.a:g} m needs {read_grid.width * read_grid.height}: split it (e.g. H3 cells "
                "of resolution >= 6) or ask for a grid with a coarser scale_m"
            )
        base = None if self.access == "geotessera" else self.base()
        if base is None and self.access == "local":
            raise ProviderError("tessera has no root: set config {'products': {'tessera': {'root': '/data/tessera'}}} "
                                "or RSEMBED_TESSERA_ROOT")
        w, s, e, n = read_grid.bounds_lonlat()
        core = cells_for((w, s, e, n))
        tiles = []
        # a tile's UTM grid reaches past its cell: local neighbours may fill what no owner covers
        for i, j in core + [c for c in cells_for((w - NEIGHBOUR_DEG, s - NEIGHBOUR_DEG, e + NEIGHBOUR_DEG,
                                                  n + NEIGHBOUR_DEG)) if c not in core]:
            name = tile_name(*centre(i, j))
            local = self._local(base, year, name)
            if local is not None or (i, j) in core:
                tiles.append(_Tile(i, j, name, local))
        if all(t.local is None for t in tiles) and self.access == "local":
            raise NoImageryError(f"no tessera tile of {year} under {base} covers {request.spatial!r} "
                                 f"(looked for {[t.name for t in tiles]})")
        return _Plan(year, read_grid, out_grid, factor, tiles, tuple(f"{year}/{t.name}" for t in tiles))

    # ------------------------------------------------------------ reading

    def _local_part(self, tile: _Tile, session: Session) -> Part:
        paths = tile.local
        emb = session.get(("npy", str(paths["embedding"])), lambda: np.load(paths["embedding"], mmap_mode="r"))
        scales = session.get(("npy", str(paths["scales"])), lambda: np.load(paths["scales"], mmap_mode="r"))
        mask = session.raster(str(paths["landmask"]))
        if emb.ndim != 3 or emb.shape[:2] != (mask.height, mask.width) or scales.shape[:2] != emb.shape[:2]:
            raise ProviderError(f"tessera tile {tile.name}: embedding {emb.shape}, scales {scales.shape} and landmask "
                                f"{(mask.height, mask.width)} do not describe the same grid")
        return array_part(emb, tile.name, mask.crs.to_string(), mask.transform,
                          lambda win, r0, r1, c0, c1: dequantise(win, scales[r0:r1, c0:c1]), _valid,
                          owns=_owner(tile.i, tile.j))

    def _library_parts(self, plan: _Plan, missing: List[_Tile], session: Session) -> List[Part]:
        gt = self.client()
        w, s, e, n = plan.grid.bounds_lonlat()
        listed = gt.registry.load_blocks_for_region(bounds=(w, s, e, n), year=plan.year)
        have = {tile_name(float(t[-2]), float(t[-1])) for t in listed}
        parts = []
        for tile in missing:
            if tile.name not in have:
                continue
            lon, lat = centre(tile.i, tile.j)

            def fetch(lon=lon, lat=lat):
                got = gt.fetch_embedding(lon=lon, lat=lat, year=plan.year)
                if not (isinstance(got, tuple) and len(got) == 3):
                    raise ProviderError("this geotessera version's fetch_embedding does not return "
                                        "(embedding, crs, transform); upgrade geotessera")
                return got

            arr, crs, transform = session.get(("geotessera", plan.year, tile.name), fetch)
            parts.append(array_part(np.asarray(arr, np.float32), tile.name, str(crs), transform,
                                    lambda win, *_: np.moveaxis(win, -1, 0), _valid, owns=_owner(tile.i, tile.j)))
        return parts

    def read_one(self, request: ResolvedRequest, plan: _Plan, session: Session) -> Embedding:
        parts = [self._local_part(t, session) for t in plan.tiles if t.local is not None]
        missing = [t for t in plan.tiles if t.local is None]
        if missing and self.access != "local":
            try:
                parts += self._library_parts(plan, missing, session)
            except MissingExtraError:
                if not parts:
                    raise
        if not parts:
            raise NoImageryError(f"no tessera tile of {plan.year} covers {request.spatial!r} "
                                 f"(tiles {[t.name for t in plan.tiles]})")
        g = plan.grid
        need = plan.out.roi_mask if plan.factor == 1 else None
        array, filled, used = mosaic(parts, g.crs, g.transform, g.width, g.height, channels=128,
                                     dtype=np.float32, fill=np.nan, need=need)
        if plan.factor > 1:
            k = plan.factor
            blocks = array.reshape(128, plan.out.height, k, plan.out.width, k)
            ok = np.isfinite(blocks).all(axis=0)
            total = np.where(ok[None], blocks, 0.0).sum(axis=(2, 4), dtype=np.float64)
            count = ok.sum(axis=(1, 3))
            with np.errstate(invalid="ignore", divide="ignore"):
                array = np.where(count > 0, total / count, np.nan).astype(np.float32)
            filled = count > 0
        usable = filled & plan.out.roi_mask
        roi_px = int(plan.out.roi_mask.sum())
        if not usable.any():
            raise NoImageryError(f"request {request.key[:12]} (tessera {plan.year}, {request.spatial!r}): every "
                                 f"pixel inside the ROI is no data in tiles {used or [t.name for t in plan.tiles]}")
        meta = {"source": "geotessera", "version": self.version, "year": plan.year, "tiles": used,
                "crs": plan.out.crs, "transform": list(plan.out.gdal()), "res_m": float(plan.out.transform.a),
                "roi_px": roi_px, "nodata_fraction": round(float(1.0 - usable.sum() / max(roi_px, 1)), 6)}
        return answer(request, array, usable, decode=lambda v: v, fill=np.nan, meta=meta)


__all__ = ["TesseraModel", "cells_for", "dequantise", "tile_name"]
