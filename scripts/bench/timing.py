"""How figures are taken: medians over runs, latency percentiles, one shape for all engines.

Every latency figure is a dict ``{"p50_ms", "p99_ms", "qps", "samples"}`` over
single calls timed with ``perf_counter``; with several runs the report keeps
the median of each run's p50, p99 and queries/s, so one noisy run does not
decide a figure. Throughput figures are the median of the runs' values.
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Callable, List, Sequence, Tuple

import numpy as np


def pct(samples: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples, dtype=np.float64), q))


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def latency(seconds: Sequence[float]) -> dict:
    """p50/p99 in ms and sequential queries/s of one run's samples."""
    total = sum(seconds)
    return {"p50_ms": round(pct(seconds, 50) * 1e3, 3), "p99_ms": round(pct(seconds, 99) * 1e3, 3),
            "qps": round(len(seconds) / total, 1) if total > 0 else None, "samples": len(seconds)}


def median_latency(per_run: List[dict]) -> dict:
    """The median over runs of each latency figure (each run is a :func:`latency` dict)."""
    out = {k: round(median([r[k] for r in per_run]), 3) for k in ("p50_ms", "p99_ms", "qps")}
    out["samples"] = per_run[0]["samples"]
    out["runs"] = len(per_run)
    return out


def time_calls(fn: Callable, items: Sequence, warmup: int = 1) -> Tuple[List[float], list]:
    """Wall seconds of ``fn(item)`` for each item, and what each call returned.

    The first ``warmup`` items are called once before the clock starts (opening
    files and indexes is not what a warm service pays per call).
    """
    for item in items[:warmup]:
        fn(item)
    gc.collect()
    secs, results = [], []
    for item in items:
        t = time.perf_counter()
        results.append(fn(item))
        secs.append(time.perf_counter() - t)
    return secs, results


def timed(fn: Callable):
    """``(seconds, result)`` of one call."""
    gc.collect()
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def recall(found: Sequence[Sequence[int]], truth: np.ndarray) -> float:
    """Mean share of the exact top-k found, per query (recall@k)."""
    return round(float(np.mean([len(set(f) & set(t.tolist())) / len(t) for f, t in zip(found, truth)])), 4)
