"""Cache-first retrieval: answer from the store, compute only on a miss.

:class:`Getter` resolves and keys a request, reads the stored answer on a hit,
and on a miss computes it through the ingest engine, stores it and returns it.
Inside one process, concurrent callers asking for the same key share a single
computation (single flight); across processes the store's upsert keeps one row.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Dict, List, Mapping, Optional, Sequence, Union

from ..embedding import Embedding
from ..errors import ComputeError, UnknownSpaceError
from ..keys import Request, ResolvedRequest, resolve

Lookupable = Union[str, Request, ResolvedRequest, Mapping]


def as_resolved(item) -> ResolvedRequest:
    if isinstance(item, ResolvedRequest):
        return item
    return resolve(item)


class Getter:
    """Cache-first ``get`` and batch ``lookup`` over one store."""

    def __init__(self, store, config: Optional[Mapping] = None):
        self.store = store
        self.config = dict(config or {})
        self._lock = threading.Lock()
        self._inflight: Dict[str, Future] = {}

    def lookup(self, items: Sequence[Lookupable]) -> List[Optional[Embedding]]:
        """Stored answers for keys or requests, in order, ``None`` for misses; never computes.

        Requests are grouped by space, so each space is read with one query.
        """
        items = list(items)
        by_space: Dict[Optional[str], List[str]] = {}
        keys: List[str] = []
        for item in items:
            if isinstance(item, str):
                key, space = item, None
            else:
                r = as_resolved(item)
                key, space = r.key, r.space
            keys.append(key)
            by_space.setdefault(space, []).append(key)
        found: Dict[str, Embedding] = {}
        for space, group in by_space.items():
            try:
                hits = self.store.lookup_many(group, space=space)
            except UnknownSpaceError:
                continue  # nothing of this model is stored yet: all misses
            found.update({e.key: e for e in hits if e is not None})
        return [found.get(k) for k in keys]

    def get(self, request: Union[Request, ResolvedRequest, Mapping], *, compute: bool = True,
            config: Optional[Mapping] = None) -> Optional[Embedding]:
        """The answer to ``request``: stored if held, else computed, stored and returned.

        ``compute=False`` returns ``None`` on a miss. A failed computation raises
        the error that caused it (e.g. NoImageryError) and stores nothing.
        """
        r = as_resolved(request)
        hit = self.lookup([r])[0]
        if hit is not None or not compute:
            return hit
        with self._lock:
            future = self._inflight.get(r.key)
            owner = future is None
            if owner:
                future = Future()
                self._inflight[r.key] = future
        if not owner:
            return future.result()
        try:
            emb = self._compute(r, config)
            future.set_result(emb)
            return emb
        except BaseException as exc:
            future.set_exception(exc)
            raise
        finally:
            with self._lock:
                self._inflight.pop(r.key, None)

    def _compute(self, r: ResolvedRequest, config: Optional[Mapping]) -> Embedding:
        from ..ingest.engine import Engine, IngestSummary

        # another process may have stored it since our look-up
        again = self.lookup([r])[0]
        if again is not None:
            return again
        engine = Engine(self.store, {**self.config, **(config or {})}, fetch_workers=1)
        summary = IngestSummary(requested=1)
        computed = engine.compute([r], summary)
        if not computed:
            failure = summary.failures[0]
            if failure.exception is not None:
                raise failure.exception
            raise ComputeError(f"request {r.key[:12]}… failed: {failure.reason}")
        emb = computed[0]
        self.store.put_many([emb])
        emb.cached = False
        return emb
