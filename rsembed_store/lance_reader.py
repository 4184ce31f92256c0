"""A read-only look at a local store through Lance alone, without LanceDB.

``import lancedb`` costs one to several seconds; reading a store's catalog and its
spaces' Lance datasets needs only ``lance`` (a fraction of that). The command line
answers ``rsembed-store stats`` through this reader, and the report itself is the
one :func:`rsembed_store.stats.store_stats` that ``Store.stats()`` gives, so the two
cannot disagree. Only local stores are read this way; an object store goes through
:meth:`Store.open` (its credentials and options are LanceDB's business).

The layout read is LanceDB's: ``<uri>/<table>.lance`` per table, the catalog table
``_spaces`` marking a store (:data:`rsembed_store.storage.CATALOG`).
"""

from __future__ import annotations

import os
import threading
from typing import Dict, List, Mapping, Optional

from .errors import NoStoreError, UnknownSpaceError
from .storage import CATALOG



def no_store(uri: str, why: str) -> NoStoreError:
    """The error a reader gets where no store is (the same words and fields as ``Store.open``'s)."""
    err = NoStoreError(f"no store at {uri!r} ({why}); create one with Store.open({uri!r}) and an ingest, or from "
                       f"the shell with `rsembed-store --db {uri} ingest ...` (or `rsembed-store --db {uri} demo`)")
    err.uri, err.reason = uri, why
    return err


class LanceReader:
    """The reading half of a local store (catalog, datasets, serving tiers) over ``lance`` only.

    It offers what :func:`~rsembed_store.stats.store_stats` and the serving tier
    (``query.serving.Serving``, which the command line puts over it) read from a store:
    ``uri``, ``config``, ``spaces()``, ``space_info()``, ``dataset()`` and
    ``latest_version()``. It writes nothing itself.
    """

    def __init__(self, uri: str, config: Optional[Mapping] = None):
        self.uri = uri
        self.storage_options = None
        self.config = dict(config or {})
        self._lock = threading.RLock()
        self._datasets: Dict[str, object] = {}
        self._spaces: Optional[list] = None

    @classmethod
    def open(cls, uri: str, config: Optional[Mapping] = None) -> "LanceReader":
        """A reader of the local store at ``uri``; :class:`NoStoreError` where none is."""
        if "://" in uri:
            raise ValueError(f"LanceReader reads local stores only, not {uri!r}")
        if not os.path.isdir(uri):
            if os.path.exists(uri):
                from .errors import StoreError

                raise StoreError(f"cannot open the store at {uri!r}: it is a file, not a directory")
            raise no_store(uri, "the directory does not exist")
        if not os.path.isdir(os.path.join(uri, f"{CATALOG}.lance")):
            raise no_store(uri, "it holds no rsembed-store catalog")
        return cls(uri, config)

    def _base(self, name: str):
        import lance

        with self._lock:
            ds = self._datasets.get(name)
            if ds is None:
                ds = self._datasets[name] = lance.dataset(os.path.join(self.uri, f"{name}.lance"))
            return ds

    def spaces(self) -> List:
        """Every space in the catalog, sorted by name."""
        from .space import SpaceInfo

        if self._spaces is None:
            rows = self._base(CATALOG).to_table().to_pylist()
            self._spaces = sorted((SpaceInfo(r["space"], r["model"], r["revision"], r["dim"], r["dtype"], r["metric"],
                                             r["kind"], r["h3_res"]) for r in rows), key=lambda s: s.space)
        return list(self._spaces)

    def space_info(self, space: str):
        for s in self.spaces():
            if s.space == space:
                return s
        raise UnknownSpaceError(f"the store at {self.uri!r} holds no space {space!r}; "
                                f"it holds {[s.space for s in self.spaces()]}")

    def dataset(self, space: str, version=None):
        """The Lance dataset of ``space`` at its latest version (or ``version``)."""
        self.space_info(space)
        base = self._base(space)
        return base.checkout_version(base.latest_version if version is None else version)

    def latest_version(self, space: str) -> int:
        return int(self._base(space).latest_version)
