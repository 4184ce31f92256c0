"""Small seeded inputs in the layouts the importer reads."""

import h3
import numpy as np
import pyarrow as pa


def vectors(v: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(v.ravel(), pa.float32()), v.shape[1])


def mixed_table(n: int = 900, dim: int = 8, seed: int = 0) -> pa.Table:
    """Point buffers, boxes and H3 cells side by side (our own export's columns), one window per year."""
    rng = np.random.default_rng(seed)
    lon, lat = rng.uniform(-20, 20, n), rng.uniform(-60, 60, n)
    kind = np.array(["PointBuffer", "BBox", "H3Cell"])[np.arange(n) % 3]
    cells = [h3.latlng_to_cell(a, o, int(r)) for a, o, r in zip(lat, lon, rng.integers(3, 13, n))]
    return pa.table({"spatial_type": kind, "lon": lon, "lat": lat, "buffer_m": rng.uniform(10, 5000, n),
                     "minlon": lon, "minlat": lat, "maxlon": lon + rng.uniform(1e-4, 0.2, n),
                     "maxlat": lat + rng.uniform(1e-4, 0.2, n), "cell": cells,
                     "year": rng.integers(2017, 2025, n),
                     "embedding": vectors(rng.standard_normal((n, dim)).astype(np.float32))})
