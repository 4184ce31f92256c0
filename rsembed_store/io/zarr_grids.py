"""Many grid rows in one Zarr store: a group per grid, named by its key.

Layout (Zarr format 2, which xarray, GDAL and every zarr release read)::

    out.zarr/                      root attrs: space, model, rows, layout "rsembed-grids/1"
      <key>/                       group attrs: key, request, crs (as stored: "EPSG:32632" or WKT),
                                   transform (GDAL geotransform of the grid cells), dims
        embedding  (D, H, W) f32   north-up, NaN where empty; attrs _ARRAY_DIMENSIONS [band, y, x]
        x (W,), y (H,)  f64        the cell centres in the grid's CRS (xarray coordinates)

Each grid is one group because grids differ in size and CRS (a stacked array would
need one common grid). A group is written under a temporary name inside the store
and renamed when complete, so a reader never sees half a grid and a stopped export
resumes (groups already there are kept). Needs the ``zarr`` package (extra ``io``).
"""

from __future__ import annotations

import os
import shutil
from typing import Callable, Dict, Optional

import numpy as np

from .geotiff import georeferenced_grids

LAYOUT = "rsembed-grids/1"


def _zarr():
    try:
        import zarr
    except ImportError:
        from ..errors import MissingExtraError

        raise MissingExtraError("exporting to Zarr needs the zarr package: pip install 'rsembed-store[io]' "
                                "(or pip install zarr)") from None
    return zarr


def write_grid_zarr(store, space: str, path: str, *, filter: Optional[str] = None,
                    progress: Optional[Callable[[int], None]] = None) -> Dict[str, int]:
    """Write every grid row of ``space`` (that ``filter`` keeps) as a group of the Zarr store ``path``.

    Returns counts: ``written`` (new groups), ``kept`` (groups already complete), ``skipped``
    (grid rows without georeferencing metadata, never guessed)."""
    zarr = _zarr()
    if os.path.exists(path) and not os.path.isdir(path):
        from ..errors import SpecError

        raise SpecError(f"--out {path!r} is a file; a Zarr store is a directory (e.g. {path}.zarr)")
    root = zarr.open_group(path, mode="a", zarr_format=2)
    counts = {"written": 0, "kept": 0, "skipped": 0}
    info = store.space_info(space)
    for row, grid, crs, transform in georeferenced_grids(store, space, filter,
                                                         lambda k: os.path.isdir(os.path.join(path, k)), counts):
        key = row["key"]
        tmp = f".tmp-{key}-{os.getpid()}"
        try:
            g = root.create_group(tmp)
            d, h, w = grid.shape
            arr = g.create_array("embedding", shape=grid.shape, dtype="float32", fill_value=np.nan,
                                 chunks=(d, min(h, 256), min(w, 256)),
                                 attributes={"_ARRAY_DIMENSIONS": ["band", "y", "x"]})
            arr[...] = grid
            x = transform.c + transform.a * (np.arange(w) + 0.5)
            y = transform.f + transform.e * (np.arange(h) + 0.5)
            for name, values in (("x", x), ("y", y)):
                g.create_array(name, shape=values.shape, dtype="float64",
                               attributes={"_ARRAY_DIMENSIONS": [name]})[...] = values
            g.attrs.update({"key": key, "request": row["request"], "crs": crs,
                            "transform": list(transform.to_gdal()), "dims": ["band", "y", "x"]})
            os.replace(os.path.join(path, tmp), os.path.join(path, key))
        finally:
            if os.path.exists(os.path.join(path, tmp)):
                shutil.rmtree(os.path.join(path, tmp))
        counts["written"] += 1
        if progress:
            progress(1)
    total = sum(1 for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))
    root.attrs.update({"layout": LAYOUT, "space": space, "model": info.model, "grids": total})
    return counts
