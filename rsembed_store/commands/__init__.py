"""The subcommands of ``rsembed-store``, one module each; :func:`register` attaches them.

Each module is imported when the group is built, so a command module imports
only click and the light parts of the package at its top; what a command needs
to run (the store, LanceDB, DuckDB, a model) it imports in its body.
"""

from __future__ import annotations

import importlib

# module name -> the click command object it defines
_COMMANDS = {
    "demo": "demo",
    "ingest": "ingest",
    "get": "get",
    "search": "search",
    "change": "change",
    "sql": "sql",
    "stats": "stats",
    "models": "models",
    "maintain": "maintain",
    "serve": "serve",
    "importing": "import_cmd",
    "exporting": "export_cmd",
    "view": "view",
}


def register(group) -> None:
    """Attach every subcommand to ``group``, each with the shared store options."""
    from .options import share

    for name, attr in _COMMANDS.items():
        group.add_command(share(getattr(importlib.import_module(f"{__name__}.{name}"), attr)))
