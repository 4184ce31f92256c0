"""The ``rsembed-store`` command line: the group and its shared options.

Each subcommand is one module of ``rsembed_store/commands/``; the options more
than one command takes live in :mod:`rsembed_store.commands.options`. The store
options (``--db``, ``--storage-option``, ``--max-*``) and ``--json`` are taken
before the subcommand and on every subcommand. Every command that prints
results takes ``--json`` and then prints exactly one JSON document on stdout
(progress and notes go to stderr).

Importing this module stays light (no lancedb, duckdb, rasterio or torch): a
command imports what it needs when it runs, so ``--help`` and ``models`` answer
at once.
"""

from __future__ import annotations

import sys

import click

from . import __version__
from .commands import register
from .commands.options import store_params, top_json_option
from .errors import RsEmbedStoreError

class Group(click.Group):
    """Turns our own errors into a one-line message and exit code 2, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except RsEmbedStoreError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    def resolve_command(self, ctx, args):
        name, cmd, rest = super().resolve_command(ctx, args)
        obj = ctx.obj
        if cmd is not None and getattr(obj, "as_json", False) and not any(
                getattr(p, "name", None) == "as_json" for p in cmd.params):
            raise click.UsageError(f"{name} prints no results, so it takes no --json", ctx)
        return name, cmd, rest


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]}, params=store_params(top=True))
@top_json_option
@click.version_option(__version__, prog_name="rsembed-store")
def main():
    """rsembed-store: cache, search and query remote-sensing embeddings.

    Computes pooled and grid embeddings for H3 cells and time windows, keeps
    each answer content-addressed in LanceDB, and serves cache-first look-ups,
    "find places like this" search and SQL over what was computed.

    The store options (--db, --storage-option, --max-*) and --json go before
    the command or after it: `rsembed-store --db X stats` is
    `rsembed-store stats --db X`.

    Commands that only read (stats, sql, search, maintain, get --no-compute,
    ingest --dry-run, serve --request but for POST /embeddings and /ingest)
    never create a store: a --db that holds none is an error.

    \b
    Exit codes:
      0  success
      1  a miss (get --no-compute) or a non-2xx answer (serve --request)
      2  bad input or options, no store at --db, or another error
      3  some requests failed, the others are stored (ingest)
      4  every request to compute failed (ingest; get: its one request)
    """


register(main)


if __name__ == "__main__":  # pragma: no cover
    main()
