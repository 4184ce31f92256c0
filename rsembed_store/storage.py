"""The storage core: one LanceDB database, one table per embedding space, upserts on the key.

:class:`Storage` holds rows and nothing else: it imports no wing (neither
``ingest``, ``query``, ``io`` nor the service; ``tests/test_layers.py``
checks it). :class:`~rsembed_store.store.Store`, the facade users call, adds
cache-first get, search, SQL, ingest and files on top of it.

``Store.open(uri)`` is the one place that touches a URI or storage options.
Everything else works on values: resolved requests, embeddings, Arrow tables.

Writes are upserts on ``key``, safe with several writer processes (no key is
ever stored twice): on a local directory under a lock per space, appending the
keys the space lacks; on an object store as merge-inserts whose scanning join
Lance checks for concurrent inserts of one key (:mod:`rsembed_store.writes`
says why each is safe). Reads go through the Lance dataset of each table at its
latest version (a consistent snapshot).

The same code serves a local directory and an object store (``s3://``,
``gs://``, ``az://``): nothing here touches the file system except creating a
local directory, and commits are made safe on object stores by Lance itself
(a conditional put of each new manifest; see docs/object-storage.md).
Credentials come from ``storage_options``, ``$RSEMBED_STORE_STORAGE_OPTIONS``
or the cloud SDKs' usual environment variables, and never appear in a message.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import threading
import time
from datetime import datetime, timezone
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Union

import pyarrow as pa
import pyarrow.compute as pc

from . import scalar_indexes, writes
from .embedding import Embedding
from .keys import check_keys
from .errors import StoreError, UnknownModelError, UnknownSpaceError, VectorError
from .storage_options import check_options, default_uri, redact, storage_options_from_env
from .space import (
    PutResult,
    SpaceInfo,
    DEFAULT_H3_RES,
    EMBEDDING_COLUMNS,
    catalog_schema,
    check_dim,
    embeddings_to_table,
    row_schema,
    space_name,
    table_to_embeddings,
)

logger = logging.getLogger("rsembed_store.store")

CATALOG = "_spaces"
# scalar indexes: BTREE for high-cardinality columns, BITMAP for few distinct values
SCALAR_INDEXES = {
    "key": "BTREE",
    "h3": "BTREE",
    "cell": "BTREE",
    "start_date": "BTREE",
    "end_date": "BTREE",
    "year": "BITMAP",
    "output": "BITMAP",
}


# a put_many folds new rows into the key index once more than this many (and
# more than 10% of the indexed rows) are outside it
KEY_INDEX_SLACK_ROWS = 50_000


def _lancedb():
    import lancedb

    return lancedb


class Storage:
    """The rows of an embedding store on a LanceDB database (a directory or an object-store URI).

    Users open a :class:`~rsembed_store.store.Store` (this plus the faces):

    >>> store = Store.open("./rsembed-store")            # doctest: +SKIP
    >>> store.put_many([embedding])                      # doctest: +SKIP
    >>> store.lookup_many([embedding.key])               # doctest: +SKIP
    """

    def __init__(self, db, uri: str, storage_options: Optional[dict], h3_res: int,
                 config: Optional[Mapping] = None):
        self._db = db
        self.uri = uri
        self.storage_options = storage_options
        self.h3_res = h3_res
        self.config = dict(config or {})
        self._lock = threading.RLock()
        self._tables: Dict[str, object] = {}
        self._datasets: Dict[str, object] = {}
        self._spaces: Dict[str, SpaceInfo] = {}
        self._spaces_read = None  # (catalog version, its spaces)
        # a local store's writers take a lock per space and append new keys (rsembed_store.writes);
        # object stores merge-insert every row. The benchmark and tests turn it off to try that path.
        local = "://" not in uri and writes.fcntl is not None
        self._locks = writes.SpaceLocks(os.path.abspath(uri)) if local else None
        self._append_new_keys = True
        self._rows_since_key_check: Dict[str, int] = {}

    # ------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        uri: Union[str, os.PathLike, None] = None,
        *,
        storage_options: Optional[Mapping[str, str]] = None,
        h3_res: int = DEFAULT_H3_RES,
        config: Optional[Mapping] = None,
        create: bool = True,
    ) -> "Storage":
        """Create or open a store at ``uri`` (default ``$RSEMBED_STORE_DB`` or ``./rsembed-store``).

        ``uri`` may be a local directory or an object-store URI such as
        ``s3://bucket/prefix``, ``gs://bucket/prefix`` or ``az://container/prefix``.
        ``storage_options`` (default: ``$RSEMBED_STORE_STORAGE_OPTIONS``) go to
        LanceDB unchanged (credentials, endpoint, region; see
        docs/object-storage.md); without them the cloud SDKs' usual environment
        variables apply (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ...). Secret
        values never appear in error messages. ``h3_res`` is the resolution of the
        ``h3`` column of new spaces (each space records its own). ``config`` is
        what computing on a miss needs and never enters a key, e.g.
        ``{"sources": {"s2-l2a": "/data/s2"}}`` for the local provider (the
        facade, :class:`~rsembed_store.store.Store`, reads it).

        ``create=True`` (the default) makes the store (its directory and its
        empty catalog) when none is there. Readers pass ``create=False``: then a
        URI that holds no store (a missing directory, or one without the
        catalog) raises :class:`NoStoreError` and nothing is created, so a
        mistyped path is reported instead of read as an empty store.
        """
        from .errors import NoStoreError, SpecError

        uri = os.fspath(uri) if uri is not None else default_uri()
        if isinstance(h3_res, bool) or not isinstance(h3_res, int) or not 0 <= h3_res <= 15:
            raise SpecError(f"h3_res={h3_res!r} is not accepted; use an integer H3 resolution in [0, 15]")
        options = check_options(storage_options) if storage_options is not None else storage_options_from_env()
        local = "://" not in uri

        def no_store(why: str) -> NoStoreError:
            err = NoStoreError(redact(
                f"no store at {uri!r} ({why}); create one with Store.open({uri!r}) and an ingest, or from the "
                f"shell with `rsembed-store --db {uri} ingest ...` (or `rsembed-store --db {uri} demo`)", options))
            err.uri, err.reason = uri, why  # for callers that word their own advice (the CLI)
            return err

        if local and not os.path.isdir(uri):
            if os.path.exists(uri):
                raise StoreError(f"cannot open the store at {uri!r}: it is a file, not a directory")
            if not create:
                raise no_store("the directory does not exist")
            os.makedirs(uri, exist_ok=True)
        from datetime import timedelta

        try:
            # every read of a table handle sees the latest commit of any process (the catalog
            # above all: a space another process adds must be found by this one)
            db = _lancedb().connect(uri, storage_options=options, read_consistency_interval=timedelta(0))
        except Exception as exc:  # lancedb raises plain exceptions for bad URIs
            raise StoreError(redact(f"cannot open the store at {uri!r}: {exc}", options)) from None
        store = cls(db, uri, options, h3_res, config)
        # the catalog marks a store: made at once when creating, so an empty store is one too. Its
        # handle is not kept: the first read opens it, at the version current then.
        try:
            exists = CATALOG in store._table_names()
            if not exists and create:
                store._create_table(CATALOG, catalog_schema())
                exists = True
        except Exception as exc:  # the object store refused the listing or the write
            raise StoreError(redact(f"cannot open the store at {uri!r}: {exc}", options)) from None
        if not exists:
            raise no_store("it holds no rsembed-store catalog" if local else "no catalog table there")
        store._opened()
        return store

    def _opened(self) -> None:
        """Called once :meth:`open` has checked the store (the facade reads its config here)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"

    # ------------------------------------------------------------ catalog

    def _table_names(self) -> List[str]:
        names, token = [], None
        while True:  # list_tables pages its answer
            page = self._db.list_tables(page_token=token, limit=1000)
            names.extend(page.tables)
            token = page.page_token
            if not token:
                return names

    def _catalog(self, create: bool = False):
        with self._lock:
            t = self._tables.get(CATALOG)
            if t is not None:
                return t
            if CATALOG in self._table_names():
                t = self._open_table(CATALOG)
            elif create:
                t = self._create_table(CATALOG, catalog_schema())
            else:
                return None
            self._tables[CATALOG] = t
            return t

    def _create_table(self, name: str, schema: pa.Schema):
        """Create a table, or open it when another process created it first."""
        try:
            return self._db.create_table(name, schema=schema, exist_ok=True)
        except Exception:
            # lost a creation race: the winner's table is there now, or in a moment
            return self._open_table(name)

    def _open_table(self, name: str, wait_s: float = 2.5):
        """Open a table that is listed, waiting out another process that is still
        creating it (its directory is listed before its first version is committed)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return self._db.open_table(name)
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def spaces(self) -> List[SpaceInfo]:
        """Every space in the catalog, sorted by name."""
        cat = self._catalog()
        if cat is None:
            return []
        # read again only when another commit changed the catalog (one manifest listing to know)
        with self._lock:
            base = self._datasets.get(CATALOG)
            if base is None:
                base = self._datasets[CATALOG] = cat.to_lance()
        version = base.latest_version
        cached = self._spaces_read
        if cached is not None and cached[0] == version:
            return list(cached[1])
        handle = copy.copy(base)
        handle._ds = base._ds.checkout_version(version)
        rows = handle.to_table().to_pylist()
        out = sorted((SpaceInfo(r["space"], r["model"], r["revision"], r["dim"], r["dtype"], r["metric"], r["kind"],
                                r["h3_res"]) for r in rows), key=lambda s: s.space)
        with self._lock:
            for s in out:
                self._spaces[s.space] = s
            self._spaces_read = (version, out)
        return list(out)

    def space_info(self, space: str) -> SpaceInfo:
        """The catalog entry of ``space``; :class:`UnknownSpaceError` names the spaces held."""
        with self._lock:
            info = self._spaces.get(space)
        if info is not None:
            return info
        for s in self.spaces():
            if s.space == space:
                return s
        held = [s.space for s in self.spaces()]
        raise UnknownSpaceError(f"the store at {self.uri!r} holds no space {space!r}; it holds {held}")

    def space_for(self, model: str, revision: Optional[str] = None) -> SpaceInfo:
        """The space of ``model`` (its registered revision unless ``revision`` is given)."""
        if revision is None:
            from .registry import model_info

            try:
                revision = model_info(model).revision
            except UnknownModelError:
                matches = [s for s in self.spaces() if s.model == model]
                if len(matches) == 1:
                    return matches[0]
                raise
        return self.space_info(space_name(model, revision))

    def ensure_space(self, model: str, revision: str, dim: int, *, metric: str = "cosine",
                     kind: Optional[str] = None, dtype: str = "float32", info: Optional[dict] = None) -> SpaceInfo:
        """Create the table and catalog entry of a space if absent; check its dimension if present."""
        name = space_name(model, revision)
        try:
            existing = self.space_info(name)
        except UnknownSpaceError:
            existing = None
        if existing is not None:
            if existing.dim != dim:
                raise VectorError(
                    f"space {name!r} holds {existing.dim}-d vectors; refusing {dim}-d vectors for it"
                )
            return existing
        if not isinstance(dim, int) or dim <= 0:
            raise VectorError(f"dimension {dim!r} must be a positive integer")
        with self._lock:
            table = self._create_table(name, row_schema(dim))
            self._tables[name] = table
            cat = self._catalog(create=True)
            entry = pa.Table.from_pylist(
                [
                    {
                        "space": name,
                        "model": model,
                        "revision": revision,
                        "dim": dim,
                        "dtype": dtype,
                        "metric": metric,
                        "kind": kind,
                        "h3_res": self.h3_res,
                        "info": json.dumps(info or {}, sort_keys=True),
                        "created_at": datetime.now(timezone.utc),
                    }
                ],
                schema=catalog_schema(),
            )
            # insert-if-absent: a concurrent creator's entry wins and is kept
            cat.merge_insert("space").when_not_matched_insert_all().execute(entry)
            self._spaces.pop(name, None)
        return self.space_info(name)

    def _table(self, space: str):
        with self._lock:
            t = self._tables.get(space)
            if t is None:
                self.space_info(space)  # raises UnknownSpaceError
                t = self._open_table(space)
                self._tables[space] = t
            return t

    def table(self, space: str):
        """The LanceDB table of ``space`` at its latest version (for advanced use; prefer the Store methods).

        The store also commits through the Lance dataset (index refreshes), which a
        LanceDB table handle does not see until it checks out the latest version.
        """
        t = self._table(space)
        t.checkout_latest()
        return t

    def dataset(self, space: str, version: Union[int, str, None] = None):
        """The Lance dataset of ``space`` at its latest version, or at a version number or tag.

        Every call returns a handle of its own, safe to use (and to mutate, e.g.
        ``optimize``) without a lock: a Lance dataset handle is not safe to share
        between threads (``checkout_latest`` on a shared handle raises "Already
        borrowed" in concurrent readers). Each handle is checked out from one base
        handle that is opened once per space and never moved, reusing its caches;
        asking for the latest version is one manifest listing (about 0.01 ms
        locally) and the checkout about 0.1 ms.
        """
        base = self._base_dataset(space)
        try:
            target = base.latest_version if version is None else version
            handle = copy.copy(base)
            handle._ds = base._ds.checkout_version(target)
            return handle
        except Exception as exc:
            if version is None:
                raise StoreError(redact(f"cannot read the latest version of space {space!r}: {exc}",
                                        self.storage_options)) from None
            raise StoreError(redact(f"space {space!r} has no version or tag {version!r}: {exc}",
                                    self.storage_options)) from None

    def latest_version(self, space: str) -> int:
        """The latest committed Lance version of ``space`` (any writer's), without a checkout."""
        return int(self._base_dataset(space).latest_version)

    def _base_dataset(self, space: str):
        """The per-space Lance handle that checkouts are made from; never checked out itself."""
        with self._lock:
            ds = self._datasets.get(space)
            if ds is None:
                ds = self._table(space).to_lance()
                self._datasets[space] = ds
            return ds

    # ------------------------------------------------------------ writing

    def put_many(self, embeddings: Iterable[Embedding]) -> PutResult:
        """Upsert embeddings on their key; validates everything before writing anything.

        Embeddings may belong to several spaces; each space is written in one
        :meth:`write_rows`. A NaN/inf vector, a wrong dimension or a malformed grid
        refuses the whole call with :class:`VectorError` and writes nothing.
        """
        from .registry import model_info

        by_model: Dict[tuple, List[Embedding]] = {}  # a space is a (model, revision): named once a group
        for e in embeddings:
            if not isinstance(e, Embedding):
                raise VectorError(f"put_many takes Embedding objects, got {type(e).__name__}")
            by_model.setdefault((e.request.model, e.request.revision), []).append(e)
        groups: Dict[str, List[Embedding]] = {}
        for items in by_model.values():
            groups.setdefault(items[0].space, []).extend(items)
        plans = []
        for space, items in groups.items():
            first = items[0]
            try:
                existing = self.space_info(space)
            except UnknownSpaceError:
                existing = None
            dim = existing.dim if existing else first.dim
            check_dim(items, dim, space)
            # the last embedding of a repeated key wins, as a sequence of upserts would
            unique = list({e.key: e for e in items}.values())
            plans.append((space, first, dim, existing, unique))
        inserted = updated = 0
        counts: Dict[str, int] = {}
        for space, first, dim, existing, unique in plans:
            if existing is None:
                try:
                    minfo = model_info(first.model)
                    metric, kind, dtype = minfo.metric, minfo.kind, minfo.grid_dtype
                    extra = minfo.to_dict() if minfo.revision == first.request.revision else {}
                except UnknownModelError:
                    metric, kind, dtype, extra = "cosine", None, "float32", {}
                self.ensure_space(first.model, first.request.revision, dim, metric=metric, kind=kind,
                                  dtype=dtype, info=extra)
            table = embeddings_to_table(unique, dim, self.space_info(space).h3_res)
            ins, upd = self.write_rows(space, table)
            inserted += ins
            updated += upd
            counts[space] = len(unique)
        return PutResult(inserted=inserted, updated=updated, spaces=counts)

    def write_rows(self, space: str, table: pa.Table, *, update: bool = True, key_index: bool = True) -> tuple:
        """Upsert rows already in the space's layout (``space.row_schema``, unique keys) on their key;
        ``update=False`` inserts only keys the space lacks. Returns ``(inserted, updated)``.
        ``key_index=False`` leaves the key index as it is (a bulk writer refreshes it once at the end
        with :meth:`_ensure_key_index`). The one write path of every row (put_many, bulk import):
        locked appends on a local store, merge-inserts on an object store (:mod:`.writes`)."""
        t = self._table(space)
        if self._locks_writes():
            with self._write_lock(space):
                ins, upd = writes.append_or_merge(self.dataset(space), t, table, update, self._locks.prefixes(
                    space, lambda: self._known_key_prefixes(space)))
        else:
            ins, upd = writes.merge(t, table, update, use_index=False)
        if key_index:
            # its statistics cost ms: checked on a process's first write, then per SLACK // 5 rows
            done = self._rows_since_key_check.get(space)
            if done is None or done + ins >= max(1, KEY_INDEX_SLACK_ROWS // 5):
                self._rows_since_key_check[space] = 0
                self._ensure_key_index(space)
            else:
                self._rows_since_key_check[space] = done + ins
        return ins, upd

    def _locks_writes(self) -> bool:
        """Whether writers take a lock per space (a local store) instead of merge-inserting every row."""
        return self._locks is not None and self._append_new_keys

    def _write_lock(self, space: str):
        """The write lock of ``space`` for a ``with`` block (re-entrant in a thread); none on an object store."""
        return self._locks.hold(space) if self._locks_writes() else contextlib.nullcontext()

    def _ensure_key_index(self, space: str) -> None:
        """Keep the key index useful (:func:`.scalar_indexes.ensure_key_index`)."""
        scalar_indexes.ensure_key_index(self._table(space), lambda: self.dataset(space), space,
                                        KEY_INDEX_SLACK_ROWS)

    def create_scalar_indexes(self, space: str) -> List[str]:
        """(Re)build the scalar indexes of a space on the columns searches filter by."""
        return scalar_indexes.create_all(self.table(space), SCALAR_INDEXES)

    # ------------------------------------------------------------ reading

    def _view(self, space: str):
        """A faster reader of ``space``'s latest rows (``lookup``/``contains``), or None for Lance.
        The facade answers from its serving tier."""
        return None

    def _space_extras(self, space: str) -> dict:
        """More to say about ``space`` in :meth:`stats` (the facade adds its serving tier)."""
        return {}

    def _known_key_prefixes(self, space: str) -> Optional[tuple]:
        """``(sorted 64-bit key prefixes, fragment ids, version)`` of ``space`` already in memory, for
        writers (:meth:`writes.SpaceLocks.prefixes`); None here (the facade offers its serving tier's)."""
        return None

    def lookup_many(self, keys: Sequence[str], *, space: Optional[str] = None,
                    version: Union[int, str, None] = None, columns: Optional[List[str]] = None) -> List[Optional[Embedding]]:
        """The stored embeddings of ``keys``, in order, ``None`` for a miss.

        One query per space (``space`` given: exactly one). Never computes. A key asked
        for twice gets the same Embedding object twice.
        """
        keys = check_keys(keys)
        if not keys:
            return []
        spaces = [space] if space is not None else [s.space for s in self.spaces()]
        unique = keys if len(set(keys)) == len(keys) else list(dict.fromkeys(keys))
        found: Dict[str, Embedding] = {}
        for sp in spaces:
            wanted = [k for k in unique if k not in found] if found else unique
            view = self._view(sp) if version is None and columns is None else None
            if view is not None:
                got = view.lookup(wanted)
                if len(spaces) == 1 and len(unique) == len(keys):
                    return got  # the common case: one space, no key twice, already in order
                found.update((k, e) for k, e in zip(wanted, got) if e is not None)
            else:
                ds = self.dataset(sp, version)
                tbl = ds.to_table(filter=pc.field("key").isin(pa.array(wanted, pa.string())),
                                  columns=columns or EMBEDDING_COLUMNS)
                for e in table_to_embeddings(tbl):
                    found[e.key] = e
            if len(found) == len(unique):
                break
        return [found.get(k) for k in keys]


    def contains_many(self, keys: Sequence[str], *, space: str) -> List[bool]:
        """Which keys are stored in ``space`` (reads only the key column)."""
        keys = check_keys(keys)
        if not keys:
            return []
        view = self._view(space)
        if view is not None:
            return view.contains(keys)
        ds = self.dataset(space)
        tbl = ds.to_table(filter=pc.field("key").isin(pa.array(list(set(keys)), pa.string())), columns=["key"])
        held = set(tbl.column("key").to_pylist())
        return [k in held for k in keys]

    def count(self, space: str, *, version: Union[int, str, None] = None) -> int:
        return self.dataset(space, version).count_rows()

    def to_arrow(self, space: str, *, version: Union[int, str, None] = None,
                 columns: Optional[List[str]] = None, filter: Optional[str] = None) -> pa.Table:
        """A space's rows as an Arrow table (optionally as of a version or tag)."""
        return self.dataset(space, version).to_table(columns=columns, filter=filter)

    # ------------------------------------------------------------ time travel

    def versions(self, space: str) -> List[dict]:
        """Every version of a space: ``{"version", "timestamp", "tags"}``, oldest first."""
        ds = self.dataset(space)
        tags: Dict[int, List[str]] = {}
        for name, meta in ds.tags.list().items():
            tags.setdefault(meta["version"], []).append(name)
        out = []
        for v in ds.versions():
            ts = v.get("timestamp")
            out.append({"version": v["version"], "timestamp": ts.isoformat() if hasattr(ts, "isoformat") else ts,
                        "tags": sorted(tags.get(v["version"], []))})
        return out

    def tag(self, space: str, name: str, version: Optional[int] = None) -> int:
        """Tag a version of a space (the latest by default); returns the version tagged."""
        ds = self.dataset(space)
        version = ds.version if version is None else int(version)
        try:
            ds.tags.create(name, version)
        except Exception as exc:
            raise StoreError(redact(f"cannot tag version {version} of space {space!r} as {name!r}: {exc}",
                                    self.storage_options)) from None
        return version

    # ------------------------------------------------------------ stats

    def stats(self) -> dict:
        """Per space: rows, pooled/grid rows, versions, bytes, indexes (and what :meth:`_space_extras`
        adds); see :func:`rsembed_store.stats.store_stats`, the one report, shared with the command
        line's light path that reads a local store without LanceDB."""
        from .stats import store_stats

        return store_stats(self)
