"""Deterministic benchmark vectors with the structure real embedding spaces have.

Uniform random vectors make every index look good or bad for the wrong
reasons: real embeddings of places form clusters of very different sizes and
spreads (a lot of farmland, a little glacier), nested under broader themes,
and places that look alike tend to lie near each other. :class:`VectorData`
draws such a set from a seed:

- 20 themes on the unit sphere; 300 cluster centres scattered around them;
  cluster weights from a Pareto law (sizes spread over two orders of
  magnitude) and a spread per cluster;
- each place belongs to one cluster and lies near one of that cluster's three
  spatial homes in a 10 x 10 degree region of central Europe;
- each place is stored once per year 2021-2023 with a small year-to-year
  change, so time filters are meaningful;
- held-out query places come from the same distribution and are never stored.

:class:`RowWriter` turns the rows into Arrow batches in the store's own layout,
with the canonical request JSON and the SHA-256 key that ``resolve()`` gives for
``Request(model, PointBuffer(lon, lat, 160), TemporalSpec.year(y))``, so that
``store.get`` and ``store.lookup`` find these rows exactly as they would find
computed ones (checked on the first row of every batch).
"""

from __future__ import annotations

import hashlib
import math
from datetime import date, datetime, timezone
from typing import Tuple

import h3
import numpy as np
import pyarrow as pa

from rsembed_store import PointBuffer, Request, TemporalSpec, resolve
from rsembed_store.model import Model, ModelInfo
from rsembed_store.registry import register_model
from rsembed_store.space import row_schema
from rsembed_store.specs import SensorSpec, metres_to_degrees

YEARS = (2021, 2022, 2023)
REGION = (5.0, 44.0, 15.0, 54.0)  # minlon, minlat, maxlon, maxlat
N_CLUSTERS = 300
N_THEMES = 20
BUFFER_M = 160.0
YEAR_JITTER = 0.1  # norm of a place's year-to-year change (before renormalising)
REVISION = "bench-v1"
BLOCK = 100_000  # rows per generated block and per written batch


def model_id(dim: int) -> str:
    """Register the benchmark model of dimension ``dim`` (never computed: its rows are written directly)."""
    name = f"bench{dim}"

    class BenchModel(Model):
        info = ModelInfo(
            id=name,
            revision=REVISION,
            kind="on_the_fly",
            dim=dim,
            metric="cosine",
            default_sensor=SensorSpec("s2-l2a", ("B04", "B08")),
            input_size=32,
            description="benchmark model: seeded clustered vectors, written directly, never computed",
        )

    register_model(name, BenchModel)
    return name


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class VectorData:
    """``rows`` stored vectors (place x year) and ``n_queries`` held-out query vectors, from ``seed``."""

    def __init__(self, rows: int, dim: int, n_queries: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.dim, self.n_rows, self.seed = dim, rows, seed
        self.n_places = math.ceil(rows / len(YEARS))
        themes = unit(rng.standard_normal((N_THEMES, dim)))
        centres = unit(themes[rng.integers(N_THEMES, size=N_CLUSTERS)]
                       + 0.8 * rng.standard_normal((N_CLUSTERS, dim)) / math.sqrt(dim))
        weights = rng.pareto(1.0, N_CLUSTERS) + 0.2
        weights /= weights.sum()
        spread = rng.uniform(0.25, 0.7, N_CLUSTERS)
        total = self.n_places + n_queries
        labels = rng.choice(N_CLUSTERS, size=total, p=weights)
        base = centres[labels] + spread[labels, None] * rng.standard_normal((total, dim)) / math.sqrt(dim)
        lon, lat = self._places(rng, labels)
        self.lon, self.lat = lon[: self.n_places], lat[: self.n_places]
        self.q_lon, self.q_lat = lon[self.n_places:], lat[self.n_places:]
        self.base = base[: self.n_places].astype(np.float32)
        self.clusters_used = int(len(np.unique(labels)))
        qrng = np.random.default_rng([seed, 7])
        q = base[self.n_places:] + YEAR_JITTER * qrng.standard_normal((n_queries, dim)) / math.sqrt(dim)
        self.queries = unit(q).astype(np.float32)
        self.q_year = np.asarray(YEARS)[qrng.integers(len(YEARS), size=n_queries)]

    @staticmethod
    def _places(rng: np.random.Generator, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Lon/lat per place: near one of its cluster's three homes, inside REGION, rounded to 1e-6 deg."""
        w, s, e, n = REGION
        homes = np.stack([rng.uniform(w, e, (N_CLUSTERS, 3)), rng.uniform(s, n, (N_CLUSTERS, 3))], axis=-1)
        sigma = rng.uniform(0.1, 1.0, N_CLUSTERS)
        which = rng.integers(3, size=len(labels))
        ll = homes[labels, which] + sigma[labels, None] * rng.standard_normal((len(labels), 2))
        out = (ll[:, 0] <= w) | (ll[:, 0] >= e) | (ll[:, 1] <= s) | (ll[:, 1] >= n)
        ll[out] = np.stack([rng.uniform(w, e, out.sum()), rng.uniform(s, n, out.sum())], axis=-1)
        ll = np.round(ll, 6)
        return ll[:, 0], ll[:, 1]

    def matrix(self) -> np.ndarray:
        """Every stored vector, row ``i`` = place ``i // 3`` in year ``YEARS[i % 3]`` (float32, unit norm)."""
        X = np.empty((self.n_rows, self.dim), dtype=np.float32)
        for b, start in enumerate(range(0, self.n_rows, BLOCK)):
            ids = np.arange(start, min(self.n_rows, start + BLOCK))
            rng = np.random.default_rng([self.seed, 1, b])
            v = self.base[ids // len(YEARS)] + YEAR_JITTER * rng.standard_normal((len(ids), self.dim)) / math.sqrt(
                self.dim)
            X[ids] = unit(v)
        return X

    def row_meta(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lon, lat, year) of every stored row."""
        ids = np.arange(self.n_rows)
        place = ids // len(YEARS)
        return self.lon[place], self.lat[place], np.asarray(YEARS)[ids % len(YEARS)]

    def request(self, row: int, model: str) -> Request:
        """The request stored row ``row`` answers."""
        place = row // len(YEARS)
        return Request(model, PointBuffer(float(self.lon[place]), float(self.lat[place]), BUFFER_M),
                       TemporalSpec.year(int(YEARS[row % len(YEARS)])))

    def missing_request(self, row: int, model: str) -> Request:
        """A real request that is never stored: the place of row ``row`` in a year before YEARS."""
        place = row // len(YEARS)
        return Request(model, PointBuffer(float(self.lon[place]), float(self.lat[place]), BUFFER_M),
                       TemporalSpec.year(YEARS[0] - 1 - row % 5))


class RowWriter:
    """Arrow batches in the store's row layout, with the canonical request JSON and key of each row."""

    def __init__(self, model: str, dim: int, h3_res: int):
        self.dim, self.h3_res = dim, h3_res
        probe_lon, probe_lat = 11.1234567, 46.7654321
        r = resolve(Request(model, PointBuffer(probe_lon, probe_lat, BUFFER_M), TemporalSpec.year(2021)))
        text = r.canonical.replace("{", "{{").replace("}", "}}")
        for old, new in ((f'"lon":{probe_lon!r}', '"lon":{lon}'), (f'"lat":{probe_lat!r}', '"lat":{lat}'),
                         ('"end":"2022-01-01"', '"end":"{end}"'), ('"start":"2021-01-01"', '"start":"{start}"')):
            if old not in text:
                raise RuntimeError(f"the canonical request layout changed ({old!r} not in {text!r}); "
                                   "update RowWriter to the new key recipe")
            text = text.replace(old, new)
        self.template = text
        self.model, self.revision, self.provider, self.space = r.model, r.revision, r.provider, r.space

    def table(self, data: VectorData, X: np.ndarray, start: int, stop: int) -> pa.Table:
        n = stop - start
        ids = np.arange(start, stop)
        place = ids // len(YEARS)
        years = np.asarray(YEARS)[ids % len(YEARS)]
        lon, lat = data.lon[place], data.lat[place]
        requests, keys, cells = [], [], []
        for i in range(n):
            y = int(years[i])
            text = self.template.format(lon=repr(float(lon[i])), lat=repr(float(lat[i])),
                                        start=f"{y}-01-01", end=f"{y + 1}-01-01")
            requests.append(text)
            keys.append(hashlib.sha256(text.encode("utf-8")).hexdigest())
            cells.append(h3.str_to_int(h3.latlng_to_cell(float(lat[i]), float(lon[i]), self.h3_res)))
        first = resolve(data.request(start, self.model))
        if first.key != keys[0]:
            raise RuntimeError(f"row {start}: written key {keys[0]} is not resolve()'s {first.key}")
        dlon = np.array([metres_to_degrees(float(la), BUFFER_M, BUFFER_M)[0] for la in lat])
        dlat = metres_to_degrees(0.0, BUFFER_M, BUFFER_M)[1]
        now = datetime.now(timezone.utc)
        none = [None] * n
        cols = {
            "key": keys, "request": requests, "model": [self.model] * n, "revision": [self.revision] * n,
            "output": ["pooled"] * n, "pooling": ["mean"] * n, "provider": [self.provider] * n,
            "spatial_type": ["PointBuffer"] * n, "lon": lon, "lat": lat, "minlon": lon - dlon,
            "minlat": lat - dlat, "maxlon": lon + dlon, "maxlat": lat + dlat, "h3": cells, "cell": none,
            "cell_res": none, "start_date": [date(int(y), 1, 1) for y in years],
            "end_date": [date(int(y) + 1, 1, 1) for y in years], "year": years.astype(np.int32), "grid": none,
            "grid_shape": none, "grid_dtype": none, "grid_codec": none, "meta": ["{}"] * n,
            "created_at": [now] * n, "compute_s": np.zeros(n),
        }
        arrays = []
        for f in row_schema(self.dim):
            if f.name == "vector":
                flat = pa.array(np.ascontiguousarray(X[start:stop]).ravel(), pa.float32())
                arrays.append(pa.FixedSizeListArray.from_arrays(flat, self.dim))
            else:
                arrays.append(pa.array(cols[f.name], type=f.type))
        return pa.Table.from_arrays(arrays, schema=row_schema(self.dim))
