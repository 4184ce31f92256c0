"""Putting product pixels on a request grid: nearest-neighbour sampling and mosaics.

A :class:`Part` is one source raster as the mosaic sees it: its CRS, its affine
geotransform (north-up or bottom-up, it does not matter), its size, and a
``read(row0, row1, col0, col1)`` that returns that window in file order. For
each target pixel centre :func:`mosaic` finds the source pixel that contains it
(the inverse geotransform, after reprojecting the centre into the part's CRS
when the CRSs differ), reads the one window of the part that covers all those
pixels, and copies the values. So

* only the window a request needs is read from each file;
* a bottom-up file is handled by its geotransform (rows count from the south),
  and the result is always north-up, because the target grid is;
* a mosaic across files or UTM zones has no seam: every target pixel is
  assigned by its own centre, never by a footprint rectangle.

Where sources overlap, a pixel first goes to the part that *owns* it (the
product's rule: the UTM zone or the tile cell that contains the pixel centre)
and only falls back to another part where the owner has no data there.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
from affine import Affine

LONLAT = "EPSG:4326"


@dataclass
class Part:
    """One source raster: ``read(r0, r1, c0, c1)`` -> ``(C, r1-r0, c1-c0)`` in file order.

    ``valid(values)`` takes ``(C, n)`` values and says which of the n pixels hold data;
    ``owns(lon, lat)`` (optional) says which pixel centres this part is the first choice for.
    """

    name: str
    crs: str
    transform: Affine
    width: int
    height: int
    read: Callable[[int, int, int, int], np.ndarray]
    valid: Callable[[np.ndarray], np.ndarray]
    owns: Optional[Callable[[np.ndarray, np.ndarray], np.ndarray]] = None


def pixel_centres(transform: Affine, width: int, height: int) -> Tuple[np.ndarray, np.ndarray]:
    """Map coordinates of every pixel centre of a grid, each ``(height * width,)``, row-major."""
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    xs = transform.c + transform.a * cols + transform.b * rows
    ys = transform.f + transform.d * cols + transform.e * rows
    return xs.ravel(), ys.ravel()


def reproject_points(src_crs: str, dst_crs: str, xs: np.ndarray, ys: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    if src_crs == dst_crs or xs.size == 0:
        return xs, ys
    from rasterio.warp import transform as warp_transform  # here: listing the models must not import rasterio

    tx, ty = warp_transform(src_crs, dst_crs, xs, ys)
    return np.asarray(tx, dtype=np.float64), np.asarray(ty, dtype=np.float64)


def sample(part: Part, xs: np.ndarray, ys: np.ndarray) -> Tuple[Optional[np.ndarray], np.ndarray]:
    """Values of the ``part`` pixels containing the points ``(xs, ys)`` (in the part's CRS).

    Returns ``(values (C, k), which)``: ``which`` indexes the k points that fall inside
    the part; ``values`` is None when none does. Reads one window: the bounding box of
    the source pixels hit.
    """
    inv = ~part.transform
    with np.errstate(invalid="ignore"):
        colf = inv.a * xs + inv.b * ys + inv.c
        rowf = inv.d * xs + inv.e * ys + inv.f
    finite = np.isfinite(colf) & np.isfinite(rowf)
    col = np.floor(np.where(finite, colf, -1)).astype(np.int64)
    row = np.floor(np.where(finite, rowf, -1)).astype(np.int64)
    inside = finite & (col >= 0) & (col < part.width) & (row >= 0) & (row < part.height)
    which = np.flatnonzero(inside)
    if which.size == 0:
        return None, which
    row, col = row[which], col[which]
    r0, r1, c0, c1 = int(row.min()), int(row.max()) + 1, int(col.min()), int(col.max()) + 1
    block = part.read(r0, r1, c0, c1)
    return block[:, row - r0, col - c0], which


def mosaic(parts: Sequence[Part], crs: str, transform: Affine, width: int, height: int, *,
           channels: int, dtype, fill, need: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """Sample ``parts`` onto the grid ``(crs, transform, width, height)``.

    Returns ``(array (C, H, W), filled (H, W) bool, names of the parts used)``; pixels no
    part has data for keep ``fill``. ``need`` (``(H, W)`` bool) limits the work to the
    pixels that matter (e.g. inside a hexagon); others stay ``fill``.
    """
    n = width * height
    out = np.full((channels, n), fill, dtype=dtype)
    done = np.zeros(n, dtype=bool)
    todo = np.ones(n, dtype=bool) if need is None else np.asarray(need, bool).ravel().copy()
    xs, ys = pixel_centres(transform, width, height)
    lonlat: Optional[Tuple[np.ndarray, np.ndarray]] = None
    used: List[str] = []
    passes = [True, False] if len(parts) > 1 and any(p.owns is not None for p in parts) else [False]
    for owners_only in passes:
        for part in parts:
            want = todo & ~done
            if owners_only:
                if part.owns is None:
                    continue
                if lonlat is None:
                    lonlat = reproject_points(crs, LONLAT, xs, ys)
                want &= part.owns(lonlat[0], lonlat[1])
            idx = np.flatnonzero(want)
            if idx.size == 0:
                continue
            px, py = reproject_points(crs, part.crs, xs[idx], ys[idx])
            values, which = sample(part, px, py)
            if values is None:
                continue
            ok = np.asarray(part.valid(values), bool)
            if not ok.any():
                continue
            target = idx[which[ok]]
            out[:, target] = values[:, ok]
            done[target] = True
            if part.name not in used:
                used.append(part.name)
        if done[todo].all():
            break
    return out.reshape(channels, height, width), done.reshape(height, width), used


class BlockReader:
    """Windows of an open rasterio dataset, assembled from whole internal blocks kept in memory.

    A COG is stored in tiles (e.g. 256 x 256 pixels, all bands); every read call costs a
    fixed overhead per band on top of decompressing the tiles it touches. Requests of a
    batch are mostly neighbours, so reading each tile once (all bands) and cutting windows
    out of the tiles in memory is much cheaper than one read per request. At most
    ``max_bytes`` of blocks are kept (least recently used dropped first). Files whose blocks
    (tiles or strips) exceed 32 MiB are read window by window.
    """

    def __init__(self, ds, max_bytes: int = 256 * 2**20):
        self.ds = ds
        self.bh, self.bw = ds.block_shapes[0]
        itemsize = np.dtype(ds.dtypes[0]).itemsize
        block_bytes = self.bh * self.bw * ds.count * itemsize
        self.tiled = block_bytes <= 32 * 2**20  # tiles, or strips of rows
        self.max_blocks = max(4, max_bytes // max(block_bytes, 1))
        self.blocks: "OrderedDict[Tuple[int, int], np.ndarray]" = OrderedDict()
        self.reads = 0

    def _window(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        from rasterio.windows import Window

        self.reads += 1
        return self.ds.read(window=Window(c0, r0, c1 - c0, r1 - r0))

    def _block(self, bi: int, bj: int) -> np.ndarray:
        key = (bi, bj)
        block = self.blocks.get(key)
        if block is None:
            r0, c0 = bi * self.bh, bj * self.bw
            block = self._window(r0, min(r0 + self.bh, self.ds.height), c0, min(c0 + self.bw, self.ds.width))
            self.blocks[key] = block
            while len(self.blocks) > self.max_blocks:
                self.blocks.popitem(last=False)
        else:
            self.blocks.move_to_end(key)
        return block

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        if not self.tiled:
            return self._window(r0, r1, c0, c1)
        out = np.empty((self.ds.count, r1 - r0, c1 - c0), dtype=self.ds.dtypes[0])
        for bi in range(r0 // self.bh, (r1 - 1) // self.bh + 1):
            for bj in range(c0 // self.bw, (c1 - 1) // self.bw + 1):
                block = self._block(bi, bj)
                br, bc = bi * self.bh, bj * self.bw
                rr0, rr1 = max(r0, br), min(r1, br + block.shape[1])
                cc0, cc1 = max(c0, bc), min(c1, bc + block.shape[2])
                out[:, rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0] = block[:, rr0 - br:rr1 - br, cc0 - bc:cc1 - bc]
        return out


def raster_part(ds, name: str, valid: Callable[[np.ndarray], np.ndarray],
                owns: Optional[Callable[[np.ndarray, np.ndarray], np.ndarray]] = None, *,
                crs: Optional[str] = None, reader: Optional[BlockReader] = None) -> Part:
    """A :class:`Part` reading windows (all bands) of an open rasterio dataset, through
    ``reader`` (a :class:`BlockReader` shared by the batch) when given."""
    from rasterio.windows import Window

    if reader is not None:
        read = reader.read
    else:
        def read(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
            return ds.read(window=Window(c0, r0, c1 - c0, r1 - r0))

    return Part(name=name, crs=crs or ds.crs.to_string(), transform=ds.transform, width=ds.width,
                height=ds.height, read=read, valid=valid, owns=owns)


def array_part(array_hwc, name: str, crs: str, transform: Affine,
               convert: Callable[[np.ndarray, int, int, int, int], np.ndarray],
               valid: Callable[[np.ndarray], np.ndarray],
               owns: Optional[Callable[[np.ndarray, np.ndarray], np.ndarray]] = None) -> Part:
    """A :class:`Part` over an ``(H, W, C)`` array (memory-mapped .npy or in memory):
    ``convert(window, r0, r1, c0, c1)`` turns the ``(h, w, C)`` window into ``(C, h, w)`` values."""
    h, w = array_hwc.shape[:2]

    def read(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        return convert(np.asarray(array_hwc[r0:r1, c0:c1]), r0, r1, c0, c1)

    return Part(name=name, crs=crs, transform=transform, width=int(w), height=int(h), read=read,
                valid=valid, owns=owns)


def bounds_of(transform: Affine, width: int, height: int) -> Tuple[float, float, float, float]:
    """``(minx, miny, maxx, maxy)`` of a raster whatever the sign of its resolution."""
    xs = [transform.c, transform.c + transform.a * width]
    ys = [transform.f, transform.f + transform.e * height]
    return min(xs), min(ys), max(xs), max(ys)


def overlaps(a: Tuple[float, float, float, float], b: Tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


__all__ = [
    "BlockReader",
    "Part",
    "array_part",
    "bounds_of",
    "mosaic",
    "overlaps",
    "pixel_centres",
    "raster_part",
    "reproject_points",
    "sample",
]
