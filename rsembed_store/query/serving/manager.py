"""The serving tier's lifecycle: which spaces it holds, when it builds, loads or steps aside for Lance.

:class:`Serving` belongs to one :class:`~rsembed_store.store.Store`. For each
space it keeps at most one :class:`~.tier.Tier` and the newest
:class:`~.view.View` made from it. A read asks :meth:`Serving.view`:

1. the latest Lance version of the space (one manifest listing, ~0.01 ms);
2. the cached view when it is of that version: every read after a quiet
   period costs only that check;
3. otherwise the delta from the tier's version to the latest one is read
   (only the changed fragments) and a new view cached. A delta larger than
   :data:`DELTA_MAX_ROWS` means the tier is far behind: the read takes the
   Lance path and a rebuild starts in the background.

A space without a tier loads the one saved beside it when that one checks out
(format, sizes, key checksum), else builds one: at once for spaces of up to
:data:`~.tier.FLAT_MAX_ROWS` rows (an exact scan, built in milliseconds), in a
background thread for larger ones (meanwhile reads take the Lance path).
``maintain`` builds and saves tiers explicitly. A memory budget caps the bytes
all tiers of the store may hold; spaces that do not fit are served by Lance.

Settings (``Store.open(config={"serving": {...}})`` or the environment):
``enabled`` (``RSEMBED_STORE_SERVING``: ``0`` turns the tier off),
``memory_mb`` (``RSEMBED_STORE_SERVING_MEMORY_MB``, default 4096),
``background`` (false: build large tiers in the reading thread, for tests and
batch jobs), ``graph_min_rows`` (spaces up to this many rows are scanned
exactly, default 20,000), ``cache_dir`` (where tiers of object-store spaces are saved;
``RSEMBED_STORE_CACHE``, default ``~/.cache/rsembed-store``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional

from .delta import empty_delta, read_delta
from .rows import GRID_COLUMNS
from ...errors import CorruptTierError
from .tier import FLAT_MAX_ROWS, HNSW_M, Tier
from .view import View

log = logging.getLogger("rsembed_store.serving")

DELTA_MAX_ROWS = 100_000
DEFAULT_MEMORY_MB = 4096


@dataclass
class _State:
    lock: threading.Lock
    tier: Optional[Tier] = None
    view: Optional[View] = None
    building: bool = False
    loaded: bool = False  # a saved tier was looked for
    reason: Optional[str] = None  # why reads take the Lance path, when they do
    source: Optional[str] = None  # "built" or "loaded"
    build_s: Optional[float] = None


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() not in ("0", "false", "no", "off", "")


def estimate_bytes(rows: int, dim: int, graph: bool) -> int:
    """What a tier of ``rows`` x ``dim`` will hold: vectors, graph links, keys and the row columns."""
    per_row = dim * 4 + 32 + 8 + 150
    if graph:
        per_row += HNSW_M * 2 * 4 + 16
    return rows * per_row


class Serving:
    """The serving tiers of one store (thread-safe)."""

    def __init__(self, store, config: Optional[Mapping] = None):
        cfg = dict((config or {}).get("serving") or {})
        self.store = store
        self.enabled = bool(cfg.get("enabled", _env_flag("RSEMBED_STORE_SERVING", True)))
        mb = cfg.get("memory_mb", os.environ.get("RSEMBED_STORE_SERVING_MEMORY_MB", DEFAULT_MEMORY_MB))
        self.budget = int(float(mb) * 2**20)
        self.background = bool(cfg.get("background", True))
        self.graph_min_rows = int(cfg.get("graph_min_rows", FLAT_MAX_ROWS))
        self.cache_dir = cfg.get("cache_dir") or os.environ.get("RSEMBED_STORE_CACHE") or os.path.join(
            os.path.expanduser("~"), ".cache", "rsembed-store")
        self._lock = threading.Lock()
        self._states: Dict[str, _State] = {}

    # ------------------------------------------------------------ reading

    def view(self, space: str, *, build: bool = True) -> Optional[View]:
        """The current view of ``space``, or None when reads of it take the Lance path.

        ``build=False`` loads a saved tier (and makes small exact ones) but starts no graph build.
        """
        if not self.enabled:
            return None
        st = self._state(space)
        latest = self.store.latest_version(space)
        v = st.view
        if v is not None and v.version == latest:
            return v
        with st.lock:
            v = st.view
            if v is not None and v.version == latest:
                return v
            if st.tier is None and not self._obtain(space, st, build):
                return None
            tier = st.tier
            if tier.version == latest:
                v = View(tier, empty_delta(tier), self._grid_fetcher(space))
            else:
                ds = self.store.dataset(space)
                previous = st.view.delta if st.view is not None and st.view.tier is tier else None
                delta = read_delta(tier, ds, previous)
                if delta.rows.n + delta.n_removed > DELTA_MAX_ROWS:
                    st.reason = (f"{delta.rows.n + delta.n_removed:,} rows changed since the tier's version "
                                 f"{tier.version}; rebuilding")
                    self._start_build(space, st)
                    return None
                v = View(tier, delta, self._grid_fetcher(space))
            st.view, st.reason = v, None
            return v

    def loaded_tier(self, space: str) -> Optional[Tier]:
        """The tier of ``space`` if one is in memory now (none is loaded or built)."""
        with self._lock:
            st = self._states.get(space)
        return st.tier if st is not None else None

    def _grid_fetcher(self, space: str):
        def fetch(addresses):
            ds = self.store.dataset(space)
            wanted = sorted(set(int(a) for a in addresses))
            data = ds._take_rows(wanted, columns=GRID_COLUMNS).to_pydict()  # rows in the order asked
            at = {a: i for i, a in enumerate(wanted)}
            return [{c: data[c][at[int(a)]] for c in GRID_COLUMNS} for a in addresses]
        return fetch

    def _state(self, space: str) -> _State:
        with self._lock:
            st = self._states.get(space)
            if st is None:
                st = self._states[space] = _State(lock=threading.Lock())
            return st

    def _obtain(self, space: str, st: _State, build: bool = True) -> bool:
        """Give ``st`` a tier: load the saved one, or build (now if small). False: use Lance for now."""
        info = self.store.space_info(space)
        if not st.loaded:
            st.loaded = True
            tier = self._load(space, info)
            if tier is not None:
                if self._fits(space, tier.nbytes()):
                    st.tier, st.source = tier, "loaded"
                    return True
                st.reason = "over the memory budget"
                return False
        if st.building:
            return False
        rows = self.store.dataset(space).count_rows()
        if not self._fits(space, estimate_bytes(rows, info.dim, rows > self.graph_min_rows)):
            st.reason = (f"over the memory budget ({estimate_bytes(rows, info.dim, True) / 2**20:,.0f} MiB "
                         f"needed, {self.budget / 2**20:,.0f} MiB allowed in all)")
            return False
        if rows <= self.graph_min_rows or (build and not self.background):
            self._build_into(space, st)
            return st.tier is not None
        if not build:
            st.reason = "no saved tier (maintain builds one; the first search starts one)"
            return False
        st.reason = "building the tier in the background"
        self._start_build(space, st)
        return False

    # ------------------------------------------------------------ building

    def build(self, space: str) -> dict:
        """Build, save and install the tier of ``space`` now (what ``maintain`` calls); its summary."""
        st = self._state(space)
        with st.lock:
            self._build_into(space, st)
        return self.describe(space)

    def _build_into(self, space: str, st: _State) -> None:
        info = self.store.space_info(space)
        t0 = time.perf_counter()
        try:
            tier = Tier.build(self.store.dataset(space), space=space, metric=info.metric, dim=info.dim,
                              model=info.model, revision=info.revision, graph_min_rows=self.graph_min_rows)
        except Exception as exc:
            log.warning("serving tier of %s: build failed, reads use Lance: %s", space, exc)
            st.reason = f"the build failed: {exc}"
            return
        st.tier, st.view, st.source, st.reason = tier, None, "built", None
        st.build_s = time.perf_counter() - t0
        try:
            tier.save(self._dir(space))
        except OSError as exc:  # a read-only store still serves from memory
            log.warning("serving tier of %s: not saved (%s)", space, exc)

    def _start_build(self, space: str, st: _State) -> None:
        if st.building:
            return
        st.building = True

        def work():
            try:
                fresh = _State(lock=threading.Lock())
                self._build_into(space, fresh)
                with st.lock:
                    if fresh.tier is not None:
                        st.tier, st.view, st.source, st.build_s, st.reason = (
                            fresh.tier, None, "built", fresh.build_s, None)
                    else:
                        st.reason = fresh.reason
            finally:
                st.building = False

        threading.Thread(target=work, name=f"serving-build-{space}", daemon=True).start()

    def wait(self, timeout_s: float = 600.0) -> bool:
        """Wait for background builds to finish (True when none is running)."""
        deadline = time.monotonic() + timeout_s
        while any(st.building for st in list(self._states.values())):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    # ------------------------------------------------------------ saving and loading

    def _dir(self, space: str) -> str:
        uri = self.store.uri
        if "://" not in uri or uri.startswith("file://"):
            root = uri[len("file://"):] if uri.startswith("file://") else uri
            return os.path.join(root, "_serving", space)
        digest = hashlib.sha256(uri.encode("utf-8")).hexdigest()[:16]
        return os.path.join(self.cache_dir, "serving", digest, space)

    def _load(self, space: str, info) -> Optional[Tier]:
        root = self._dir(space)
        try:
            candidates = sorted((e for e in os.listdir(root) if e.startswith("v")),
                                key=lambda e: int(e[1:]) if e[1:].isdigit() else -1)
        except OSError:
            return None
        for entry in reversed(candidates):
            path = os.path.join(root, entry)
            try:
                tier = Tier.load(path, space=space, dim=info.dim, metric=info.metric)
                self._check_against_lance(space, tier)
                return tier
            except CorruptTierError as exc:
                log.warning("serving tier of %s: ignoring the saved tier, it will be rebuilt: %s", space, exc)
        return None

    def _check_against_lance(self, space: str, tier: Tier) -> None:
        """A saved tier must describe a version of this space that Lance has (or had, if pruned since)."""
        latest = self.store.latest_version(space)
        if tier.version > latest:
            raise CorruptTierError(f"it claims version {tier.version}, but the space is at version {latest}")
        try:
            ds = self.store.dataset(space, tier.version)
        except Exception:
            return  # the version was pruned: the delta check against the latest version still holds
        from .tier import fragment_layout

        if fragment_layout(ds) != tier.layout:
            raise CorruptTierError(f"its fragments are not those of version {tier.version}")
        if ds.count_rows() != tier.n:
            raise CorruptTierError(f"it holds {tier.n} rows; version {tier.version} has {ds.count_rows()}")

    # ------------------------------------------------------------ memory and reporting

    def _fits(self, space: str, nbytes: int) -> bool:
        held = sum(st.tier.nbytes() for name, st in list(self._states.items())
                   if st.tier is not None and name != space)
        return held + nbytes <= self.budget

    def forget(self, space: Optional[str] = None) -> None:
        """Drop tiers from memory (all of them by default); the next read loads or rebuilds."""
        with self._lock:
            names = [space] if space else list(self._states)
            for name in names:
                self._states.pop(name, None)

    def describe(self, space: str) -> dict:
        """Which path serves ``space``, and what its tier holds."""
        st = self._states.get(space)
        if not self.enabled:
            return {"path": "lance", "reason": "the serving tier is turned off"}
        if st is None or st.tier is None:
            return {"path": "lance", "reason": (st.reason if st else None) or "no tier yet (built on first read)"}
        t, v = st.tier, st.view
        return {
            "path": "serving" if st.reason is None else "lance",
            "reason": st.reason,
            "kind": t.kind,
            "rows": t.n,
            "version": t.version,
            "delta_rows": v.delta.rows.n if v else 0,
            "removed_rows": v.delta.n_removed if v else 0,
            "bytes": t.nbytes(),
            "raw_vector_bytes": int(t.n * t.rows.dim * 4),
            "ef": t.ef,
            "measured": t.measured,
            "source": st.source,
            "build_s": round(st.build_s, 3) if st.build_s is not None else None,
        }

    def spaces(self) -> List[str]:
        return sorted(name for name, st in self._states.items() if st.tier is not None)
