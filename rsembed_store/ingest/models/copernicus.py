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
  max of the cells with data; all-zero cells are no data). A BBox or PointBuffer
  holds the centres in its lon/lat rectangle ``[w, e) x [s, n)`` (``n = 90`` takes
  the pole row; -180 to 180 is every column once); an H3 cell holds the centres
  that h3 itself puts in it (``latlng_to_cell``: its edges are geodesic arcs, not
  lon/lat lines, which differ by whole pixels at resolutions 0 to 3);
* poles: every pixel of a pole row is a slice of longitude centred on the pole. An
  ROI around a pole (a PointBuffer on it, an H3 cell or a BBox that holds it over
  all longitudes) pools the whole row, 1440 cells, whatever its longitude says; a
  box that touches the pole over some longitudes takes those slices;
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

import h3
import numpy as np

from ...embedding import Embedding
from ...errors import NoImageryError, ProviderError
from ...keys import ResolvedRequest
from ...model import ModelInfo
from ...specs import EARTH_RADIUS_M, H3Cell, OutputSpec
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


def _columns(lon_c: np.ndarray, west: float, span: float) -> np.ndarray:
    """The columns whose centre lies in ``[west, west + span)`` going east (modulo 360 degrees,
    so across the antimeridian too), west to east; ``span >= 360`` is every column."""
    key = (lon_c - west) % 360.0
    cols = np.arange(lon_c.size) if span >= 360.0 else np.flatnonzero(key < span)
    return cols[np.argsort(key[cols], kind="stable")]


def _hexagon(cell: str, lon_c: np.ndarray, lat_c: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pixels whose centre h3 itself puts in ``cell`` (``latlng_to_cell`` at its resolution).

    H3 edges are geodesic arcs, not straight lon/lat lines, so the lon/lat outline is no
    test. Candidates are the pixels of the spherical cap around the cell centre that holds
    every vertex: a cap holds the arcs between its points, so it holds the whole cell, a
    pole included when the cell holds one (then every column)."""
    res = h3.get_resolution(cell)
    lat0, lon0 = h3.cell_to_latlng(cell)
    rad = max(h3.great_circle_distance((lat0, lon0), v, unit="rads") for v in h3.cell_to_boundary(cell))
    r = math.degrees(rad) * 1.01 + 1e-6  # a margin for rounding
    if abs(lat0) + r >= 90.0:
        west, span = -180.0, 360.0
    else:
        dlon = math.degrees(math.asin(math.sin(math.radians(r)) / math.cos(math.radians(lat0))))
        west, span = lon0 - dlon, 2.0 * dlon
    rows = np.flatnonzero(np.abs(lat_c - lat0) <= r)
    cols = _columns(lon_c, west, span)
    inside = np.array([h3.latlng_to_cell(lat, lon, res) == cell for lat in lat_c[rows] for lon in lon_c[cols]],
                      bool).reshape(rows.size, cols.size)
    rr, cc = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    if rr.size == 0:
        return rows[:0], cols[:0], inside[:0, :0]
    return rows[rr[0]:rr[-1] + 1], cols[cc[0]:cc[-1] + 1], inside[rr[0]:rr[-1] + 1, cc[0]:cc[-1] + 1]


def _cells_inside(spatial, lon_c: np.ndarray, lat_c: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, cols, inside)``: the rows (file order) and columns (west to east) around the ROI
    and which of those pixels have their centre in it.

    A BBox or PointBuffer is its lon/lat rectangle, half-open ``[w, e) x [s, n)`` so that
    neighbouring boxes never share a pixel (``n = 90`` takes the north pole row); ``-180`` to
    ``180`` is every column once. The pixels of a pole row all centre on the pole, one per
    slice of longitude: a PointBuffer on a pole spans every longitude and takes the whole row."""
    if isinstance(spatial, H3Cell):
        return _hexagon(spatial.cell, lon_c, lat_c)
    w, s, e, n = spatial.bounds()
    rows = np.flatnonzero((lat_c >= s) & ((lat_c < n) | (n >= 90.0)))
    cols = _columns(lon_c, w, e - w)
    return rows, cols, np.ones((rows.size, cols.size), bool)


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
        seconds_per_request=0.02,  # reading a product: no imagery, no network
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
        lon_c = (t.c + (np.arange(ds.width) + 0.5) * t.a + 180.0) % 360.0 - 180.0  # every column's centre
        lat_c = np.clip(t.f + (np.arange(ds.height) + 0.5) * t.e, -90.0, 90.0)  # every row's centre
        spatial = request.spatial
        rows, cols, inside = _cells_inside(spatial, lon_c, lat_c)
        subpixel = not inside.any()
        if subpixel:  # the pixel that contains the ROI centre
            lon, lat = spatial.center()
            if abs(abs(t.a) * ds.width - 360.0) < 1e-6:  # a global file: the longitude wraps
                lon = (lon - t.c) % 360.0 + t.c
            r, c = int(math.floor(inv.e * lat + inv.f)), int(math.floor(inv.a * lon + inv.c))
            if not (0 <= r < ds.height and 0 <= c < ds.width):
                raise NoImageryError(f"{spatial!r} lies outside the Copernicus-Embed map {plan.path}")
            rows, cols, inside = np.array([r]), np.array([c]), np.ones((1, 1), bool)
        row0, row1 = int(rows[0]), int(rows[-1]) + 1
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
