"""Scalar indexes of a space's Lance table: the key index writers keep fresh, and the filter columns'.

Apart from :mod:`.storage` so the storage core stays readable; both functions
take the LanceDB table (and, for the key index, a way to get its dataset).
"""

from __future__ import annotations

import logging
import warnings
from typing import Callable, List, Mapping

logger = logging.getLogger("rsembed_store.store")


def create_scalar(table, column: str, kind: str, *, replace: bool) -> None:
    """Build a scalar index (BTREE or BITMAP) on one column."""
    with warnings.catch_warnings():  # create_scalar_index is the stable spelling across lancedb 0.2x-0.4x
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", category=Warning)
        table.create_scalar_index(column, index_type=kind, replace=replace)


def create_all(table, kinds: Mapping[str, str]) -> List[str]:
    """(Re)build an index of each ``column: kind`` of ``kinds``; the columns built."""
    for column, kind in kinds.items():
        create_scalar(table, column, kind, replace=True)
    return list(kinds)


def ensure_key_index(table, dataset: Callable[[], object], space: str, slack_rows: int) -> None:
    """Keep the key index useful: build it on a space's first write, and fold new rows into it once
    they are a large share of the table (more than ``slack_rows`` and a tenth of the indexed rows):
    look-ups scan the rows an index does not cover, so a stale key index makes every hit slow."""
    try:
        table.checkout_latest()
        idx = next((i for i in table.list_indices() if list(i.columns) == ["key"]), None)
        if idx is None:
            create_scalar(table, "key", "BTREE", replace=False)
            return
        stats = table.index_stats(idx.name)
        unindexed = int(getattr(stats, "num_unindexed_rows", 0) or 0)
        indexed = int(getattr(stats, "num_indexed_rows", 0) or 0)
        if unindexed > max(slack_rows, indexed // 10):
            dataset().optimize.optimize_indices(index_names=[idx.name])
    except Exception as exc:  # best effort: a concurrent writer may be doing the same; maintain() repairs
        logger.warning("space %s: the key index was not refreshed after a write (%s: %s); look-ups stay "
                       "correct, and `rsembed-store maintain` refreshes it", space, type(exc).__name__, exc)
