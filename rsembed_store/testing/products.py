"""Small synthetic precomputed products in the real on-disk layouts (tests and benchmarks).

Nothing here downloads anything. Each generator writes files exactly as the
published product lays them out, only smaller:

* :func:`write_gse_cog` / :func:`make_gse_root`: AlphaEarth Satellite Embedding
  COGs, ``<root>/<year>/<zone>/<name>.tiff``, 64 int8 bands named ``A00``..``A63``,
  nodata -128, the zone's UTM CRS, internal overviews whose pixels are the
  renormalised mean of the pixels under them (re-quantised), written top-down as a
  COG or bottom-up (positive y resolution, as some mirrors store them, with a
  ``.vrt`` sidecar beside the file).
* :func:`write_tessera_tile` / :func:`tessera_tile_grid`: TESSERA tiles in the
  geotessera layout, ``global_0.1_degree_representation/<year>/grid_<lon>_<lat>/``
  holding ``grid_<lon>_<lat>.npy`` (int8, ``(H, W, 128)``) and ``..._scales.npy``
  (float32), and ``global_0.1_degree_tiff_all/grid_<lon>_<lat>.tiff`` (the landmask
  that carries the tile's own UTM projection and transform).
* :func:`write_copernicus`: the single global Copernicus-Embed GeoTIFF, 721 x 1440
  pixels of 0.25 degree, 768 float32 bands, EPSG:4326, empty (ocean) pixels 0. It
  is written sparse, so only the blocks holding data take disk space.

The quantisation helpers here are written independently of the readers so tests
compare two implementations.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import rasterio
import rasterio.shutil as rio_shutil
from affine import Affine
from rasterio.warp import transform_bounds

from ..ingest.grid import utm_crs, utm_crs_of_zone

GSE_BANDS = 64
TESSERA_BANDS = 128
COPERNICUS_BANDS = 768
COPERNICUS_SHAPE = (721, 1440)
EMBEDDINGS_DIR = "global_0.1_degree_representation"
LANDMASKS_DIR = "global_0.1_degree_tiff_all"


# ------------------------------------------------------------------ gse


def gse_encode(x: np.ndarray) -> np.ndarray:
    """Quantise unit-vector components like the dataset: ``round(sign(x) sqrt|x| 127.5)``, NaN -> -128."""
    x = np.asarray(x, np.float64)
    finite = np.isfinite(x)
    q = np.clip(np.rint(np.copysign(np.sqrt(np.abs(np.where(finite, x, 0.0))), x) * 127.5), -127, 127)
    return np.where(finite, q, -128).astype(np.int8)


def gse_decode(q: np.ndarray) -> np.ndarray:
    v = np.asarray(q, np.float64)
    return np.where(v == -128, np.nan, np.copysign((v / 127.5) ** 2, v))


def unit_vectors(rng: np.random.Generator, bands: int, height: int, width: int, patch: int = 8) -> np.ndarray:
    """``(bands, H, W)`` unit vectors, constant over ``patch`` x ``patch`` blocks (compressible)."""
    gh, gw = -(-height // patch), -(-width // patch)
    v = rng.standard_normal((bands, gh, gw))
    v /= np.linalg.norm(v, axis=0, keepdims=True)
    return np.repeat(np.repeat(v, patch, axis=1), patch, axis=2)[:, :height, :width]


def gse_overview(q: np.ndarray, rows_per_chunk: int = 128) -> np.ndarray:
    """One overview level (``H`` and ``W`` halved): each pixel the mean of the valid 2 x 2 pixels
    under it, rescaled to unit length and re-quantised; -128 where all four are masked."""
    c, h, w = q.shape
    h2, w2 = h // 2, w // 2
    out = np.empty((c, h2, w2), np.int8)
    for r0 in range(0, h2, rows_per_chunk):
        r1 = min(r0 + rows_per_chunk, h2)
        x = gse_decode(q[:, 2 * r0:2 * r1, : w2 * 2]).reshape(c, r1 - r0, 2, w2, 2)
        valid = np.isfinite(x).all(axis=0)
        total = np.where(valid[None], x, 0.0).sum(axis=(2, 4))
        norm = np.linalg.norm(total, axis=0)
        ok = valid.any(axis=(1, 3)) & (norm > 0)
        out[:, r0:r1] = gse_encode(np.where(ok, total / np.where(ok, norm, 1.0), np.nan))
    return out


def _vrt_with_overviews(path: Path, base: Path, levels: Sequence[Path], crs: str, gt, w: int, h: int) -> None:
    """A VRT over ``base`` whose bands declare ``levels`` as their overviews (so GDAL copies them)."""
    with rasterio.open(base) as ds:
        wkt = ds.crs.to_wkt()
    bands = []
    for b in range(1, GSE_BANDS + 1):
        ovr = "".join(f'<Overview><SourceFilename relativeToVRT="0">{p}</SourceFilename>'
                      f"<SourceBand>{b}</SourceBand></Overview>" for p in levels)
        bands.append(
            f'<VRTRasterBand dataType="Int8" band="{b}"><NoDataValue>-128</NoDataValue>'
            f"<Description>A{b - 1:02d}</Description>"
            f'<SimpleSource><SourceFilename relativeToVRT="0">{base}</SourceFilename>'
            f"<SourceBand>{b}</SourceBand></SimpleSource>"
            f"{ovr}</VRTRasterBand>"
        )
    path.write_text(
        f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}"><SRS>{wkt}</SRS>'
        f"<GeoTransform>{', '.join(repr(float(v)) for v in gt)}</GeoTransform>{''.join(bands)}</VRTDataset>"
    )


def write_gse_cog(path, q: np.ndarray, transform: Affine, crs: str, *, bottom_up: bool = False,
                  blocksize: int = 256, compress: str = "ZSTD") -> Path:
    """Write ``q`` (``(64, H, W)`` int8, north-up) as a Satellite Embedding COG with overviews.

    ``transform`` is the north-up geotransform. ``bottom_up=True`` stores the rows
    south-first with a positive y resolution (and writes a ``.vrt`` sidecar), as some
    mirrors do; the overviews are stored the same way.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    q = np.asarray(q, np.int8)
    levels = [q]
    while min(levels[-1].shape[1:]) >= 2:
        levels.append(gse_overview(levels[-1]))
    tmp = Path(tempfile.mkdtemp(prefix="gse-", dir=path.parent))
    try:
        files = []
        for k, data in enumerate(levels):
            f = 2 ** k
            h, w = data.shape[1:]
            t = Affine(transform.a * f, transform.b, transform.c, transform.d, transform.e * f, transform.f)
            if bottom_up:
                data = data[:, ::-1, :]
                t = Affine(t.a, 0.0, t.c, 0.0, -t.e, t.f + t.e * h)
            profile = dict(driver="GTiff", width=w, height=h, count=GSE_BANDS, dtype="int8", nodata=-128, crs=crs,
                           transform=t, tiled=w >= 16 and h >= 16, interleave="pixel")
            if profile["tiled"]:
                profile.update(blockxsize=min(blocksize, 16 * (w // 16)), blockysize=min(blocksize, 16 * (h // 16)))
            out = tmp / f"level{k}.tif"
            with rasterio.open(out, "w", **profile) as dst:
                dst.write(data)
                dst.descriptions = tuple(f"A{i:02d}" for i in range(GSE_BANDS))
            files.append((out, t))
        vrt = tmp / "src.vrt"
        (base, t0), h0, w0 = files[0], q.shape[1], q.shape[2]
        _vrt_with_overviews(vrt, base, [p for p, _ in files[1:]], crs, t0.to_gdal(), w0, h0)
        if bottom_up:
            rio_shutil.copy(vrt, path, driver="GTiff", TILED="YES", BLOCKXSIZE=blocksize, BLOCKYSIZE=blocksize,
                            COMPRESS=compress, COPY_SRC_OVERVIEWS="YES", INTERLEAVE="PIXEL")
            path.with_suffix(".vrt").write_text(_sidecar(path, t0, w0, h0))
        else:
            rio_shutil.copy(vrt, path, driver="COG", BLOCKSIZE=blocksize, COMPRESS=compress,
                            OVERVIEWS="FORCE_USE_EXISTING")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _sidecar(path: Path, t: Affine, w: int, h: int) -> str:
    """The ``.vrt`` that bottom-up mirrors ship beside each file (the reader never needs it)."""
    with rasterio.open(path) as ds:
        wkt = ds.crs.to_wkt()
    bands = "".join(
        f'<VRTRasterBand dataType="Int8" band="{b}"><NoDataValue>-128</NoDataValue><SimpleSource>'
        f'<SourceFilename relativeToVRT="1">{path.name}</SourceFilename><SourceBand>{b}</SourceBand>'
        f"</SimpleSource></VRTRasterBand>" for b in range(1, GSE_BANDS + 1)
    )
    return (f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}"><SRS>{wkt}</SRS>'
            f"<GeoTransform>{', '.join(repr(float(v)) for v in t.to_gdal())}</GeoTransform>{bands}</VRTDataset>")


def make_gse_file(root, year: int, zone: str, left: float, top: float, size: Tuple[int, int], *, seed: int = 0,
                  bottom_up: bool = False, blocksize: int = 256, patch: int = 8, name: Optional[str] = None,
                  nodata_boxes: Sequence[Tuple[int, int, int, int]] = ()) -> Tuple[Path, np.ndarray, Affine]:
    """One COG at ``root/year/zone/``: ``size`` = (H, W) pixels of 10 m from ``(left, top)`` in the
    zone's CRS, random unit vectors constant over ``patch`` x ``patch`` blocks (1: every pixel
    differs, which compresses like noise); ``nodata_boxes`` are ``(row0, row1, col0, col1)``
    windows set to -128.
    Returns ``(path, q (64, H, W) north-up int8, north-up transform)``."""
    crs = utm_crs_of_zone(int(zone[:-1]), zone[-1] == "N")
    h, w = size
    rng = np.random.default_rng(seed)
    gh, gw = -(-h // patch), -(-w // patch)
    q = np.empty((GSE_BANDS, h, w), np.int8)
    step = max(1, 256 // patch)  # generate in strips: a float copy of a big file would not fit
    for g0 in range(0, gh, step):
        g1 = min(g0 + step, gh)
        strip = gse_encode(unit_vectors(rng, GSE_BANDS, g1 - g0, gw, 1))
        r0, r1 = g0 * patch, min(g1 * patch, h)
        q[:, r0:r1] = np.repeat(np.repeat(strip, patch, axis=1), patch, axis=2)[:, : r1 - r0, :w]
    for r0, r1, c0, c1 in nodata_boxes:
        q[:, r0:r1, c0:c1] = -128
    transform = Affine(10.0, 0.0, float(left), 0.0, -10.0, float(top))
    name = name or f"x{seed:04d}-{int(top):010d}-{int(left):010d}.tiff"
    path = write_gse_cog(Path(root) / str(year) / zone / name, q, transform, crs, bottom_up=bottom_up,
                         blocksize=blocksize)
    return path, q, transform


# ------------------------------------------------------------------ tessera


def tile_name(lon: float, lat: float) -> str:
    return f"grid_{lon:.2f}_{lat:.2f}"


def tessera_tile_grid(lon: float, lat: float, res: float = 10.0) -> Tuple[str, Affine, int, int]:
    """The tile's own grid: the UTM zone of its centre, ``res`` m pixels covering its 0.1-degree cell."""
    crs = utm_crs(lon, lat)
    minx, miny, maxx, maxy = transform_bounds("EPSG:4326", crs, lon - 0.05, lat - 0.05, lon + 0.05, lat + 0.05,
                                              densify_pts=21)
    left, top = math.floor(minx / res) * res, math.ceil(maxy / res) * res
    width, height = int(math.ceil((maxx - left) / res)), int(math.ceil((top - miny) / res))
    return crs, Affine(res, 0.0, left, 0.0, -res, top), width, height


def write_tessera_tile(base, year: int, lon: float, lat: float, q: np.ndarray, scales: np.ndarray, crs: str,
                       transform: Affine, *, nested: bool = True) -> Dict[str, Path]:
    """Write one tile: ``q`` ``(H, W, 128)`` int8, ``scales`` ``(H, W)`` or ``(H, W, 128)`` float32, and
    its landmask GeoTIFF (uint8, 1 = land) carrying ``crs``/``transform``. ``nested=False`` uses
    the flat ``<year>/grid_*.npy`` variant of the layout."""
    base = Path(base)
    name = tile_name(lon, lat)
    folder = base / EMBEDDINGS_DIR / str(year) / (name if nested else "")
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{name}.npy", np.asarray(q, np.int8))
    np.save(folder / f"{name}_scales.npy", np.asarray(scales, np.float32))
    mask_dir = base / LANDMASKS_DIR
    mask_dir.mkdir(parents=True, exist_ok=True)
    h, w = q.shape[:2]
    with rasterio.open(mask_dir / f"{name}.tiff", "w", driver="GTiff", width=w, height=h, count=1, dtype="uint8",
                       crs=crs, transform=transform) as dst:
        dst.write(np.ones((1, h, w), np.uint8))
    return {"embedding": folder / f"{name}.npy", "scales": folder / f"{name}_scales.npy",
            "landmask": mask_dir / f"{name}.tiff"}


def make_tessera_tile(base, year: int, lon: float, lat: float, *, seed: int = 0, per_band_scales: bool = False,
                      nested: bool = True) -> Tuple[np.ndarray, np.ndarray, str, Affine]:
    """A random tile at its real grid; returns ``(q, scales, crs, transform)``."""
    crs, transform, w, h = tessera_tile_grid(lon, lat)
    rng = np.random.default_rng(seed)
    q = rng.integers(-127, 127, size=(h, w, TESSERA_BANDS), dtype=np.int8, endpoint=True)
    shape = (h, w, TESSERA_BANDS) if per_band_scales else (h, w)
    scales = rng.uniform(0.01, 0.05, size=shape).astype(np.float32)
    write_tessera_tile(base, year, lon, lat, q, scales, crs, transform, nested=nested)
    return q, scales, crs, transform


# ------------------------------------------------------------------ copernicus


def write_copernicus(path, patches: Sequence[Tuple[int, int, np.ndarray]], *, left: float = -180.125,
                     top: float = 90.125, blocksize: int = 16) -> Path:
    """The global 721 x 1440 x 768 float32 GeoTIFF (EPSG:4326, 0.25 degree), zero everywhere but
    ``patches``: ``(row0, col0, values (768, h, w))``. Stored sparse and compressed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = COPERNICUS_SHAPE
    profile = dict(driver="GTiff", width=w, height=h, count=COPERNICUS_BANDS, dtype="float32", crs="EPSG:4326",
                   transform=Affine(0.25, 0.0, left, 0.0, -0.25, top), tiled=True, blockxsize=blocksize,
                   blockysize=blocksize, interleave="pixel", compress="deflate", sparse_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        for row0, col0, values in patches:
            values = np.asarray(values, np.float32)
            dst.write(values, window=rasterio.windows.Window(col0, row0, values.shape[2], values.shape[1]))
    return path


__all__ = [
    "gse_decode",
    "gse_encode",
    "gse_overview",
    "make_gse_file",
    "make_tessera_tile",
    "tessera_tile_grid",
    "tile_name",
    "unit_vectors",
    "write_copernicus",
    "write_gse_cog",
    "write_tessera_tile",
]
