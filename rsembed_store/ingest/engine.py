"""The cache-first batch engine: look up, compute only the misses, write in batches.

For each batch of requests the engine asks the store which keys it already
holds (one query), fetches the pixels of the misses on a bounded thread pool,
runs the model on what arrived, and upserts the answers in one write. A request
that fails (no imagery, a bad pixel block, a model error) is recorded with its
reason and never stored; the rest go on. Interrupting loses at most the batch in
flight: everything written before stays, and running the same ingest again
computes only what is missing.

Executors decide where the work runs. :class:`LocalExecutor` (threads in this
process) is the default; :class:`~rsembed_store.ingest.ray_executor.RayExecutor`
implements the same ``run(engine, requests)`` method on a Ray cluster.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence

from ..embedding import Embedding
from ..errors import LimitError, RsEmbedStoreError
from ..keys import ResolvedRequest
from ..limits import Limits
from ..registry import model_class, provider_class


@dataclass
class Failure:
    key: str
    request: str
    reason: str
    error: str
    exception: Optional[BaseException] = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {"key": self.key, "request": self.request, "reason": self.reason, "error": self.error}


@dataclass
class IngestSummary:
    """What an ingest did: counts, time, and each failure with its reason."""

    requested: int = 0
    cached: int = 0
    computed: int = 0
    failed: int = 0
    seconds: float = 0.0
    compute_seconds: float = 0.0
    failures: List[Failure] = field(default_factory=list)
    calls: Dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.requested / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self, max_failures: int = 100) -> dict:
        return {
            "requested": self.requested,
            "cached": self.cached,
            "computed": self.computed,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "compute_seconds": round(self.compute_seconds, 3),
            "requests_per_second": round(self.rate, 1),
            "failures": [f.to_dict() for f in self.failures[:max_failures]],
            "failures_shown": min(len(self.failures), max_failures),
            "calls": dict(self.calls),
        }

    def add(self, other: "IngestSummary") -> None:
        """Fold in what another executor (e.g. one Ray partition) did; ``requested`` stays."""
        self.cached += other.cached
        self.computed += other.computed
        self.failed += other.failed
        self.compute_seconds += other.compute_seconds
        self.failures.extend(other.failures)
        for key, value in other.calls.items():
            self.calls[key] = self.calls.get(key, 0) + value

    def line(self) -> str:
        return (
            f"{self.requested} requests: {self.cached} cached, {self.computed} computed, "
            f"{self.failed} failed in {self.seconds:.2f} s ({self.rate:.0f}/s)"
        )


class Progress:
    """A tqdm bar on a terminal with cached/computed/failed counts; silent otherwise."""

    def __init__(self, total: int, enabled: Optional[bool] = None, desc: str = "ingest"):
        if enabled is None:
            enabled = sys.stderr.isatty()
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="req", file=sys.stderr, dynamic_ncols=True)

    def update(self, n: int, summary: IngestSummary) -> None:
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix(cached=summary.cached, computed=summary.computed, failed=summary.failed, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Engine:
    """Computes answers for resolved requests and keeps them in a store.

    ``config`` is per-run configuration that never enters a key, e.g.
    ``{"sources": {"s2-l2a": "/data/s2"}}`` for the local provider, or model
    settings such as checkpoint paths under ``{"models": {"name": {...}}}``.
    """

    def __init__(self, store, config: Optional[Mapping] = None, *, fetch_workers: int = 4,
                 batch_size: int = 256, write_batch: int = 2048):
        self.store = store
        self.config = dict(config or {})
        self.fetch_workers = max(1, int(fetch_workers))
        self.batch_size = max(1, int(batch_size))
        self.write_batch = max(1, int(write_batch))
        self.limits = Limits.from_config(self.config)  # a bad limit is refused before any work
        self._models: Dict[str, object] = {}
        self._providers: Dict[str, object] = {}

    # ------------------------------------------------------------ parts

    def model(self, name: str):
        if name not in self._models:
            cfg = self.config.get("models", {}).get(name, {})
            self._models[name] = model_class(name)({**self.config, **cfg})
        return self._models[name]

    def provider(self, name: str):
        if name not in self._providers:
            cfg = self.config.get("providers", {}).get(name, {})
            self._providers[name] = provider_class(name)({**self.config, **cfg})
        return self._providers[name]

    # ------------------------------------------------------------ compute

    def compute(self, requests: Sequence[ResolvedRequest], summary: IngestSummary,
                pool: Optional[ThreadPoolExecutor] = None) -> List[Embedding]:
        """Compute answers for ``requests`` (all misses); failures go to ``summary``.

        A request over a size limit (:mod:`rsembed_store.limits`) fails here, before
        anything is fetched, read or allocated for it."""
        requests = self._within_limits(requests, summary)
        if not requests:
            return []
        kind = model_class(requests[0].model).info.kind
        if kind == "precomputed":
            return self._read_precomputed(requests, summary, pool)
        return self._fetch_and_embed(requests, summary, pool)

    def _within_limits(self, requests: Sequence[ResolvedRequest], summary: IngestSummary) -> List[ResolvedRequest]:
        ok = []
        for r in requests:
            try:
                self.limits.check_request(r)
            except LimitError as exc:
                self._fail(summary, r, exc)
                continue
            ok.append(r)
        return ok

    def _fail(self, summary: IngestSummary, request: ResolvedRequest, exc: BaseException) -> None:
        summary.failed += 1
        reason = str(exc) if isinstance(exc, RsEmbedStoreError) else f"{type(exc).__name__}: {exc}"
        summary.failures.append(Failure(request.key, request.canonical, reason, type(exc).__name__, exc))

    def _map(self, fn, items, pool):
        if pool is None or len(items) == 1:
            return [fn(i) for i in items]
        return list(pool.map(fn, items))

    def _provider_or_none(self, name):
        try:
            return self.provider(name)
        except Exception:  # a provider that cannot be built fails each of its fetches, reported there
            return None

    def _fetch_and_embed(self, requests, summary, pool) -> List[Embedding]:
        def fetch(r: ResolvedRequest):
            t0 = time.perf_counter()
            try:
                pixels = self.provider(r.provider).fetch(r)
            except Exception as exc:  # recorded per request; the rest go on
                return r, None, exc, time.perf_counter() - t0
            return r, pixels, None, time.perf_counter() - t0

        used = [self._provider_or_none(name) for name in dict.fromkeys(r.provider for r in requests)]
        before = [_stats_of(p) for p in used]
        fetched = self._map(fetch, list(requests), pool)
        summary.calls["fetch"] = summary.calls.get("fetch", 0) + len(fetched)
        for p, was in zip(used, before):
            _merge_stats(summary, was, _stats_of(p))
        ok = []
        for r, pixels, exc, secs in fetched:
            if exc is not None:
                self._fail(summary, r, exc)
            else:
                ok.append((r, pixels, secs))
        if not ok:
            return []
        model = self.model(ok[0][0].model)
        t0 = time.perf_counter()
        results = model.embed_batch([(p, r) for r, p, _ in ok], return_exceptions=True)
        per_item = (time.perf_counter() - t0) / len(ok)
        pairs = [
            (item, None, res, 0.0) if isinstance(res, BaseException) else (item, res, None, per_item)
            for item, res in zip(ok, results)
        ]
        out = []
        for (r, pixels, fetch_s), emb, exc, embed_s in pairs:
            if exc is not None:
                self._fail(summary, r, exc)
                continue
            emb.meta = {**(pixels.meta or {}), **(emb.meta or {})}  # what was read, then what was computed
            emb.compute_s = float(fetch_s + embed_s)
            summary.compute_seconds += emb.compute_s
            out.append(emb)
        return out

    def _read_precomputed(self, requests, summary, pool) -> List[Embedding]:
        """Read answers from a product. Models with ``read_batch`` get the whole batch
        (so they can open each source file once); others are read one by one on the pool."""
        model = self.model(requests[0].model)
        before = _stats_of(model)
        t0 = time.perf_counter()
        if hasattr(model, "read_batch"):
            results = list(model.read_batch(list(requests), return_exceptions=True))
            per_item = (time.perf_counter() - t0) / len(requests)
            timed = [(r, res, per_item) for r, res in zip(requests, results)]
        else:
            def read(r: ResolvedRequest):
                t1 = time.perf_counter()
                try:
                    return r, model.read(r), time.perf_counter() - t1
                except Exception as exc:
                    return r, exc, 0.0

            timed = self._map(read, list(requests), pool)
        _merge_stats(summary, before, _stats_of(model))
        out = []
        for r, res, secs in timed:
            if isinstance(res, BaseException):
                self._fail(summary, r, res)
                continue
            res.compute_s = float(secs)
            summary.compute_seconds += res.compute_s
            out.append(res)
        return out

    # ------------------------------------------------------------ the loop

    def run(self, requests: Iterable[ResolvedRequest], *, progress: Optional[bool] = None,
            executor=None, on_batch: Optional[Callable[[IngestSummary], None]] = None) -> IngestSummary:
        """Ingest ``requests`` cache-first and return the summary."""
        requests = list(requests)
        executor = executor or LocalExecutor()
        return executor.run(self, requests, progress=progress, on_batch=on_batch)


class LocalExecutor:
    """Runs an ingest in this process: a thread pool fetches, the caller's thread computes and writes."""

    def run(self, engine: Engine, requests: List[ResolvedRequest], *, progress=None, on_batch=None) -> IngestSummary:
        summary = IngestSummary(requested=len(requests))
        t0 = time.perf_counter()
        bar = Progress(len(requests), progress)
        by_space = unique_by_space(requests)
        summary.cached += len(requests) - sum(len(v) for v in by_space.values())  # repeated keys
        pending: List[Embedding] = []
        try:
            with ThreadPoolExecutor(max_workers=engine.fetch_workers, thread_name_prefix="fetch") as pool:
                for space, items in by_space.items():
                    for start in range(0, len(items), max(engine.batch_size, 1)):
                        batch = items[start:start + engine.batch_size]
                        held = held_keys(engine.store, space, [r.key for r in batch])
                        misses = [r for r, h in zip(batch, held) if not h]
                        summary.cached += len(batch) - len(misses)
                        computed = engine.compute(misses, summary, pool)
                        summary.computed += len(computed)
                        pending.extend(computed)
                        if len(pending) >= engine.write_batch:
                            engine.store.put_many(pending)
                            pending = []
                        bar.update(len(batch), summary)
                        if on_batch is not None:
                            on_batch(summary)
                if pending:
                    engine.store.put_many(pending)
                    pending = []
        except BaseException:
            # Ctrl-C or a crash: keep what was already computed, then stop
            if pending:
                engine.store.put_many(pending)
            raise
        finally:
            bar.close()
            summary.seconds = time.perf_counter() - t0
        return summary


def _stats_of(obj) -> Dict[str, int]:
    """Cumulative counters of a provider or model that keeps them (``stats() -> {name: int}``)."""
    stats = getattr(obj, "stats", None)
    if not callable(stats):
        return {}
    try:
        return {str(k): int(v) for k, v in stats().items()}
    except Exception:
        return {}


def _merge_stats(summary: IngestSummary, before: Mapping[str, int], after: Mapping[str, int]) -> None:
    """Add what the counters grew by (e.g. ``gee.calls``, ``gee.retries``) to ``summary.calls``."""
    for key, value in after.items():
        delta = value - before.get(key, 0)
        if delta:
            summary.calls[key] = summary.calls.get(key, 0) + delta


def unique_by_space(requests: Iterable[ResolvedRequest]) -> Dict[str, List[ResolvedRequest]]:
    """One request per key (the first), grouped by space, in the order given."""
    by_space: Dict[str, List[ResolvedRequest]] = {}
    for r in {r.key: r for r in requests}.values():
        by_space.setdefault(r.space, []).append(r)
    return by_space


def held_keys(store, space: str, keys: List[str], batch_size: int = 50_000) -> List[bool]:
    """Which ``keys`` ``store`` holds in ``space`` (all False for a space it does not hold)."""
    from ..errors import UnknownSpaceError

    held: List[bool] = []
    try:
        for start in range(0, len(keys), batch_size):
            held.extend(store.contains_many(keys[start:start + batch_size], space=space))
    except UnknownSpaceError:
        return [False] * len(keys)
    return held


def ingest(store, requests: Iterable[ResolvedRequest], config: Optional[Mapping] = None, *,
           progress: Optional[bool] = None, fetch_workers: int = 4, batch_size: int = 256,
           write_batch: int = 2048, executor=None) -> IngestSummary:
    """Ingest resolved requests (e.g. ``plan(...).requests``) into ``store``, cache-first.

    ``executor`` decides where the work runs: ``None`` for this process
    (:class:`LocalExecutor`), or e.g. a ``RayExecutor``.
    """
    engine = Engine(store, config, fetch_workers=fetch_workers, batch_size=batch_size, write_batch=write_batch)
    return engine.run(requests, progress=progress, executor=executor)
