"""What every subcommand shares: the --json flag, JSON printing, and the lazily opened store."""

from __future__ import annotations

import json
from typing import Any

import click

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


class Context:
    """What every subcommand needs: the store URI (opened lazily)."""

    def __init__(self, db: str):
        self.db = db
        self._store = None

    @property
    def store(self):
        if self._store is None:
            from ..store import Store

            self._store = Store.open(self.db)
        return self._store
