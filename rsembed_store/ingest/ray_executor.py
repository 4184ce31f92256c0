"""The Ray executor: one ingest spread over the cores of a machine or a cluster.

How it divides the work, and why:

- The driver looks the whole plan up once (cache-first) and schedules only the
  misses, so a rerun of a partly finished ingest computes only what is missing.
- The misses are cut into *partitions* of neighbouring requests: same space,
  provider, window, sensor and input prep, and the same H3 parent cell a few
  resolutions coarser (:func:`partition`). A task then reads neighbouring
  imagery: the same COG tiles, the same product files.
- Each partition is one Ray task that fetches, embeds and writes its own
  answers (:func:`run_partition`, which runs the local executor on the
  partition, with the driver's ``write_batch`` and ``flush_seconds``: a
  worker killed mid-task loses at most that much work, and Ray's retry looks
  the partition up again and computes only the rest). ``Store.put_many`` is an upsert on the key that is safe with many
  writer processes, so there is no single writer and no key is stored twice;
  vectors never travel back to the driver, only each partition's summary.
- Ray retries a task whose worker died (``max_retries``). A request that fails
  for its own reasons (no imagery, a model error) is recorded by the partition
  exactly as the local executor records it. A partition still lost after its
  retries is reported as a failure of each of its requests; the ingest goes on.
- Worker processes start with a fresh registry, so the model and provider
  classes the plan uses travel with the tasks. Classes defined outside
  ``rsembed_store`` (a notebook, a test, a plugin, a custom-weights variant)
  are pickled by value, so models and providers registered at runtime work on
  workers too.

A model that wants a GPU says so with an optional class attribute ``num_gpus``
(a number) or ``wants_gpu = True`` (one GPU); its tasks then ask Ray for it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from ..errors import ComputeError, SpecError, UnknownProviderError, require
from ..keys import ResolvedRequest
from ..registry import model_class, provider_class, register_model, register_provider
from .engine import Engine, Failure, IngestSummary, LocalExecutor, Progress, held_keys, unique_by_space

#: the most requests per partition (one Ray task, one write to the store) unless told otherwise
DEFAULT_PARTITION_SIZE = 512
#: with no size given, a plan is cut into at least this many partitions per cluster CPU
_PARTITIONS_PER_CPU = 2
#: a partition groups requests under the same H3 parent this many resolutions coarser
DEFAULT_PARENT_LEVELS = 3
#: seconds an interrupted run waits for its cancelled tasks to write what they hold
_CANCEL_GRACE_S = 30.0
#: H3 resolution of the locality cell of a non-H3 ROI (a point buffer or a box), ~36 km^2
_POINT_PARENT_RES = 6


# ------------------------------------------------------------------ partitioning

def locality(request: ResolvedRequest, parent_levels: int = DEFAULT_PARENT_LEVELS) -> str:
    """The H3 cell that stands for where ``request`` reads: its parent ``parent_levels``
    resolutions up for an H3 cell, the res-6 cell holding the centre otherwise."""
    import h3

    cell = getattr(request.spatial, "cell", None)
    if cell:
        return h3.cell_to_parent(cell, max(0, h3.get_resolution(cell) - parent_levels))
    lon, lat = request.spatial.center()
    return h3.latlng_to_cell(lat, lon, _POINT_PARENT_RES)


def _what_is_read(r: ResolvedRequest) -> str:
    """Requests that share this string read the same collection over the same window."""
    return "|".join(repr(x) for x in (r.space, r.provider, r.temporal, r.sensor, r.input_prep))


def partition(requests: Sequence[ResolvedRequest], size: int = DEFAULT_PARTITION_SIZE,
              parent_levels: int = DEFAULT_PARENT_LEVELS) -> List[List[ResolvedRequest]]:
    """Cut ``requests`` into lists of at most ``size`` neighbouring requests.

    Requests are grouped by what they read (space, provider, window, sensor,
    input prep) and by :func:`locality`; groups are visited in a fixed order
    and packed whole into a partition while they fit, so small groups at a
    region's edge share a task and a large group is split into full chunks.
    Partitions never mix spaces or windows. The result is deterministic.
    """
    size = _positive_int("partition_size", size)
    groups: Dict[Tuple[str, str], List[ResolvedRequest]] = {}
    for r in requests:
        groups.setdefault((_what_is_read(r), locality(r, parent_levels)), []).append(r)
    parts: List[List[ResolvedRequest]] = []
    current: List[ResolvedRequest] = []
    current_read: Optional[str] = None
    for (read, _), items in sorted(groups.items(), key=lambda kv: kv[0]):
        if current and (read != current_read or len(current) + len(items) > size):
            parts.append(current)
            current = []
        current_read = read
        for start in range(0, len(items), size):
            chunk = items[start:start + size]
            if current and len(current) + len(chunk) > size:
                parts.append(current)
                current = []
            current.extend(chunk)
    if current:
        parts.append(current)
    return parts


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"{name}={value!r} is not accepted; use a positive integer")
    return value


# ------------------------------------------------------------------ what travels with a task

@dataclass(frozen=True)
class _Job:
    """Everything a worker needs besides its partition; put in Ray's object store once per run."""

    run_id: str
    uri: str
    storage_options: Optional[dict]
    h3_res: int
    config: dict
    fetch_workers: int
    batch_size: int
    write_batch: int
    flush_seconds: float
    classes: bytes  # cloudpickled {"models": {name: class}, "providers": {name: class}}


_pickle_lock = threading.Lock()


def _pickle_classes(requests: Sequence[ResolvedRequest]) -> bytes:
    """The model and provider classes ``requests`` need, for a worker's registry.

    A class whose module is not part of ``rsembed_store`` may not be importable on
    a worker (a test module, a notebook), so its module is pickled by value.
    """
    from ray import cloudpickle

    models = {name: model_class(name) for name in sorted({r.model for r in requests})}
    providers = {}
    for name in sorted({r.provider for r in requests if r.provider}):
        try:
            cls = provider_class(name)
        except (UnknownProviderError, ImportError):  # precomputed models read their own sources
            continue
        providers[name] = cls
    outside = {c.__module__ for c in (*models.values(), *providers.values())
               if c.__module__.partition(".")[0] != "rsembed_store" and c.__module__ in sys.modules}
    with _pickle_lock:  # cloudpickle's by-value registry is global; two runs may pickle at once
        registered = set(cloudpickle.list_registry_pickle_by_value())
        added = [sys.modules[m] for m in outside if m not in registered]
        for module in added:
            cloudpickle.register_pickle_by_value(module)
        try:
            return cloudpickle.dumps({"models": models, "providers": providers})
        finally:
            for module in added:
                cloudpickle.unregister_pickle_by_value(module)


def _install_classes(blob: bytes) -> None:
    from ray import cloudpickle

    shipped = cloudpickle.loads(blob)
    for name, cls in shipped["models"].items():
        register_model(name, cls)
    for name, cls in shipped["providers"].items():
        register_provider(name, cls)


# ------------------------------------------------------------------ the worker side

_worker_engines: Dict[str, Engine] = {}  # run_id -> engine; one per worker process at a time


def _engine_for(job: _Job) -> Engine:
    """This worker's engine for ``job``: built on its first partition and kept, so that
    a model's weights and the store's handles are loaded once per worker and run."""
    engine = _worker_engines.get(job.run_id)
    if engine is None:
        from ..store import Store

        _install_classes(job.classes)
        store = Store.open(job.uri, storage_options=job.storage_options, h3_res=job.h3_res)
        engine = Engine(store, job.config, fetch_workers=job.fetch_workers, batch_size=job.batch_size,
                        write_batch=job.write_batch, flush_seconds=job.flush_seconds)
        _worker_engines.clear()
        _worker_engines[job.run_id] = engine
    return engine


def run_partition(job: _Job, requests: List[ResolvedRequest]) -> IngestSummary:
    """One Ray task: look up, compute and write ``requests`` with the local executor."""
    summary = LocalExecutor().run(_engine_for(job), requests, progress=False)
    for f in summary.failures:
        f.exception = None  # an exception object may not pickle; its reason and type travel
    return summary


# ------------------------------------------------------------------ the driver side

def _ray():
    return require("ray", "ray", "the Ray executor (--executor ray)")


def gpus_wanted(model: str) -> float:
    """GPUs a task of ``model`` asks for: its class's ``num_gpus``, or 1 if ``wants_gpu``, else 0."""
    cls = model_class(model)
    n = getattr(cls, "num_gpus", None)
    if n is None:
        n = 1 if getattr(cls, "wants_gpu", False) else 0
    return float(n)


class RayExecutor:
    """Runs an ingest as Ray tasks, one per partition of neighbouring misses.

    ``address``: ``None`` starts a local Ray on this machine (``num_cpus`` cores,
    default all) unless this process is already connected; ``"auto"`` joins the
    cluster this machine is part of; ``"ray://host:10001"`` a remote one.
    ``partition_size`` requests at most go to one task (and one write); left
    out, it is 512, made smaller for a small plan so that every CPU gets at
    least two partitions. ``max_in_flight`` bounds the tasks submitted at once
    (default twice the cluster's CPUs), so a plan of millions of requests never
    floods the cluster. ``cpus_per_task`` is what Ray reserves for one task.

    >>> engine.run(plan.requests, executor=RayExecutor(num_cpus=8))  # doctest: +SKIP
    """

    def __init__(self, address: Optional[str] = None, num_cpus: Optional[int] = None, *,
                 partition_size: Optional[int] = None, parent_levels: int = DEFAULT_PARENT_LEVELS,
                 max_retries: int = 3, cpus_per_task: float = 1.0, max_in_flight: Optional[int] = None):
        if address is not None and (not isinstance(address, str) or not address):
            raise SpecError(f"address={address!r} is not accepted; use 'auto', 'ray://HOST:PORT' or leave it out")
        if num_cpus is not None:
            _positive_int("num_cpus", num_cpus)
            if address is not None:
                raise SpecError(f"num_cpus={num_cpus!r} applies to a local Ray only; the cluster at "
                                f"{address!r} has its own CPUs")
        self.address = address
        self.num_cpus = num_cpus
        self.partition_size = None if partition_size is None else _positive_int("partition_size", partition_size)
        self.parent_levels = int(parent_levels)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise SpecError(f"max_retries={max_retries!r} is not accepted; use an integer >= 0")
        self.max_retries = max_retries
        if isinstance(cpus_per_task, bool) or not isinstance(cpus_per_task, (int, float)) or not cpus_per_task > 0:
            raise SpecError(f"cpus_per_task={cpus_per_task!r} is not accepted; use a number > 0")
        self.cpus_per_task = float(cpus_per_task)
        self.max_in_flight = None if max_in_flight is None else _positive_int("max_in_flight", max_in_flight)
        self._opened = False

    # ---------------------------------------------------------- Ray session

    def connect(self):
        """Join (or start) the Ray session this executor runs on; returns the ``ray`` module."""
        ray = _ray()
        if ray.is_initialized():
            return ray
        kwargs = {"address": self.address} if self.address else {"num_cpus": self.num_cpus or os.cpu_count()}
        try:
            with warnings.catch_warnings():
                # Ray starts its daemons with fork + exec at once, which lancedb's fork warning is not about
                warnings.filterwarnings("ignore", message="lancedb fork support", category=RuntimeWarning)
                ray.init(include_dashboard=False, logging_level="warning", **kwargs)
        except ConnectionError as exc:
            raise ComputeError(
                f"cannot connect to the Ray cluster at {self.address!r}: {str(exc).rstrip('.')}. Start one with "
                "`ray start --head` (then use --ray-address auto), or leave out --ray-address for a local Ray"
            ) from None
        self._opened = True
        return ray

    def close(self) -> None:
        """Leave the Ray session :meth:`connect` opened: a local Ray it started stops, a
        cluster it joined keeps running. A session the process already had is left alone."""
        if self._opened:
            _ray().shutdown()
            self._opened = False

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------- the run

    def run(self, engine: Engine, requests: List[ResolvedRequest], *, progress=None,
            on_batch: Optional[Callable[[IngestSummary], None]] = None) -> IngestSummary:
        """Ingest ``requests`` cache-first on Ray; the same contract as ``LocalExecutor.run``."""
        summary = IngestSummary(requested=len(requests))
        t0 = time.perf_counter()
        bar = Progress(len(requests), progress)
        try:
            misses = self._misses(engine.store, requests, summary)
            bar.update(len(requests) - len(misses), summary)
            if misses:
                self._schedule(engine, misses, summary, bar, on_batch)
        finally:
            bar.close()
            summary.seconds = time.perf_counter() - t0
        return summary

    def _misses(self, store, requests, summary: IngestSummary) -> List[ResolvedRequest]:
        """The requests (one per key) the store does not hold; counts the rest as cached."""
        misses = []
        for space, items in unique_by_space(requests).items():
            held = held_keys(store, space, [r.key for r in items])
            misses.extend(r for r, h in zip(items, held) if not h)
        summary.cached += len(requests) - len(misses)
        return misses

    def _job(self, engine: Engine, misses: Sequence[ResolvedRequest]) -> _Job:
        store = engine.store
        return _Job(
            run_id=uuid.uuid4().hex,
            uri=store.uri,
            storage_options=store.storage_options,
            h3_res=store.h3_res,
            config=dict(engine.config),
            fetch_workers=engine.fetch_workers,
            batch_size=engine.batch_size,
            write_batch=engine.write_batch,
            flush_seconds=engine.flush_seconds,
            classes=_pickle_classes(misses),
        )

    def _size_for(self, n_misses: int, cpus: int) -> int:
        if self.partition_size is not None:
            return self.partition_size
        return max(1, min(DEFAULT_PARTITION_SIZE, -(-n_misses // (_PARTITIONS_PER_CPU * cpus))))

    def _schedule(self, engine, misses, summary, bar, on_batch) -> None:
        ray = self.connect()
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        parts = partition(misses, self._size_for(len(misses), cpus), self.parent_levels)
        summary.calls["ray.partitions"] = len(parts)
        job_ref = ray.put(self._job(engine, misses))
        task = ray.remote(run_partition)
        limit = self.max_in_flight or 2 * cpus
        pending: Dict[object, List[ResolvedRequest]] = {}
        queue: Iterator[List[ResolvedRequest]] = iter(parts)

        def submit() -> None:
            for part in queue:
                opts = {"num_cpus": self.cpus_per_task, "num_gpus": gpus_wanted(part[0].model),
                        "max_retries": self.max_retries, "retry_exceptions": False}
                pending[task.options(**opts).remote(job_ref, part)] = part
                if len(pending) >= limit:
                    return

        try:
            submit()
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    part = pending.pop(ref)
                    _collect(ray, ref, part, summary)
                    bar.update(len(part), summary)
                    if on_batch is not None:
                        on_batch(summary)
                submit()
        except BaseException:
            # Ctrl-C or a crash in the driver: interrupt the tasks in flight, and give them
            # a moment to write what they have computed (as the local executor does)
            for ref in pending:
                ray.cancel(ref)
            ray.wait(list(pending), num_returns=len(pending), timeout=_CANCEL_GRACE_S)
            raise


def _collect(ray, ref, part: List[ResolvedRequest], summary: IngestSummary) -> None:
    """Add a finished partition's summary, or, if Ray lost it after its retries, fail its requests."""
    try:
        summary.add(ray.get(ref))
    except ray.exceptions.RayTaskError as exc:  # the task itself raised (e.g. the store refused a write)
        cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc
        _fail_all(summary, part, f"partition failed: {type(cause).__name__}: {_first_line(cause)}", cause)
    except ray.exceptions.RayError as exc:  # worker or node lost more often than max_retries
        _fail_all(summary, part, f"partition lost after Ray's retries: {type(exc).__name__}: {_first_line(exc)}", exc)


def _fail_all(summary: IngestSummary, part: List[ResolvedRequest], reason: str, exc: BaseException) -> None:
    summary.failed += len(part)
    summary.failures.extend(Failure(r.key, r.canonical, reason, type(exc).__name__) for r in part)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def executor_for(name: str, *, ray_address: Optional[str] = None, ray_num_cpus: Optional[int] = None,
                 partition_size: Optional[int] = None):
    """The executor the CLI names: ``local`` (threads here) or ``ray``; Ray options need ``ray``."""
    if name == "local":
        given = [opt for opt, value in (("--ray-address", ray_address), ("--ray-num-cpus", ray_num_cpus),
                                        ("--partition-size", partition_size)) if value is not None]
        if given:
            raise SpecError(f"{', '.join(given)} apply to --executor ray only; add --executor ray or leave them out")
        return LocalExecutor()
    if name == "ray":
        _ray()  # a missing extra fails here, before any planning work
        return RayExecutor(ray_address, ray_num_cpus, partition_size=partition_size)
    raise SpecError(f"executor {name!r} is not accepted; use 'local' or 'ray'")
