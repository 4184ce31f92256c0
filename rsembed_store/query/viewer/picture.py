"""The embedding picture: every stored cell of a space and window coloured by PCA, rolled up when zoomed out.

The viewer shows a space as a map of H3 hexagons whose colour is the first
three principal components of their vectors mapped to red, green and blue, the
way geotessera's ``visualize`` shows embeddings. :class:`Picture` is that
colouring for one space, one Lance version and one time window:

- the three components are fitted on (a seeded sample of) the window's vectors
  and every row is projected once; the vectors are then dropped, because a
  projection is linear: the mean of the children's projections is the
  projection of their mean vector, so a coarser parent's colour (mean vector,
  then colour) is computed from three numbers per row, not ``dim``;
- each component is stretched between its 2nd and 98th percentile, so one
  outlier does not wash out the rest;
- :meth:`Picture.view` answers a viewport: the cells whose centre lies in a
  bounding box, at the finest resolution (at most the one asked for) whose
  cell count fits ``max_cells``, so a million stored cells are never sent whole.

:class:`Pictures` caches them per (space, version, window) and rebuilds one when
the space's latest Lance version moves on; it is safe to call from many threads.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date
from typing import Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa

from ...errors import SpecError

log = logging.getLogger(__name__)
FIT_SAMPLE = 50_000  # rows the components are fitted on (a seeded sample beyond this)
STRETCH = (2.0, 98.0)  # percentiles each component is stretched between
Window = Tuple[date, date]


def parent_cells(cells: np.ndarray, res: int) -> np.ndarray:
    """The H3 parents at ``res`` of int64 H3 cells that are all at least as fine as ``res``.

    An H3 index keeps its resolution in bits 52-55 and one 3-bit digit per
    resolution below it; a parent is the same index with the resolution field
    set to ``res`` and every finer digit set to 7 ("unused").
    """
    if not 0 <= res <= 15:
        raise SpecError(f"res={res!r} is not an H3 resolution; use 0..15")
    c = cells.astype(np.int64, copy=False)
    unused = np.int64((1 << (3 * (15 - res))) - 1)
    return (c & np.int64(~(0xF << 52))) | np.int64(res << 52) | unused


def parse_window(text: Optional[str]) -> Optional[Window]:
    """``"2021-01-01/2022-01-01"`` -> (start, end); None or "" -> None (the picture's default window)."""
    if not text:
        return None
    try:
        start, end = text.split("/")
        out = (date.fromisoformat(start), date.fromisoformat(end))
    except ValueError:
        raise SpecError(f"window={text!r} is not START/END as ISO dates, e.g. 2021-01-01/2022-01-01") from None
    if out[0] >= out[1]:
        raise SpecError(f"window={text!r} ends before it starts; a window is [start, end)")
    return out


def window_text(window: Window) -> str:
    return f"{window[0].isoformat()}/{window[1].isoformat()}"


def windows_of(store, space: str, version: Optional[int] = None) -> List[dict]:
    """The distinct time windows a space holds with their row counts, most rows first."""
    t = store.to_arrow(space, version=version, columns=["start_date", "end_date"])
    t = t.filter(pa.compute.and_(pa.compute.is_valid(t["start_date"]), pa.compute.is_valid(t["end_date"])))
    counts = t.group_by(["start_date", "end_date"]).aggregate([([], "count_all")]).to_pylist()
    out = [{"window": window_text((r["start_date"], r["end_date"])), "start": r["start_date"].isoformat(),
            "end": r["end_date"].isoformat(), "rows": r["count_all"]} for r in counts]
    return sorted(out, key=lambda w: (-w["rows"], w["start"]))


def _window_filter(window: Window) -> str:
    return (f"start_date = date '{window[0].isoformat()}' AND end_date = date '{window[1].isoformat()}'")


@dataclass
class Rollup:
    """One resolution's cells: ids, centres, mean projections and child counts."""

    cells: np.ndarray  # int64
    lon: np.ndarray
    lat: np.ndarray
    proj: np.ndarray  # (n, 3) float32 mean of the rows' projections
    count: np.ndarray  # uint32 rows under each cell


@dataclass
class Picture:
    """The PCA colouring of one space at one version and window (see the module docstring)."""

    space: str
    version: int
    window: Window
    h3_res: int
    rows: int
    components: np.ndarray  # (3, dim): the principal axes
    mean: np.ndarray  # (dim,)
    explained: np.ndarray  # (3,) share of variance of each component
    lo: np.ndarray  # (3,) stretch bounds of each component
    hi: np.ndarray
    bounds: Tuple[float, float, float, float]  # the cells' extent: minlon, minlat, maxlon, maxlat
    _levels: Dict[int, Rollup] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def build(cls, store, space: str, version: int, window: Window, h3_res: int) -> "Picture":
        """Read the window's rows of ``space`` at ``version``, fit the components and project every row."""
        t = store.to_arrow(space, version=version, columns=["h3", "cell_res", "lon", "lat", "minlat", "maxlat",
                                                            "vector"], filter=_window_filter(window))
        if t.num_rows == 0:
            raise SpecError(f"space {space!r} holds no rows in the window {window_text(window)}; "
                            f"see GET /viewer/spaces for its windows")
        vec = t.column("vector").combine_chunks()
        dim = vec.type.list_size
        X = vec.values.to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32, copy=False)
        rng = np.random.default_rng(0)
        fit = X if len(X) <= FIT_SAMPLE else X[np.sort(rng.choice(len(X), FIT_SAMPLE, replace=False))]
        mean = fit.mean(axis=0, dtype=np.float64).astype(np.float32)
        # principal axes from the SVD of the centred sample (three at most; fewer rows or dims pad with zeros)
        _, s, vt = np.linalg.svd(fit - mean, full_matrices=False)
        components = np.zeros((3, dim), dtype=np.float32)
        components[: min(3, len(vt))] = vt[:3]
        var = s ** 2
        explained = np.zeros(3)
        explained[: min(3, len(var))] = (var[:3] / var.sum()) if var.sum() > 0 else 0.0
        proj = (X - mean) @ components.T
        # a component's sign is arbitrary; fix it so the colours of a space do not flip between rebuilds
        flip = np.sign(components[np.arange(3), np.abs(components).argmax(axis=1)])
        flip[flip == 0] = 1
        components *= flip[:, None]
        proj *= flip[None, :]
        lo, hi = np.percentile(proj, STRETCH, axis=0)
        lon = t.column("lon").to_numpy()
        lat = t.column("lat").to_numpy()
        res = drawing_res(t, h3_res)
        pic = cls(space=space, version=version, window=window, h3_res=res, rows=len(X),
                  components=components, mean=mean, explained=explained, lo=lo.astype(np.float32),
                  hi=hi.astype(np.float32),
                  bounds=(float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())))
        cells = parent_cells(t.column("h3").to_numpy(), res)
        pic._levels[res] = _roll(cells, lon, lat, proj.astype(np.float32), np.ones(len(cells), np.uint32))
        return pic

    def rgb(self, proj: np.ndarray) -> np.ndarray:
        """(n, 3) uint8 colours of (n, 3) projections."""
        span = np.where(self.hi > self.lo, self.hi - self.lo, 1.0)
        return (np.clip((proj - self.lo) / span, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

    def colour_of(self, vectors: np.ndarray) -> np.ndarray:
        """(n, 3) uint8 colours of (n, dim) vectors of this space (the same mapping as the cells')."""
        return self.rgb((np.asarray(vectors, np.float32) - self.mean) @ self.components.T)

    def level(self, res: int) -> Rollup:
        """The picture rolled up to ``res`` (computed once per resolution, from the finest level)."""
        res = min(res, self.h3_res)
        with self._lock:
            got = self._levels.get(res)
            if got is None:
                base = self._levels[self.h3_res]
                got = _roll(parent_cells(base.cells, res), base.lon, base.lat, base.proj, base.count)
                self._levels[res] = got
            return got

    def view(self, bbox: Optional[Tuple[float, float, float, float]], res: int, max_cells: int) -> Tuple[int, pa.Table]:
        """(resolution used, Arrow table ``cell`` uint64, ``r, g, b`` uint8, ``n`` uint32) for a viewport.

        The finest resolution at most ``res`` whose cells with a centre inside ``bbox``
        number at most ``max_cells``; coarser and coarser parents until they do.
        """
        r = max(0, min(int(res), self.h3_res))
        while True:
            lv = self.level(r)
            keep = _inside(lv.lon, lv.lat, bbox)
            n = int(keep.sum()) if keep is not None else len(lv.cells)
            if n <= max_cells or r == 0:
                break
            r -= 1
        sel = (lambda a: a[keep]) if keep is not None else (lambda a: a)
        colours = self.rgb(sel(lv.proj))
        table = pa.table({
            "cell": pa.array(sel(lv.cells).view(np.uint64), pa.uint64()),
            "r": colours[:, 0], "g": colours[:, 1], "b": colours[:, 2],
            "n": pa.array(sel(lv.count), pa.uint32()),
        })
        return r, table

    def describe(self) -> dict:
        return {"space": self.space, "version": self.version, "window": window_text(self.window),
                "rows": self.rows, "h3_res": self.h3_res, "bounds": list(self.bounds),
                "explained": [round(float(x), 4) for x in self.explained]}


def drawing_res(t: pa.Table, store_res: int) -> int:
    """The H3 resolution the rows are drawn at: that of their cells when they are H3 cells (the most common
    one), else the resolution whose hexagon edge is nearest half the median ROI height (a point buffer's
    ``buffer_m``), never finer than the store's ``store_res`` (the resolution of the ``h3`` column)."""
    import h3

    res = t.column("cell_res").drop_null().to_numpy()
    if len(res):
        values, counts = np.unique(res, return_counts=True)
        return int(min(store_res, values[counts.argmax()]))
    half_m = float(np.median((t.column("maxlat").to_numpy() - t.column("minlat").to_numpy()))) * 111_320.0 / 2
    edges = np.array([h3.average_hexagon_edge_length(r, unit="m") for r in range(store_res + 1)])
    return int(np.abs(np.log(edges / max(half_m, 1e-3))).argmin())


def _inside(lon: np.ndarray, lat: np.ndarray, bbox) -> Optional[np.ndarray]:
    if bbox is None:
        return None
    w, s, e, n = bbox
    in_lat = (lat >= s) & (lat <= n)
    if w <= e:
        return in_lat & (lon >= w) & (lon <= e)
    return in_lat & ((lon >= w) | (lon <= e))  # a box across the antimeridian


def _roll(cells: np.ndarray, lon: np.ndarray, lat: np.ndarray, proj: np.ndarray, count: np.ndarray) -> Rollup:
    """Group rows by cell: the count-weighted means of centre and projection, and the summed counts."""
    uniq, inv = np.unique(cells, return_inverse=True)
    w = count.astype(np.float64)
    total = np.bincount(inv, weights=w, minlength=len(uniq))

    def mean(a):
        return np.bincount(inv, weights=a * w, minlength=len(uniq)) / total

    p = np.stack([mean(proj[:, i]) for i in range(3)], axis=1).astype(np.float32)
    return Rollup(cells=uniq.astype(np.int64), lon=mean(lon), lat=mean(lat), proj=p,
                  count=total.astype(np.uint32))


class Pictures:
    """A small cache of :class:`Picture` per (space, version, window), rebuilt when a space changes.

    Safe from many threads: a picture being built is built once, and the others
    asking for it wait for that build rather than start their own.
    """

    def __init__(self, store, keep: int = 4):
        self.store = store
        self.keep = keep
        self._cache: "OrderedDict[tuple, Picture]" = OrderedDict()
        self._lock = threading.Lock()
        self._building: Dict[tuple, threading.Lock] = {}

    def warm(self, space: str, window: Window) -> None:
        """Start building a picture on a daemon thread unless it is cached or being built (the page's
        first request names the space it will draw next, so the build overlaps the browser's start-up)."""
        try:
            key = (space, self.store.latest_version(space), window)
        except Exception:  # noqa: BLE001  a space that cannot be read is reported when it is asked for
            return
        with self._lock:
            if key in self._cache or key in self._building:
                return

        def build():
            try:
                self.get(space, window)
            except Exception as exc:  # noqa: BLE001  asked for again, the error reaches whoever asks
                log.debug("warming the picture of %s %s failed: %s", space, window_text(window), exc)

        threading.Thread(target=build, name=f"picture-{space}", daemon=True).start()

    def get(self, space: str, window: Optional[Window] = None) -> Picture:
        """The picture of ``space`` at its latest version, in ``window`` (default: its window with most rows)."""
        info = self.store.space_info(space)
        version = self.store.latest_version(space)
        if window is None:
            held = windows_of(self.store, space, version)
            if not held:
                raise SpecError(f"space {space!r} holds no rows with a time window to draw")
            window = (date.fromisoformat(held[0]["start"]), date.fromisoformat(held[0]["end"]))
        key = (space, version, window)
        with self._lock:
            pic = self._cache.get(key)
            if pic is not None:
                self._cache.move_to_end(key)
                return pic
            gate = self._building.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                pic = self._cache.get(key)
            if pic is not None:
                return pic
            try:
                pic = Picture.build(self.store, space, version, window, info.h3_res)
            except BaseException:
                with self._lock:
                    self._building.pop(key, None)
                raise
            with self._lock:  # cached before the gate goes, so no thread builds it twice
                self._building.pop(key, None)
                self._cache[key] = pic
                # older versions of the same space are stale: drop them, then the least recently used
                for old in [k for k in self._cache if k[0] == space and k[1] != version]:
                    del self._cache[old]
                while len(self._cache) > self.keep:
                    self._cache.popitem(last=False)
            return pic
