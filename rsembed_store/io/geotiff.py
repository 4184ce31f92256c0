"""Grid rows as georeferenced rasters: one GeoTIFF (or COG) per grid, bands = embedding dimensions.

A grid answer ``(D, H, W)`` is north-up over the pixel grid its input was read
on; the row's metadata keeps that grid's CRS and GDAL geotransform
(``crs``, ``transform``) and how many input pixels one grid cell spans
(``grid_cell_px``, rows then columns). The raster's transform is the input's
scaled by that span, so the value under a coordinate is the stored one.

Files are named ``<key>.tif`` in the output directory, each written to a
temporary name and renamed when complete; an existing file is kept (a stopped
export resumes where it was). Grid rows without that metadata (e.g. read by a
product reader that does not record it) are counted in ``skipped``, never
guessed.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Dict, Iterator, Optional

import numpy as np
import pyarrow as pa

from ..embedding import grid_codec

COLUMNS = ["key", "model", "grid", "grid_shape", "grid_dtype", "grid_codec", "meta", "request"]


def grid_batches(store, space: str, filter: Optional[str], batch_rows: int = 256) -> Iterator[pa.RecordBatch]:
    where = "output = 'grid'" + (f" AND ({filter})" if filter else "")
    yield from store.dataset(space).to_batches(columns=COLUMNS, filter=where, batch_size=batch_rows)


def georeference(meta: dict, shape) -> Optional[tuple]:
    """``(crs, affine transform)`` of a ``(D, H, W)`` grid from its row's metadata, or None."""
    from affine import Affine

    crs, gt, cell = meta.get("crs"), meta.get("transform"), meta.get("grid_cell_px")
    if not crs or not gt or len(gt) != 6 or not cell or len(cell) != 2:
        return None
    return crs, Affine.from_gdal(*gt) @ Affine.scale(float(cell[1]), float(cell[0]))


def cog_blocksize(height: int, width: int) -> int:
    """The COG tile side: 128 (the least GDAL's COG driver accepts), 256 for grids of 512 cells a side
    or more, 512 from 1024. Overviews are made while the grid is larger than one tile, so a grid of
    more than 128 cells a side has at least one overview level; a smaller one is a single tile."""
    side = min(height, width)
    return 512 if side >= 1024 else 256 if side >= 512 else 128


def read_grid(row: dict) -> np.ndarray:
    """The ``(D, H, W)`` float32 grid of a stored grid row (decoded by the model's codec)."""
    raw = np.frombuffer(row["grid"], dtype=np.dtype(row["grid_dtype"])).reshape(row["grid_shape"])
    return np.asarray(grid_codec(row["grid_codec"] or "raw", row["model"])(raw), dtype=np.float32)


def georeferenced_grids(store, space: str, filter: Optional[str], done: Callable[[str], bool],
                        counts: Dict[str, int]) -> Iterator[tuple]:
    """``(row, grid, crs, transform)`` for each grid row of ``space`` that ``filter`` keeps, skipping
    the keys ``done`` says are already written (counted ``kept``) and grids with no georeference in
    their meta (counted ``skipped``): what every raster writer of grids iterates over."""
    for batch in grid_batches(store, space, filter):
        for row in batch.to_pylist():
            if done(row["key"]):
                counts["kept"] += 1
                continue
            meta = json.loads(row["meta"] or "{}")
            shape = row["grid_shape"]
            ref = georeference(meta, shape) if shape and len(shape) == 3 else None
            if ref is None:
                counts["skipped"] += 1
                continue
            crs, transform = ref
            yield row, read_grid(row), crs, transform


def write_grid_tifs(store, space: str, out_dir: str, *, filter: Optional[str] = None,
                    progress: Optional[Callable[[int], None]] = None, cog: bool = False) -> Dict[str, int]:
    """Write every grid row of ``space`` (that ``filter`` keeps) as ``out_dir/<key>.tif``; ``cog`` writes
    cloud-optimised GeoTIFFs (GDAL's COG driver: internal tiles, overviews, deflate)."""
    import rasterio
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as rio_copy

    os.makedirs(out_dir, exist_ok=True)
    counts = {"written": 0, "kept": 0, "skipped": 0}

    def tif(key: str) -> str:
        return os.path.join(out_dir, f"{key}.tif")

    for row, grid, crs, transform in georeferenced_grids(store, space, filter, lambda k: os.path.exists(tif(k)),
                                                         counts):
        path = tif(row["key"])
        shape = row["grid_shape"]
        tmp = os.path.join(out_dir, f".{row['key']}.tif.tmp-{os.getpid()}")
        profile = dict(width=shape[2], height=shape[1], count=shape[0], dtype="float32", crs=crs,
                       transform=transform, nodata=float("nan"))
        try:
            if cog:  # the COG driver only copies: build the raster in memory, then copy it out
                with MemoryFile() as mem:
                    with mem.open(driver="GTiff", **profile) as dst:
                        dst.write(grid)
                        dst.update_tags(key=row["key"], request=row["request"])
                    with mem.open() as src:
                        rio_copy(src, tmp, driver="COG", compress="deflate", overviews="auto",
                                 overview_resampling="average", blocksize=cog_blocksize(shape[1], shape[2]))
            else:
                with rasterio.open(tmp, "w", driver="GTiff", compress="deflate",
                                   tiled=shape[1] >= 256 and shape[2] >= 256, **profile) as dst:
                    dst.write(grid)
                    dst.update_tags(key=row["key"], request=row["request"])
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        counts["written"] += 1
        if progress:
            progress(1)
    return counts
