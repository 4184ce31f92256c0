"""What every subcommand shares: the --json flag, JSON printing, and the lazily opened store."""

from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Optional, Sequence

import click

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


class Context:
    """What every subcommand needs: the store URI and its storage options (opened lazily)."""

    def __init__(self, db: str, storage_options: Sequence[str] = (), limits: Optional[Mapping[str, int]] = None):
        self.db = db
        self._option_items = tuple(storage_options)
        self._limit_flags = dict(limits or {})
        self._store = None

    @property
    def limits(self):
        """The size limits in force: the ``--max-*`` flags over the environment over the defaults."""
        from ..limits import Limits

        return Limits.from_config({"limits": self._limit_flags})

    @property
    def storage_options(self) -> Optional[Dict[str, str]]:
        """The ``--storage-option`` items as a dict (None when none were given)."""
        from ..store import parse_storage_options

        items = self._option_items
        return parse_storage_options(items, source="--storage-option") if items else None

    def open_store(self, config: Optional[Mapping] = None):
        """A new Store at ``--db`` with the group's storage options and ``config`` (plus the
        ``--max-*`` size limits, which every computation through the store then obeys)."""
        from ..store import Store

        config = dict(config or {})
        if self._limit_flags:
            config["limits"] = {**(config.get("limits") or {}), **self._limit_flags}
        return Store.open(self.db, storage_options=self.storage_options, config=config or None)

    @property
    def store(self):
        if self._store is None:
            self._store = self.open_store()
        return self._store
