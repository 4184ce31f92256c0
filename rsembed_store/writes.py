"""Writes to a LOCAL store: a cross-process lock per space, then append the new keys.

A merge-insert on the key joins the batch against the whole key column of the
space (about 200 ms at 10^6 rows, whatever the batch size), and it must take the
scanning join: the indexed one skips Lance's primary-key conflict check and
concurrent writers then store a new key twice. On a local directory every writer
of this package can instead take one exclusive lock per space
(:func:`space_lock`, ``fcntl.flock`` on ``<store>/_locks/<space>.lock``), and
under it

1. find which of the batch's keys the space holds at its latest version: from
   Lance (:func:`held_keys`, a filtered read the key index answers, about 25 ms
   for 2,000 keys at 10^6 rows), or, once a process has written the space
   PREFIXES_AFTER times, from its :class:`KeyPrefixes` (the first 64 bits of
   every key, read once, about 0.4 s at 10^6 rows; only prefix hits are then
   looked up in Lance),
2. append the rows whose keys it lacks (``LanceDataset.insert``: no join), and
3. merge-insert only the rows whose keys it holds (updates).

No two writers of one space are ever between steps 1 and 3 at once, so a new key
cannot be appended twice. Object stores have no such lock, and keep the
merge-insert of every row (Lance's conflict check makes it safe there).

The lock is advisory: it binds the writers of this package (``Storage.write_rows``
and the bulk import's appender), not a program that writes the Lance table by
other means. ``flock`` locks belong to an open file description, so each holder
opens the file itself: two threads of one process exclude each other as two
processes do, and the lock is released when the file is closed, also on an error
(and by the kernel when a holder dies).
"""

from __future__ import annotations

import os
import re
import threading
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, Optional, Tuple

import numpy as np

import pyarrow as pa
import pyarrow.compute as pc

from .errors import StoreError

try:
    import fcntl
except ImportError:  # not POSIX: no local lock, every write merge-inserts (Storage.write_rows)
    fcntl = None

LOCK_DIR = "_locks"
# writes of a space by one process before it keeps the space's key prefixes: reading every key
# once costs about as much as 15 look-ups in Lance, so a process that writes a space a few times
# only never pays it
PREFIXES_AFTER = 8
RECENT_MAX = 65_536  # prefixes kept apart from the large sorted run before they are merged into it
_SAFE = re.compile(r"^[A-Za-z0-9_.\-]+$")


def lock_path(root: str, space: str) -> str:
    """The lock file of ``space`` in the local store at ``root``."""
    if not _SAFE.match(space) or space.startswith("."):
        raise StoreError(f"space name {space!r} cannot name a lock file; use letters, digits, '_', '.' and '-'")
    return os.path.join(root, LOCK_DIR, f"{space}.lock")


@contextmanager
def space_lock(root: str, space: str) -> Iterator[None]:
    """Hold the exclusive write lock of ``space`` in the local store at ``root`` for the block.

    Blocks while another writer holds it (the kernel wakes the next one as soon as it is
    released); released when the block ends, also when it raises.
    """
    path = lock_path(root, space)
    try:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise StoreError(f"cannot open the write lock {path!r} of space {space!r}: {exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise StoreError(f"cannot take the write lock {path!r} of space {space!r}: {exc}") from None
        yield
    finally:
        os.close(fd)  # closing the only descriptor of the file description releases the lock


class SpaceLocks:
    """The write locks of a local store's spaces as one store handle takes them (re-entrant within
    a thread: a writer that holds a space's lock may call another that takes it), and the
    :class:`KeyPrefixes` of each space, used under its lock only. Two handles of one store do
    not share this: a thread that writes through one while holding the other's lock waits forever."""

    def __init__(self, root: str):
        self.root = root
        self._held = threading.local()  # .spaces: the spaces whose lock this thread holds
        self._prefixes: Dict[str, "KeyPrefixes"] = {}
        self._writes: Dict[str, int] = {}
        self._mutex = threading.Lock()

    @contextmanager
    def hold(self, space: str) -> Iterator[None]:
        held = self._held.__dict__.setdefault("spaces", set())
        if space in held:
            yield
            return
        with space_lock(self.root, space):
            held.add(space)
            try:
                yield
            finally:
                held.discard(space)

    def held(self) -> set:
        """The spaces whose lock the calling thread holds."""
        return set(self._held.__dict__.get("spaces", ()))

    def prefixes(self, space: str, seed: Optional[Callable[[], Optional[tuple]]] = None) -> Optional["KeyPrefixes"]:
        """The key prefixes of ``space`` once this process has written it PREFIXES_AFTER times
        (reading every key once pays off over many writes, not over a few), else None.

        ``seed()`` may offer them at once, as ``(sorted prefixes, fragment ids, version)`` of keys
        already in memory (the serving tier's key index): then the first write uses them."""
        with self._mutex:
            kp = self._prefixes.get(space)
            if kp is None:
                known = seed() if seed is not None else None
                if known is not None:
                    kp = self._prefixes[space] = KeyPrefixes.seeded(*known)
                    return kp
                n = self._writes[space] = self._writes.get(space, 0) + 1
                if n <= PREFIXES_AFTER:
                    return None
                kp = self._prefixes[space] = KeyPrefixes()
            return kp


def held_keys(dataset, keys: pa.Array) -> pa.Array:
    """A boolean mask: which of ``keys`` (unique) the Lance ``dataset`` holds at its checked-out version."""
    if not len(keys):
        return pa.array([], pa.bool_())
    found = dataset.to_table(columns=["key"], filter=pc.field("key").isin(keys)).column("key")
    return pc.is_in(keys, value_set=found.combine_chunks() if found.num_chunks else pa.array([], pa.string()))


class KeyPrefixes:
    """The first 64 bits of every key a space's fragments have held, kept per process and
    caught up under the space's lock by reading only the fragments it has not read yet.

    It answers "may the space hold this key?" with no false negative: every fragment of the
    latest version is read before an answer (a rewritten fragment, after an update or a
    compaction, has a new id and is read again), and keys never leave the set (a deleted key
    only sends its row down the merge-insert path, which compares whole keys). A 64-bit
    prefix shared by two keys (about 1 in 10^7 at 10^6 keys) does the same.
    """

    def __init__(self) -> None:
        self._seen_fragments: set = set()
        self._sorted = np.zeros(0, np.uint64)  # 8 bytes a key
        self._recent = np.zeros(0, np.uint64)
        self._version = 0

    @classmethod
    def seeded(cls, prefixes: np.ndarray, fragments, version: int) -> "KeyPrefixes":
        """Prefixes known already: ``prefixes`` (sorted uint64) of every key in ``fragments`` (ids) of
        ``version``; :meth:`catch_up` reads only the fragments added or rewritten since."""
        kp = cls()
        kp._sorted = np.asarray(prefixes, dtype=np.uint64)
        kp._seen_fragments = set(int(f) for f in fragments)
        kp._version = int(version)
        return kp

    def catch_up(self, dataset) -> None:
        """Read the keys of the fragments of ``dataset`` (the latest version) not read yet."""
        if dataset.version < self._version:  # the table was made again (versions start over)
            self.__init__()
        self._version = dataset.version
        fresh = [f for f in dataset.get_fragments() if f.fragment_id not in self._seen_fragments]
        if not fresh:
            return
        keys = dataset.scanner(columns=["key"], fragments=fresh).to_table().column("key").combine_chunks()
        self._add(keys.filter(pc.equal(pc.utf8_length(keys), 64)) if len(keys) else keys)
        self._seen_fragments.update(f.fragment_id for f in fresh)

    def note_append(self, dataset, keys: pa.Array) -> None:
        """After this writer appended ``keys`` under the lock (``dataset`` now at the version of the
        append): mark the fragments that appeared as read, without reading them. Under the lock
        only this writer adds keys; any other new fragment is maintenance's rewrite (compaction)
        of rows of fragments already read."""
        self._seen_fragments.update(f.fragment_id for f in dataset.get_fragments())
        self._version = dataset.version
        self._add(keys.filter(pc.equal(pc.utf8_length(keys), 64)))

    def _add(self, keys: pa.Array) -> None:
        p = _prefixes(keys)
        if not len(p):
            return
        p.sort()
        if len(p) > RECENT_MAX // 4:  # a large read (the first one): straight into the large run
            self._sorted = _merged(self._sorted, p)
            return
        # a writer's own batch goes to a small sorted run, merged into the large one now and
        # then, so an append costs a copy of the small run, not of every key held
        self._recent = _merged(self._recent, p)
        if len(self._recent) > max(RECENT_MAX, len(self._sorted) // 8):
            self._sorted = _merged(self._sorted, self._recent)
            self._recent = np.zeros(0, np.uint64)

    def may_hold(self, keys: pa.Array) -> np.ndarray:
        """Which of ``keys`` may be held (True) and which surely are not (False)."""
        p = _prefixes(keys)
        return _member(self._sorted, p) | _member(self._recent, p)


def _merged(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two sorted runs as one (timsort merges two runs in linear time; repeats are harmless)."""
    if not len(a):
        return b
    out = np.concatenate([a, b])
    out.sort(kind="stable")
    return out


def _member(sorted_values: np.ndarray, p: np.ndarray) -> np.ndarray:
    if not len(sorted_values):
        return np.zeros(len(p), bool)
    i = np.minimum(np.searchsorted(sorted_values, p), len(sorted_values) - 1)
    return sorted_values[i] == p


_HEX = np.zeros(256, np.uint8)  # a byte's value as a hex digit; other bytes fold in as their low 4 bits
_HEX[:] = np.arange(256) & 0xF
_HEX[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_HEX[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16)
_HEX[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)


def _prefixes(keys: pa.Array) -> np.ndarray:
    """The first 16 characters of each key (of at least 16 bytes) as a uint64, hex digits decoded
    (any other byte folds in deterministically, so equal keys always give equal prefixes)."""
    n = len(keys)
    if not n:
        return np.zeros(0, np.uint64)
    keys = keys.cast(pa.string())
    offsets = np.frombuffer(keys.buffers()[1], np.int32)[keys.offset:keys.offset + n + 1]
    data = np.frombuffer(keys.buffers()[2], np.uint8)
    if offsets[-1] - offsets[0] == 64 * n and (np.diff(offsets) == 64).all():  # the usual: 64-digit keys
        chars = data[offsets[0]:offsets[-1]].reshape(n, 64)[:, :16]
    else:
        chars = data[offsets[:-1, None] + np.arange(16, dtype=np.int32)]
    digits = _HEX[chars]  # (n, 16) uint8
    packed = np.ascontiguousarray((digits[:, 0::2] << 4) | digits[:, 1::2])  # (n, 8) bytes, big-endian
    return packed.view(">u8").ravel().astype(np.uint64)


def merge(table_handle, rows: pa.Table, update: bool, *, use_index: bool) -> Tuple[int, int]:
    """One merge-insert of ``rows`` on the key; ``(inserted, updated)``.

    ``use_index=False`` wherever writers may run at once unlocked (object stores): the
    indexed join skips Lance's primary-key conflict check, and concurrent writers then
    duplicate new keys (tests/test_store.py proves both)."""
    m = table_handle.merge_insert("key").use_index(use_index)
    if update:
        m = m.when_matched_update_all()
    res = m.when_not_matched_insert_all().execute(rows)
    return int(getattr(res, "num_inserted_rows", 0) or 0), int(getattr(res, "num_updated_rows", 0) or 0)


def append_or_merge(dataset, table_handle, rows: pa.Table, update: bool,
                    prefixes: Optional[KeyPrefixes] = None) -> Tuple[int, int]:
    """Under the space's lock (:func:`space_lock`): append the ``rows`` whose keys the latest
    version (``dataset``, checked out after the lock was taken) lacks, and merge-insert the rest
    (only when ``update``); ``(inserted, updated)``. ``rows`` have unique keys.

    With ``prefixes`` (the space's :class:`KeyPrefixes`, caught up here), only keys whose prefix
    it holds are looked up in Lance; without, every key is."""
    keys = rows.column("key").combine_chunks()
    maybe_checked = prefixes is not None and len(keys) and pc.all(pc.equal(pc.utf8_length(keys), 64)).as_py()
    if maybe_checked:
        prefixes.catch_up(dataset)
        maybe = prefixes.may_hold(keys)
        held = np.zeros(len(keys), bool)
        if maybe.any():
            held[maybe] = held_keys(dataset, keys.filter(pa.array(maybe))).to_numpy(zero_copy_only=False)
        held = pa.array(held)
    else:
        held = held_keys(dataset, keys)
    old = rows.filter(held)
    new = rows.filter(pc.invert(held)) if old.num_rows else rows
    inserted = updated = 0
    if new.num_rows:
        dataset.insert(new)  # an append: no join; ``dataset`` moves to the version it commits
        inserted += new.num_rows
        if prefixes is not None and maybe_checked:
            prefixes.note_append(dataset, new.column("key").combine_chunks())
    if old.num_rows and update:
        # the indexed join is safe here: the lock stands in for the concurrent check it skips.
        # A key deleted since the look-up is inserted again, as an upsert should.
        ins, upd = merge(table_handle, old, True, use_index=True)
        inserted, updated = inserted + ins, updated + upd
    return inserted, updated
