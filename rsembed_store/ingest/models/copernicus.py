"""``copernicus``: Copernicus-Embed, one 768-d vector per 0.25-degree cell of the globe (2021).

The product is a single global GeoTIFF (``embed_map_310k.tif``): 721 x 1440 pixels
of 0.25 degree in EPSG:4326, 768 float32 bands, empty (ocean) cells filled with 0.
Setting ``path`` (``products.copernicus.path``; env ``RSEMBED_COPERNICUS_PATH``): a
local path or anything GDAL opens (``https://...``, ``s3://...``). The file's own
geotransform is used, so either longitude convention (-180..180 or 0..360) and
either row order work.

Answers (the file is opened once per batch, and only the rows and columns an ROI
touches are read):

* an ROI that holds the centre of at least one pixel pools those pixels (mean or
  max of the cells with data; all-zero cells are no data);
* an ROI smaller than a pixel (no pixel centre inside it) returns the pixel that
  contains the ROI centre, and says so: ``meta["subpixel"] = True``;
* grid: ``(768, H, W)`` float32 of the native pixels, north-up, NaN outside the ROI.
  Its scale is the product's; any ``OutputSpec.grid(scale_m)`` resolves to the
  native one (:data:`NATIVE_SCALE_M`), so all grid requests of an ROI share a key.

Only year 2021 exists; other years are refused when the request is resolved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import List, Optional, Tuple

import numpy as np

from ...embedding import Embedding
from ...errors import NoImageryError, ProviderError
from ...keys import ResolvedRequest
from ...model import ModelInfo
from ...specs import EARTH_RADIUS_M, OutputSpec
from ..providers.local import _points_in_polygon
from .products import ProductModel, Session, answer

BANDS = 768
RES_DEG = 0.25
NATIVE_SCALE_M = round(RES_DEG * EARTH_RADIUS_M * math.pi / 180.0, 3)
ATTRIBUTION = ("Copernicus-Embed (Wang et al. 2025, arXiv:2503.11849), CC-BY 4.0; "
               "contains modified Copernicus Sentinel data.")


def _valid(values: np.ndarray, nodata: Optional[float]) -> np.ndarray:
    ok = np.isfinite(values).all(axis=0) & (values != 0).any(axis=0)
    if nodata is not None and math.isfinite(nodata):
        ok &= ~(values == nodata).all(axis=0)
    return ok


def _runs(cols: np.ndarray) -> List[Tuple[int, int]]:
    """Contiguous runs ``[c0, c1)`` of a column sequence (at most two when it wraps)."""
    out, start = [], 0
    for k in range(1, len(cols) + 1):
        if k == len(cols) or cols[k] != cols[k - 1] + 1:
            out.append((int(cols[start]), int(cols[k - 1]) + 1))
            start = k
    return out


@dataclass
class _Plan:
    path: str
    sources: Tuple[str, ...]


class CopernicusModel(ProductModel):
    """Copernicus-Embed (0.25 degree, 768-d, 2021) from its global GeoTIFF."""

    info = ModelInfo(
        id="copernicus",
        revision="copernicus-embed-025deg-310k",
        kind="precomputed",
        dim=BANDS,
        metric="cosine",
        outputs=("pooled", "grid"),
        temporal="year",
        providers=("geotiff",),
        grid_dtype="float32",
        years=(2021, 2021),
        description="Copernicus-Embed: one 768-d Copernicus-FM embedding per 0.25-degree cell, 2021",
        citation="Wang et al. 2025, Towards a Unified Copernicus Foundation Model, arXiv:2503.11849. " + ATTRIBUTION,
        params={"version": "025deg-310k", "res_deg": RES_DEG, "shape": [721, 1440], "empty": "all-zero cells",
                "native_scale_m": NATIVE_SCALE_M},
    )
    section = ("copernicus",)
    env = {"path": "RSEMBED_COPERNICUS_PATH", "version": "RSEMBED_COPERNICUS_VERSION"}
    setting_keys = ("path", "version")

    @classmethod
    def resolve_output(cls, output: Optional[OutputSpec]) -> OutputSpec:
        out = super().resolve_output(output)
        return replace(out, scale_m=NATIVE_SCALE_M) if out.mode == "grid" else out

    @classmethod
    def footprint(cls, request: ResolvedRequest):
        """The 0.25-degree cells an ROI's rows and columns span, 768 float32 values each."""
        from ...limits import Footprint

        w, s, e, n = request.spatial.bounds()
        cells = (math.ceil((e - w) / RES_DEG) + 1) * (math.ceil((n - s) / RES_DEG) + 1)
        return Footprint(float(cells), BANDS, 4, NATIVE_SCALE_M, "copernicus embeddings")

    def plan(self, request: ResolvedRequest) -> _Plan:
        path = self.settings.get("path")
        if not path:
            raise ProviderError("copernicus has no path: set config {'products': {'copernicus': {'path': "
                                "'/data/embed_map_310k.tif'}}} or RSEMBED_COPERNICUS_PATH")
        return _Plan(str(path), ("copernicus",))

    def read_one(self, request: ResolvedRequest, plan: _Plan, session: Session) -> Embedding:
        ds = session.raster(plan.path)
        if ds.count != BANDS or ds.crs is None or not ds.crs.is_geographic:
            raise ProviderError(f"{plan.path} is not the Copernicus-Embed map: expected {BANDS} bands in EPSG:4326, "
                                f"got {ds.count} band(s) in {ds.crs}")
        t, inv = ds.transform, ~ds.transform
        if t.b or t.d:
            raise ProviderError(f"{plan.path} has a rotated geotransform; expected a plain lon/lat grid")
        global_lon = abs(abs(t.a) * ds.width - 360.0) < 1e-6
        spatial = request.spatial
        w, s, e, n = spatial.bounds()

        def col_of(lon):  # north-up or south-up, the column only depends on lon
            x = (lon - t.c) % 360.0 + t.c if global_lon else lon
            return int(math.floor(inv.a * x + inv.c))

        def row_of(lat):
            return int(math.floor(inv.e * lat + inv.f))

        rows = sorted({min(max(row_of(lat), 0), ds.height - 1) for lat in (s, n)})
        row0, row1 = rows[0], rows[-1] + 1
        c_w, c_e = col_of(w), col_of(e)
        count = (c_e - c_w) % ds.width + 1 if global_lon else max(min(c_e, ds.width - 1) - max(c_w, 0) + 1, 0)
        cols = (c_w + np.arange(count)) % ds.width if global_lon else np.arange(max(c_w, 0), max(c_w, 0) + count)
        lon_c = t.c + (cols + 0.5) * t.a
        lon_c = (lon_c + 180.0) % 360.0 - 180.0
        lat_c = t.f + (np.arange(row0, row1) + 0.5) * t.e
        ring = spatial.polygon()
        px, py = np.meshgrid(lon_c, lat_c)
        inside = _points_in_polygon(px, py, np.array([p[0] for p in ring]), np.array([p[1] for p in ring]))
        subpixel = not inside.any()
        if subpixel:  # the pixel that contains the ROI centre
            lon, lat = spatial.center()
            r, c = row_of(lat), col_of(lon)
            if not (0 <= r < ds.height and 0 <= c < ds.width):
                raise NoImageryError(f"{spatial!r} lies outside the Copernicus-Embed map {plan.path}")
            row0, row1, cols, inside = r, r + 1, np.array([c]), np.ones((1, 1), bool)
        reader = session.blocks(plan.path)  # whole blocks, kept for the batch: neighbours share them
        array = np.concatenate([reader.read(row0, row1, c0, c1) for c0, c1 in _runs(cols)], axis=2)
        if t.e > 0:  # stored south-up: answer north-up
            array, inside = array[:, ::-1, :], inside[::-1, :]
        valid = _valid(array.reshape(BANDS, -1), ds.nodata).reshape(inside.shape)
        usable = inside & valid
        if not usable.any():
            raise NoImageryError(f"request {request.key[:12]} (copernicus): the {int(inside.sum())} cell(s) of "
                                 f"{spatial!r} hold no data (ocean cells are empty in Copernicus-Embed)")
        meta = {"source": "geotiff", "year": request.temporal.year, "subpixel": subpixel,
                "pixels": int(inside.sum()), "valid_pixels": int(usable.sum()), "res_deg": RES_DEG,
                "rows": [int(row0), int(row1)], "cols": [int(cols[0]), int(cols[-1]) + 1]}
        if subpixel:
            meta["note"] = "the ROI is smaller than one 0.25-degree cell: this is the cell that contains its centre"
        array = array.astype(np.float32, copy=False)
        array[:, ~valid] = np.nan
        return answer(request, array, usable, decode=lambda v: v, fill=np.nan, meta=meta)


__all__ = ["CopernicusModel", "NATIVE_SCALE_M"]
