"""The cache-first batch engine: look up, compute only the misses, write in batches.

For each batch of requests the engine asks the store which keys it already
holds (one query), fetches the pixels of the misses on a bounded thread pool,
runs the model on what arrived, and upserts the answers. A request that fails
(no imagery, a bad pixel block, a model error) is recorded with its reason and
never stored; the rest go on.

What a crash can lose is bounded in time as well as in count: answers are
written once ``write_batch`` of them are held or once the oldest held one began
computing ``flush_seconds`` ago (default 10 s), whichever comes first. The
misses of a batch are computed in chunks sized from the measured cost per
request (about half of ``flush_seconds`` each), so a slow model's batch of 256
is not one long stretch of unwritten work. ``kill -9`` therefore loses about
``flush_seconds`` of work at most (plus a single request that alone takes
longer); Ctrl-C or an exception writes what is held before it propagates.
Each write is one atomic Lance commit, so the store never holds half a write,
and running the same ingest again computes only what is missing.

Executors decide where the work runs. :class:`LocalExecutor` (threads in this
process) is the default; :class:`~rsembed_store.ingest.ray_executor.RayExecutor`
implements the same ``run(engine, requests)`` method on a Ray cluster.
"""

from __future__ import annotations

import logging
import math
import threading
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ..embedding import Embedding
from ..errors import LimitError, RsEmbedStoreError, SpecError
from ..keys import ResolvedRequest
from ..limits import Limits
from ..registry import model_class, provider_class


log = logging.getLogger(__name__)

#: most computed answers held in memory before they are written
DEFAULT_WRITE_BATCH = 2048
#: most seconds of computed work held in memory before it is written (what ``kill -9`` may lose)
DEFAULT_FLUSH_SECONDS = 10.0
#: the settings a configuration's ``"ingest"`` section may hold
INGEST_SETTINGS = ("write_batch", "flush_seconds")


def check_write_batch(value, source: str = "write_batch") -> int:
    """``value`` as the most answers held before a write: a positive integer, or :class:`SpecError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"{source}={value!r} is not accepted; use a positive integer (default {DEFAULT_WRITE_BATCH})")
    return value


def check_flush_seconds(value, source: str = "flush_seconds") -> float:
    """``value`` as the most seconds of work held before a write: a number > 0 (``inf``: by count only)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or not value > 0:
        raise SpecError(f"{source}={value!r} is not accepted; use a number of seconds > 0 "
                        f"(default {DEFAULT_FLUSH_SECONDS:g}; inf writes by count only)")
    return float(value)


def write_settings(config: Optional[Mapping] = None, write_batch: Optional[int] = None,
                   flush_seconds: Optional[float] = None) -> Tuple[int, float]:
    """``(write_batch, flush_seconds)``: each from the argument when given, else from
    ``config["ingest"]``, else the default; every value is checked.

    >>> write_settings({"ingest": {"flush_seconds": 2}})
    (2048, 2.0)
    """
    section = (config or {}).get("ingest") or {}
    if not isinstance(section, Mapping):
        raise SpecError(f"config 'ingest'={section!r} is not accepted; use a mapping such as "
                        "{'flush_seconds': 10, 'write_batch': 2048}")
    unknown = sorted(set(section) - set(INGEST_SETTINGS))
    if unknown:
        raise SpecError(f"config 'ingest' has unknown setting(s) {unknown}; accepted: {list(INGEST_SETTINGS)}")
    if write_batch is None:
        write_batch = check_write_batch(section.get("write_batch", DEFAULT_WRITE_BATCH), "config ingest.write_batch")
    if flush_seconds is None:
        flush_seconds = check_flush_seconds(section.get("flush_seconds", DEFAULT_FLUSH_SECONDS),
                                            "config ingest.flush_seconds")
    return check_write_batch(write_batch), check_flush_seconds(flush_seconds)


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
    """A tqdm bar on a terminal with cached/computed/failed counts; silent otherwise.

    The bar moves as requests finish (:meth:`tick`, called from the fetch threads), and
    :meth:`update` sets the counts before it redraws, so what it shows is never a
    batch behind.
    """

    def __init__(self, total: int, enabled: Optional[bool] = None, desc: str = "ingest"):
        if enabled is None:
            enabled = sys.stderr.isatty()
        self.bar = None
        self.done = 0  # requests the bar has counted (ticks included)
        self._lock = threading.Lock()
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="req", file=sys.stderr, dynamic_ncols=True)

    def tick(self, n: int = 1) -> None:
        """``n`` more requests finished (safe from any thread)."""
        if self.bar is not None:
            with self._lock:
                self.done += n
                self.bar.update(n)

    def update(self, n: int, summary: IngestSummary, *, ticked: int = 0) -> None:
        """``n`` more requests are finished, ``ticked`` of them already counted by :meth:`tick`;
        the counts shown become ``summary``'s."""
        if self.bar is not None:
            with self._lock:
                self.bar.set_postfix(cached=summary.cached, computed=summary.computed, failed=summary.failed,
                                     refresh=False)
                more = max(0, n - ticked)
                self.done += more
                if more:
                    self.bar.update(more)  # redraws, with the counts just set
                else:
                    self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Engine:
    """Computes answers for resolved requests and keeps them in a store.

    ``config`` is per-run configuration that never enters a key, e.g.
    ``{"sources": {"s2-l2a": "/data/s2"}}`` for the local provider, model
    settings such as checkpoint paths under ``{"models": {"name": {...}}}``, or
    ``{"ingest": {"flush_seconds": 10, "write_batch": 2048}}``.

    ``write_batch`` and ``flush_seconds`` bound what is held in memory before
    a write (and so what a crash can lose): at most that many answers, and
    work that began at most that many seconds ago. Left out, they come from
    ``config["ingest"]``, else 2048 answers and 10 s.
    """

    def __init__(self, store, config: Optional[Mapping] = None, *, fetch_workers: int = 4,
                 batch_size: int = 256, write_batch: Optional[int] = None,
                 flush_seconds: Optional[float] = None):
        self.store = store
        self.config = dict(config or {})
        self.fetch_workers = max(1, int(fetch_workers))
        self.batch_size = max(1, int(batch_size))
        self.write_batch, self.flush_seconds = write_settings(self.config, write_batch, flush_seconds)
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
                pool: Optional[ThreadPoolExecutor] = None,
                on_done: Optional[Callable[[int], None]] = None) -> List[Embedding]:
        """Compute answers for ``requests`` (all misses); failures go to ``summary``.

        A request over a size limit (:mod:`rsembed_store.limits`) fails here, before
        anything is fetched, read or allocated for it. ``on_done(1)`` is called (from
        the pool's threads) as each request's pixels or product read finish, for a
        progress bar."""
        requests = self._within_limits(requests, summary)
        if not requests:
            return []
        kind = model_class(requests[0].model).info.kind
        if kind == "precomputed":
            return self._read_precomputed(requests, summary, pool, on_done)
        return self._fetch_and_embed(requests, summary, pool, on_done)

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

    def _map(self, fn, items, pool, on_done=None):
        if on_done is not None:
            inner = fn

            def fn(item):
                try:
                    return inner(item)
                finally:
                    on_done(1)
        if pool is None or len(items) == 1:
            return [fn(i) for i in items]
        return list(pool.map(fn, items))

    def _provider_or_none(self, name):
        try:
            return self.provider(name)
        except Exception:  # a provider that cannot be built fails each of its fetches, reported there
            return None

    def _fetch_and_embed(self, requests, summary, pool, on_done=None) -> List[Embedding]:
        def fetch(r: ResolvedRequest):
            t0 = time.perf_counter()
            try:
                pixels = self.provider(r.provider).fetch(r)
            except Exception as exc:  # recorded per request; the rest go on
                return r, None, exc, time.perf_counter() - t0
            return r, pixels, None, time.perf_counter() - t0

        used = [self._provider_or_none(name) for name in dict.fromkeys(r.provider for r in requests)]
        before = [_stats_of(p) for p in used]
        fetched = self._map(fetch, list(requests), pool, on_done)
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

    def _read_precomputed(self, requests, summary, pool, on_done=None) -> List[Embedding]:
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

            timed = self._map(read, list(requests), pool, on_done)
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

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock

    def run(self, engine: Engine, requests: List[ResolvedRequest], *, progress=None, on_batch=None) -> IngestSummary:
        summary = IngestSummary(requested=len(requests))
        t0 = time.perf_counter()
        bar = Progress(len(requests), progress)
        by_space = unique_by_space(requests)
        summary.cached += len(requests) - sum(len(v) for v in by_space.values())  # repeated keys
        clock = self.clock
        held = _Held(engine, summary)
        pacer = _Pacer(engine.flush_seconds, smallest=engine.fetch_workers,
                       largest=min(engine.batch_size, engine.write_batch))
        try:
            with ThreadPoolExecutor(max_workers=engine.fetch_workers, thread_name_prefix="fetch") as pool:
                for space, items in by_space.items():
                    for start in range(0, len(items), engine.batch_size):
                        batch = items[start:start + engine.batch_size]
                        held_now = held_keys(engine.store, space, [r.key for r in batch])
                        misses = [r for r, h in zip(batch, held_now) if not h]
                        summary.cached += len(batch) - len(misses)
                        bar.update(len(batch) - len(misses), summary)
                        done = 0
                        while done < len(misses):
                            chunk = misses[done:done + pacer.size(len(misses) - done)]
                            done += len(chunk)
                            if held.due(clock(), ahead=pacer.estimate(len(chunk)), more=len(chunk)):
                                held.write()  # the chunk would end past a limit: write first
                            began = clock()
                            ticks_before = bar.done
                            computed = engine.compute(chunk, summary, pool, on_done=bar.tick)
                            pacer.observe(len(chunk), clock() - began)
                            summary.computed += len(computed)
                            held.add(computed, began)
                            if held.due(clock()):
                                held.write()
                            bar.update(len(chunk), summary, ticked=bar.done - ticks_before)
                            if on_batch is not None:
                                on_batch(summary)
                        if not misses and on_batch is not None:
                            on_batch(summary)
                held.write()
        except BaseException:
            # Ctrl-C or a crash: keep what was already computed, then stop
            held.write()
            raise
        finally:
            bar.close()
            summary.seconds = time.perf_counter() - t0
        return summary


class _Held:
    """Computed answers not yet written, and when the oldest of them began computing.

    This is exactly what ``kill -9`` would lose; :meth:`due` says when to write.
    """

    def __init__(self, engine: Engine, summary: IngestSummary):
        self.store = engine.store
        self.write_batch = engine.write_batch
        self.flush_seconds = engine.flush_seconds
        self.summary = summary
        self.items: List[Embedding] = []
        self.since: Optional[float] = None

    def add(self, answers: List[Embedding], began: float) -> None:
        if answers:
            if not self.items:
                self.since = began
            self.items.extend(answers)

    def due(self, now: float, ahead: float = 0.0, more: int = 0) -> bool:
        """Whether to write now: the held answers (plus ``more`` about to be computed)
        would pass the count, or the held work (plus ``ahead`` seconds of work about to
        start) reaches the time limit."""
        if not self.items:
            return False
        return (len(self.items) + max(more, 1) > self.write_batch
                or now - self.since + ahead >= self.flush_seconds)

    def write(self) -> None:
        if self.items:
            self.store.put_many(self.items)
            self.summary.calls["store.writes"] = self.summary.calls.get("store.writes", 0) + 1
        self.items = []
        self.since = None


class _Pacer:
    """Sizes the chunks a batch's misses are computed in: about half of ``flush_seconds``
    of work each, from the measured seconds per request; at least ``smallest`` (the
    fetch workers, kept busy) and at most ``largest`` (the look-up batch, and
    ``write_batch`` so that no more answers than that are ever held)."""

    def __init__(self, flush_seconds: float, *, smallest: int, largest: int):
        self.target = flush_seconds / 2
        self.smallest = max(1, smallest)
        self.largest = max(1, largest)
        self.per_request: Optional[float] = None  # a moving average

    def size(self, remaining: int) -> int:
        if math.isinf(self.target):
            n = self.largest  # writes by count only: no need to measure
        elif self.per_request is None:
            n = self.smallest  # nothing measured yet: a small first chunk
        elif self.per_request <= 0:
            n = self.largest
        else:
            n = int(self.target / self.per_request)
        return max(1, min(remaining, self.largest, max(self.smallest, n)))

    def estimate(self, n: int) -> float:
        return 0.0 if self.per_request is None else n * self.per_request

    def observe(self, n: int, seconds: float) -> None:
        if n <= 0:
            return
        per = max(0.0, seconds) / n
        self.per_request = per if self.per_request is None else 0.5 * self.per_request + 0.5 * per


def _stats_of(obj) -> Dict[str, int]:
    """Cumulative counters of a provider or model that keeps them (``stats() -> {name: int}``)."""
    stats = getattr(obj, "stats", None)
    if not callable(stats):
        return {}
    try:
        return {str(k): int(v) for k, v in stats().items()}
    except Exception as exc:  # counters are diagnostics: the ingest goes on, but the failure is said (once)
        name = type(obj).__name__
        if name not in _stats_warned:
            _stats_warned.add(name)
            log.warning("the call counters of %s are left out of ingest summaries: its stats() failed: %s: %s",
                        name, type(exc).__name__, exc)
        return {}


_stats_warned: set = set()  # classes whose failing stats() was already logged


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
           write_batch: Optional[int] = None, flush_seconds: Optional[float] = None, executor=None,
           on_batch: Optional[Callable[[IngestSummary], None]] = None) -> IngestSummary:
    """Ingest resolved requests (e.g. ``plan(...).requests``) into ``store``, cache-first.

    ``executor`` decides where the work runs: ``None`` for this process
    (:class:`LocalExecutor`), or e.g. a ``RayExecutor``. ``write_batch`` and
    ``flush_seconds`` bound the answers held in memory before a write (see
    :class:`Engine`). ``on_batch(summary)`` is called as the counts grow.
    """
    engine = Engine(store, config, fetch_workers=fetch_workers, batch_size=batch_size, write_batch=write_batch,
                    flush_seconds=flush_seconds)
    return engine.run(requests, progress=progress, executor=executor, on_batch=on_batch)
