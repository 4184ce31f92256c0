"""The sizes of a run: the full benchmark and the quick smoke run (``--quick``).

The full matrix is chosen for a 2-core machine with 24 GB of memory:
1,000,000 vectors at 64 and 128 dimensions (the pooled sizes of most
featurisers and products; 1M x 128 float32 is 512 MB raw, so numpy, FAISS and
the store each hold a copy comfortably), 100,000 at 64 (the small-store case)
and 100,000 at 768 (a ViT-sized embedding: 1M x 768 would be 3 GB raw per
copy, and building FAISS and Lance indexes over it on two cores takes hours,
so the 768-d point is taken at 100k). docs/benchmarks.md repeats the reasons.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

SECTIONS = ("retrieval", "search", "filtered", "serving", "ingest", "sql")


@dataclass(frozen=True)
class Config:
    """Every size a run uses; ``quick()`` shrinks them for CI's smoke run."""

    runs: int = 3
    seed: int = 0
    # search: (rows, dim) per point of the matrix, held-out queries, and fewer for the slow exact scans
    search_matrix: Tuple[Tuple[int, int], ...] = ((100_000, 64), (1_000_000, 64), (1_000_000, 128), (100_000, 768))
    queries: int = 200
    tune_queries: int = 100  # held out apart from the measured queries: FAISS settings are chosen on these
    slow_queries: int = 30
    target_recall: float = 0.95
    # filtered search and SQL run over this space (rows, dim); retrieval's look-ups too
    big_space: Tuple[int, int] = (1_000_000, 64)
    filter_share: float = 0.05
    filter_shares: Tuple[float, ...] = (0.001, 0.01, 0.05, 0.2, 0.5)  # the serving tier across selectivities
    # serving: batch queries, threads, HTTP clients, bulk writes
    batch_queries: int = 2_000
    thread_counts: Tuple[int, ...] = (1, 2, 4, 8)
    thread_seconds: float = 30.0
    http_clients: Tuple[int, ...] = (1, 4, 8)
    http_requests: int = 1_000
    bulk_rows: int = 10_000
    # retrieval
    get_samples: int = 500
    recompute_requests: int = 20
    batch_keys: int = 10_000
    # ingest: synthetic scene side (px), gse file side (px), H3 resolution of the plans
    scene_px: int = 1024
    gse_px: int = 1024
    h3_res: int = 9
    featurisers: Tuple[str, ...] = ("spectral", "mosaiks")
    fetch_workers: int = 4
    # sql: parent resolutions of the roll-ups
    rollup_res: Tuple[int, ...] = (3, 5)
    quick: bool = False
    faiss_threads: int = 0  # threads FAISS builds with; 0: every core


def full() -> Config:
    return Config()


def quick() -> Config:
    """Tiny sizes that still run every section and every engine end to end (CI smoke, well under 2 minutes)."""
    return Config(runs=1, search_matrix=((20_000, 64),), queries=50, tune_queries=30, slow_queries=10,
                  big_space=(20_000, 64),
                  get_samples=100, recompute_requests=4, batch_keys=2_000, scene_px=256, gse_px=256,
                  filter_shares=(0.01, 0.5), batch_queries=200, thread_counts=(1, 4), thread_seconds=1.0,
                  http_clients=(1, 4), http_requests=100, bulk_rows=1_000, quick=True)
