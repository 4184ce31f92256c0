"""What several sections share, built once per run: the vector spaces and the synthetic imagery.

The 1M-row space that the search section measures is the one the filtered
search, the SQL roll-up and the batch look-ups run over, so it is written and
maintained once. Each (rows, dim) space lives in its own store directory under
the run's work directory, which is deleted at the end unless ``--keep`` is
given.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from rsembed_store import Store
from rsembed_store.store import dir_bytes

from .config import Config
from .data import BLOCK, REVISION, RowWriter, VectorData, model_id


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Space:
    """One written and maintained benchmark space, with the same vectors in memory for the baselines."""

    rows: int
    dim: int
    store: Store
    path: str
    model: str
    space: str
    data: VectorData
    X: np.ndarray
    keys: List[str]
    write_s: float
    maintain_s: float
    maintain_report: dict
    key_to_row: Dict[str, int] = field(default_factory=dict)
    lance: Optional[Store] = None  # the same store with the serving tier off: the Lance path alone

    def disk_bytes(self) -> dict:
        """Bytes on disk of the space's table, and of its indexes alone."""
        table_dir = os.path.join(self.path, f"{self.space}.lance")
        return {"table": dir_bytes(table_dir), "indexes": dir_bytes(os.path.join(table_dir, "_indices"))}


class Workspace:
    def __init__(self, root: str, config: Config):
        self.root = root
        self.config = config
        self._spaces: Dict[Tuple[int, int], Space] = {}
        self._scene: Optional[dict] = None
        self._gse: Optional[str] = None
        self._hnsw: Dict[Tuple[int, int], tuple] = {}

    def space(self, rows: int, dim: int) -> Space:
        """The benchmark space of ``rows`` x ``dim``: written in batches, then maintained (indexes, tuning)."""
        if (rows, dim) in self._spaces:
            return self._spaces[(rows, dim)]
        cfg = self.config
        t = time.perf_counter()
        data = VectorData(rows, dim, cfg.queries + cfg.tune_queries, cfg.seed)
        X = data.matrix()
        log(f"data {rows:,} x {dim}: {data.clusters_used} clusters ({time.perf_counter() - t:.1f} s)")
        path = os.path.join(self.root, f"space-{rows}-{dim}")
        store = Store.open(path)
        model = model_id(dim)
        writer = RowWriter(model, dim, store.h3_res)
        store.ensure_space(model, REVISION, dim, metric="cosine", kind="on_the_fly")
        table = store.table(writer.space)
        if table.count_rows() > 0:
            raise RuntimeError(f"{path!r} already holds rows of {writer.space!r}; give an empty --workdir")
        keys: List[str] = []
        t = time.perf_counter()
        for start in range(0, rows, BLOCK):
            batch = writer.table(data, X, start, min(rows, start + BLOCK))
            table.add(batch)
            keys.extend(batch.column("key").to_pylist())
        write_s = time.perf_counter() - t
        log(f"wrote {rows:,} rows in {write_s:.1f} s; maintaining ...")
        t = time.perf_counter()
        report = store.maintain(spaces=[writer.space], min_rows_for_index=min(50_000, max(1, rows // 2)),
                                target_recall=cfg.target_recall, seed=cfg.seed)
        maintain_s = time.perf_counter() - t
        vi = report["spaces"][0].get("vector_index") or {}
        tier = report["spaces"][0].get("serving") or {}
        log(f"maintained in {maintain_s:.1f} s: {vi.get('type')} {vi.get('query')} recall {vi.get('recall_at_10')}; "
            f"serving tier {tier.get('kind')} in {tier.get('build_s')} s, ef {tier.get('ef')}")
        sp = Space(rows, dim, store, path, model, writer.space, data, X, keys, write_s, maintain_s,
                   report["spaces"][0], {k: i for i, k in enumerate(keys)},
                   lance=Store.open(path, config={"serving": {"enabled": False}}))
        if len(sp.key_to_row) != rows:
            raise RuntimeError(f"{rows - len(sp.key_to_row)} duplicate keys among the benchmark rows")
        self._spaces[(rows, dim)] = sp
        return sp

    def drop_space(self, rows: int, dim: int) -> None:
        """Forget a space's in-memory copies once no later section needs them (its files stay until the end)."""
        self._spaces.pop((rows, dim), None)
        self._hnsw.pop((rows, dim), None)

    def hnsw(self, sp: Space) -> tuple:
        """FAISS HNSW over the space's vectors and its build seconds, built once (search and filtered share it)."""
        key = (sp.rows, sp.dim)
        if key not in self._hnsw:
            import faiss

            from .engines import faiss_hnsw

            self._hnsw[key] = faiss_hnsw(faiss, sp.X, self.config.faiss_threads or os.cpu_count() or 1)
        return self._hnsw[key]

    def scene(self) -> dict:
        """The synthetic Sentinel-2-like scene: its manifest and the local provider's config."""
        if self._scene is None:
            from rsembed_store.testing.scenes import SceneSpec, ensure_scene

            src = os.path.join(self.root, "scene")
            t = time.perf_counter()
            manifest = ensure_scene(src, SceneSpec(size_px=self.config.scene_px, seed=self.config.seed))
            log(f"scene {self.config.scene_px} px in {time.perf_counter() - t:.1f} s")
            self._scene = {"manifest": manifest, "config": {"sources": {"s2-l2a": os.path.join(src, "scenes")}}}
        return self._scene

    def gse_root(self) -> str:
        """A synthetic gse product file (64 int8 bands, the published COG layout) in UTM 32N."""
        if self._gse is None:
            from rsembed_store.testing import products as syn

            from .ingest import GSE_LEFT, GSE_TOP, GSE_YEAR, GSE_ZONE

            root = os.path.join(self.root, "gse")
            t = time.perf_counter()
            px = self.config.gse_px
            syn.make_gse_file(root, GSE_YEAR, GSE_ZONE, GSE_LEFT, GSE_TOP, (px, px), seed=self.config.seed + 7,
                              patch=1)
            log(f"gse file {px} px in {time.perf_counter() - t:.1f} s")
            self._gse = root
        return self._gse
