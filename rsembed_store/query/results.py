"""What a search returns: :class:`SearchResult` and its Arrow schema.

The same object comes back from the Lance path (:mod:`rsembed_store.query.search`)
and the serving tier (:mod:`rsembed_store.query.serving`), so both are one face
to Python, the CLI and the HTTP service.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
import threading
from collections.abc import Sequence
from typing import Any, Callable, Dict, Iterator, List, Optional

import pyarrow as pa

# columns read for each result (never the vector or the grid)
RESULT_COLUMNS = ["key", "lon", "lat", "h3", "cell", "start_date", "end_date", "year", "request"]


RESULT_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("distance", pa.float64(), nullable=False),
        pa.field("lon", pa.float64()),
        pa.field("lat", pa.float64()),
        pa.field("h3", pa.string()),
        pa.field("cell", pa.string()),
        pa.field("start_date", pa.date32()),
        pa.field("end_date", pa.date32()),
        pa.field("year", pa.int32()),
        pa.field("request", pa.string()),  # the canonical request JSON (rows carry it parsed)
    ]
)


class LazyRows(Sequence):
    """A result's rows, made on first read.

    A batch search (:meth:`Store.search_many`) answers thousands of queries at once, and building each
    hit's row dict (decompressing and parsing its stored request) cost more than the graph search itself;
    label propagation or clustering reads only keys and distances. So a batch result holds its keys and
    distances at once and makes the row dicts, all of them, when anything else is first read. Compares
    equal to the list of those dicts.
    """

    def __init__(self, keys: List[str], distances: List[float], make: Callable[[], tuple]):
        self.keys, self.distances = keys, distances
        self._make = make
        self._rows: Optional[List[dict]] = None
        self._canonical: Optional[List[str]] = None
        self._lock = threading.Lock()

    def _built(self) -> List[dict]:
        if self._rows is None:
            with self._lock:  # safe to read from several threads: made once
                if self._rows is None:
                    rows, canonical = self._make()
                    self._canonical, self._rows = canonical, rows
                    self._make = None
        return self._rows

    def canonical(self) -> List[str]:
        self._built()
        return self._canonical

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i):
        return self._built()[i]

    def __iter__(self) -> Iterator[dict]:
        return iter(self._built())

    def __eq__(self, other) -> bool:
        return list(self) == list(other) if isinstance(other, (list, LazyRows)) else NotImplemented

    def __repr__(self) -> str:
        return repr(self._built())


@dataclass
class SearchResult:
    """The ``k`` nearest rows, nearest first (ties broken by key).

    ``rows`` are dicts with ``key, distance, lon, lat, h3`` (hex), ``cell``
    (hex or None), ``start_date, end_date`` (dates or None), ``year`` and
    ``request`` (the parsed canonical request). ``plan`` says how the search
    ran: the filter, whether an index was used and with which settings.
    Distances are Lance's: cosine ``1 - cos``, l2 the squared euclidean
    distance, dot ``1 - a.b``.
    """

    rows: List[dict]
    space: str
    model: str
    metric: str
    k: int
    filter: Optional[str] = None
    plan: Dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    canonical: List[str] = field(default_factory=list, repr=False)  # each row's request JSON as stored

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    @property
    def keys(self) -> List[str]:
        if isinstance(self.rows, LazyRows):
            return list(self.rows.keys)
        return [r["key"] for r in self.rows]

    @property
    def distances(self) -> List[float]:
        if isinstance(self.rows, LazyRows):
            return list(self.rows.distances)
        return [r["distance"] for r in self.rows]

    def to_dicts(self) -> List[dict]:
        """The rows as JSON-ready dicts (dates as ISO strings)."""
        out = []
        for r in self.rows:
            d = dict(r)
            for name in ("start_date", "end_date"):
                if isinstance(d.get(name), date):
                    d[name] = d[name].isoformat()
            out.append(d)
        return out

    def to_arrow(self) -> pa.Table:
        """The rows as an Arrow table (``request`` as its canonical JSON string)."""
        cols: Dict[str, list] = {f.name: [] for f in RESULT_SCHEMA}
        canonical = self.rows.canonical() if isinstance(self.rows, LazyRows) else self.canonical
        for i, r in enumerate(self.rows):
            for name in cols:
                value = r.get(name)
                if name == "request":
                    value = canonical[i] if i < len(canonical) else \
                        json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                cols[name].append(value)
        return pa.table(cols, schema=RESULT_SCHEMA)

    def to_dict(self) -> dict:
        """Everything, JSON-ready: the space, metric, k, filter, plan and rows."""
        return {
            "space": self.space,
            "model": self.model,
            "metric": self.metric,
            "k": self.k,
            "filter": self.filter,
            "plan": self.plan,
            "seconds": round(self.seconds, 6),
            "results": self.to_dicts(),
        }


__all__ = ["LazyRows", "RESULT_COLUMNS", "RESULT_SCHEMA", "SearchResult"]
