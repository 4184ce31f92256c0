"""What every subcommand shares: JSON printing, exit codes, and the lazily opened store.

The options themselves (``--db``, ``--json`` ...) live in :mod:`rsembed_store.commands.options`.
"""

from __future__ import annotations

from contextlib import contextmanager

import json
from typing import Any, Dict, Mapping, Optional, Sequence

import click

#: exit codes of commands that compute requests (0 success, 1 a miss or a non-2xx answer,
#: 2 bad input or an error: click's usage errors and the CLI's own)
EXIT_SOME_FAILED = 3  # some requests failed; the others are stored
EXIT_ALL_FAILED = 4  # every request that had to be computed failed

def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


class Context:
    """What every subcommand needs: the store URI and its storage options (opened lazily).

    The shared options (:mod:`rsembed_store.commands.options`) fill it wherever they are
    given, before or after the subcommand's name: ``db``, ``storage_option_items``,
    ``limit_flags`` and ``as_json``.

    Commands that only read use :attr:`store`, which never creates a store: a
    ``--db`` where none exists is a :class:`~rsembed_store.errors.NoStoreError`
    that says how to make one. Commands that write use :attr:`writable_store`.
    """

    def __init__(self, db: Optional[str] = None, storage_options: Sequence[str] = (),
                 limits: Optional[Mapping[str, int]] = None, as_json: bool = False):
        import os

        from .options import DB_ENV, DEFAULT_DB

        self.db = db or os.environ.get(DB_ENV) or DEFAULT_DB
        self.storage_option_items = tuple(storage_options)
        self.limit_flags = dict(limits or {})
        self.as_json = as_json
        self._store = None

    @property
    def limits(self):
        """The size limits in force: the ``--max-*`` flags over the environment over the defaults."""
        from ..limits import Limits

        return Limits.from_config({"limits": self.limit_flags})

    @property
    def storage_options(self) -> Optional[Dict[str, str]]:
        """The ``--storage-option`` items as a dict (None when none were given)."""
        from ..store import parse_storage_options

        items = self.storage_option_items
        return parse_storage_options(items, source="--storage-option") if items else None

    def open_store(self, config: Optional[Mapping] = None, *, create: bool = True):
        """A new Store at ``--db`` with the group's storage options and ``config`` (plus the
        ``--max-*`` size limits, which every computation through the store then obeys);
        ``create=False`` refuses a ``--db`` that holds no store."""
        from ..errors import NoStoreError
        from ..store import Store

        config = dict(config or {})
        if self.limit_flags:
            config["limits"] = {**(config.get("limits") or {}), **self.limit_flags}
        try:
            return Store.open(self.db, storage_options=self.storage_options, config=config or None, create=create)
        except NoStoreError as exc:
            raise self._no_store(exc) from None

    def _no_store(self, exc):
        """A :class:`NoStoreError` worded for the shell: how to make a store at ``--db``."""
        from ..errors import NoStoreError
        from ..store import redact

        reason = getattr(exc, "reason", "nothing there")
        return NoStoreError(redact(
            f"no store at {self.db!r} ({reason}). Create one with `rsembed-store --db {self.db} ingest "
            f"-m MODEL --region W,S,E,N --year YEAR --source s2-l2a=DIR` (or try `rsembed-store --db {self.db} "
            "demo`), or point --db (or $RSEMBED_STORE_DB) at an existing store", self.storage_options))

    def store_stats(self) -> dict:
        """``Store.stats()`` of the store at ``--db``; a local store is read through Lance alone
        (:class:`~rsembed_store.lance_reader.LanceReader`), so that ``stats`` does not wait for
        LanceDB to import. The report is the same function either way."""
        from ..errors import NoStoreError
        from ..stats import serving_summary, store_stats

        if self._store is None and "://" not in self.db and not self.storage_option_items:
            from ..lance_reader import LanceReader
            from ..query.serving import Serving

            try:
                reader = LanceReader.open(self.db)
            except NoStoreError as exc:
                raise self._no_store(exc) from None
            serving = Serving(reader, reader.config)  # the tiers saved beside the spaces, as Store.stats reads them
            return store_stats(reader, extras=lambda space: {"serving": serving_summary(serving, space)})
        return self.store.stats()

    @property
    def store(self):
        """The store at ``--db`` for reading: never created here."""
        if self._store is None:
            self._store = self.open_store(create=False)
        return self._store

    @property
    def writable_store(self):
        """The store at ``--db`` for writing: created (empty) when absent."""
        if self._store is None:
            self._store = self.open_store(create=True)
        return self._store


@contextmanager
def row_bar(total, desc: str, enabled: bool):
    """A progress callback (rows done) drawing a tqdm bar on stderr when it is a terminal and
    ``enabled``, closed on leaving the block; else None (silent)."""
    import sys

    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="row", unit_scale=True, file=sys.stderr, dynamic_ncols=True)
    try:
        yield bar.update
    finally:
        bar.close()
