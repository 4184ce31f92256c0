"""The bulk import's fast write path: plain appends into a space that was empty when the import began.

Every write of the store goes through a merge-insert on the key, which joins the
new rows against the whole key column of the space (measured 5x the cost of an
append for a 600k-row import). An import into an *empty* space does not need that
join: the only keys the space can hold are the ones this import wrote, so a set of
them (their first 64 bits, :func:`prefixes`) decides each new row exactly; a row
whose prefix is already in the set (a key repeated across batches of the file, or
a 64-bit collision, about 1 in 10^7 for 10^6 rows) goes through the merge-insert,
which compares whole keys.

Other writers: an append carries no key check, so a process that writes the same
space while the import runs could add a key the import also appends. The appender
sees every foreign commit (the table version moves by more than its own appends);
from then on it merge-inserts, and at the end :func:`remove_repeats` finds keys held
twice and keeps one row of each (the same key is the same computation, so either
row is the answer). Between that commit and the end of the import a reader can see
such a key twice; with no other writer (the usual bulk load) nothing changes.
"""

from __future__ import annotations

import logging
import threading
from typing import Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

logger = logging.getLogger(__name__)


def prefixes(keys) -> np.ndarray:
    """The first 16 hex digits (64 bits) of each 64-digit key, as uint64, without a Python loop."""
    keys = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    keys = keys.cast(pa.string())
    n = len(keys)
    if not n:
        return np.zeros(0, np.uint64)
    offsets = np.frombuffer(keys.buffers()[1], np.int32)[keys.offset:keys.offset + n]
    data = np.frombuffer(keys.buffers()[2], np.uint8)
    chars = data[offsets[:, None] + np.arange(16)]
    digits = np.where(chars >= ord("a"), chars - (ord("a") - 10), chars - ord("0")).astype(np.uint64)
    out = np.zeros(n, np.uint64)
    for k in range(16):
        out = (out << np.uint64(4)) | digits[:, k]
    return out


def _held(seen: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Which of ``p`` are in the sorted ``seen`` (binary search: numpy's isin and union1d took
    seconds on uint64 arrays of 10^5..10^6 values, searchsorted + insert take milliseconds)."""
    if not len(seen):
        return np.zeros(len(p), bool)
    i = np.searchsorted(seen, p)
    return seen[np.minimum(i, len(seen) - 1)] == p


class Appender:
    """Writes the checked, keyed batches of one import into a space that was empty when it began.

    Not for several threads at once: the importer calls :meth:`write` from its one writer
    thread, in input order."""

    def __init__(self, store, space: str):
        self.store, self.space = store, space
        self.table = store._table(space)
        self.table.checkout_latest()
        self.version = self.table.version
        self.seen = np.zeros(0, np.uint64)  # sorted prefixes of every key this import wrote
        self.foreign = False  # another writer committed to the space during the import
        self._lock = threading.Lock()

    def write(self, rows: pa.Table) -> Tuple[int, int]:
        """Append ``rows`` (unique keys) whose key the import has not written yet; ``(inserted, 0)``."""
        # on a local store the space's write lock (rsembed_store.writes) is held for the whole
        # write: no other writer commits meanwhile, so a foreign commit shows as a version that
        # moved since this import's last write
        with self._lock, self.store._write_lock(self.space):
            locked = self.store._locks_writes()
            if locked and not self.foreign and self.store.latest_version(self.space) != self.version:
                self._saw_foreign()
            p = prefixes(rows.column("key"))
            again = _held(self.seen, p)
            inserted = 0
            if self.foreign:
                inserted += self.store.write_rows(self.space, rows, update=False, key_index=False)[0]
            else:
                commits = 0  # the versions this write makes (a merge-insert commits even when it inserts nothing)
                fresh = rows.filter(pa.array(~again)) if again.any() else rows
                if fresh.num_rows:
                    self.table.add(fresh)
                    inserted += fresh.num_rows
                    commits += 1
                if again.any():  # a repeated key (or prefix): let the merge-insert compare whole keys
                    inserted += self.store.write_rows(self.space, rows.filter(pa.array(again)), update=False,
                                                      key_index=False)[0]
                    commits += 1
                if locked:
                    version = self.store.latest_version(self.space)
                else:
                    version = self.table.version
                    if version != self.version + commits:  # someone else committed in between
                        self._saw_foreign()
                self.version = version
            p.sort()
            self.seen = np.insert(self.seen, np.searchsorted(self.seen, p), p)
            return inserted, 0

    def _saw_foreign(self) -> None:
        self.foreign = True
        logger.warning("space %s: another writer committed during the import; the rest is "
                       "merge-inserted and repeated keys are removed at the end", self.space)

    def finish(self) -> int:
        """After the last write: remove keys held twice if another writer was seen; the rows removed."""
        if not self.foreign:
            return 0
        return remove_repeats(self.store, self.space)


def remove_repeats(store, space: str) -> int:
    """Keep one row of every key the space holds more than once; returns how many rows were removed."""
    ds = store.dataset(space)
    keys = ds.to_table(columns=["key"]).column("key")
    counts = pa.table({"key": keys}).group_by("key").aggregate([("key", "count")])
    twice = counts.filter(pc.greater(counts.column("key_count"), 1)).column("key")
    if not len(twice):
        return 0
    removed = 0
    for start in range(0, len(twice), 1000):
        chunk = twice.slice(start, 1000).to_pylist()
        quoted = ",".join(f"'{k}'" for k in chunk if isinstance(k, str) and k.isalnum())
        rows = ds.to_table(filter=f"key IN ({quoted})")
        first = pa.table({"key": rows.column("key"), "i": pa.array(np.arange(rows.num_rows))}).group_by(
            "key", use_threads=False).aggregate([("i", "min")]).column("i_min")
        keep = rows.take(pa.array(np.sort(first.to_numpy())))
        store._table(space).delete(f"key IN ({quoted})")
        store.write_rows(space, keep, update=False, key_index=False)
        removed += rows.num_rows - keep.num_rows
        ds = store.dataset(space)
    return removed
