"""Search filters evaluated on a tier's columns in memory, with the Lance path's exact semantics.

The in-memory path evaluates what it can answer exactly and cheaply: a time
window (rows whose ``[start_date, end_date)`` overlaps it), a box or point
buffer (ROI centre inside, edges included) and H3 cells (the row's ``h3`` cell
descends from one of them). A GeoJSON polygon or a ``where`` clause is left to
the Lance path, which evaluates them exactly (:func:`plan` returns ``None``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from ...specs import BBox
from ...h3int import cell_ranges
from ..search import temporal_window
from ..within import within_area
from .rows import Rows, days



@dataclass(frozen=True)
class Filters:
    window: Optional[Tuple[int, int]] = None          # [start, end) in days since 1970-01-01
    box: Optional[Tuple[float, float, float, float]] = None  # minlon, minlat, maxlon, maxlat
    ranges: Optional[List[Tuple[int, int]]] = None    # inclusive h3 ranges at the space's resolution

    def __bool__(self) -> bool:
        return self.window is not None or self.box is not None or self.ranges is not None

    def mask(self, rows: Rows) -> Optional[np.ndarray]:
        """Which of ``rows`` pass (None: all of them)."""
        if not self:
            return None
        m = np.ones(rows.n, dtype=bool)
        if self.box is not None:
            w, s, e, n = self.box
            lon, lat = rows.lon, rows.lat
            m &= (lon >= w) & (lon <= e) & (lat >= s) & (lat <= n)
        if self.window is not None:
            lo, hi = self.window
            m &= (rows.start < hi) & (rows.end > lo)
        if self.ranges is not None:
            m &= _in_ranges(rows.h3, self.ranges)
        return m


    def select(self, rows: Rows, by_lon: Optional[Dict[str, np.ndarray]] = None) -> np.ndarray:
        """Positions of the rows that pass (in no particular order).

        With a box and ``by_lon`` (the filter columns ordered by longitude, and that order), the rows
        inside the box's longitudes are one contiguous slice found by two binary searches, and only it
        is tested further: a box keeping 0.1 % of 1M rows costs tens of microseconds instead of five
        comparisons over every row.
        """
        if self.box is None or by_lon is None:
            return np.flatnonzero(self.mask(rows))
        w, s, e, n = self.box
        i0 = int(np.searchsorted(by_lon["lon"], w, side="left"))
        i1 = max(i0, int(np.searchsorted(by_lon["lon"], e, side="right")))
        lat = by_lon["lat"][i0:i1]
        keep = (lat >= s) & (lat <= n)
        if self.window is not None:
            lo, hi = self.window
            keep &= (by_lon["start"][i0:i1] < hi) & (by_lon["end"][i0:i1] > lo)
        if self.ranges is not None:
            keep &= _in_ranges(by_lon["h3"][i0:i1], self.ranges)
        return by_lon["order"][i0:i1][keep]


def _in_ranges(values: np.ndarray, ranges: List[Tuple[int, int]]) -> np.ndarray:
    """``values`` inside any of the sorted, disjoint inclusive ``ranges``."""
    starts = np.fromiter((lo for lo, _ in ranges), dtype=np.int64, count=len(ranges))
    ends = np.fromiter((hi for _, hi in ranges), dtype=np.int64, count=len(ranges))
    i = np.searchsorted(starts, values, side="right") - 1
    ok = i >= 0
    i = np.clip(i, 0, None)
    return ok & (values <= ends[i])


def plan(temporal, within, where, h3_res: int) -> Optional[Filters]:
    """The in-memory form of a search's filters, or None where only the Lance path is exact."""
    if where is not None:
        return None
    window = box = ranges = None
    if temporal is not None:
        start, end = temporal_window(temporal)
        window = (days(start), days(end))
    if within is not None:
        area = within_area(within)
        if isinstance(area, BBox):
            box = (area.minlon, area.minlat, area.maxlon, area.maxlat)
        elif isinstance(area, list):
            ranges = cell_ranges(area, h3_res)
        else:
            return None  # a GeoJSON polygon: exact point-in-polygon is the Lance path's
    return Filters(window=window, box=box, ranges=ranges)
