"""Subcommands of ``rsembed-store`` that are larger than a few lines, one module each."""

from __future__ import annotations

import importlib

# module name -> the click command object it defines
_COMMANDS = {
    "ingest": "ingest",
    "demo": "demo",
    "get": "get",
    "sql": "sql",
    "serve": "serve",
    "search": "search",
    "change": "change",
    "maintain": "maintain",
    "importing": "import_cmd",
    "exporting": "export_cmd",
    "view": "view",
}


def register(group) -> None:
    """Attach every subcommand module's command to ``group``."""
    for name, attr in _COMMANDS.items():
        group.add_command(getattr(importlib.import_module(f"{__name__}.{name}"), attr))
