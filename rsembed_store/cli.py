"""The ``rsembed-store`` command line.

Shared options live here (``--db`` / ``RSEMBED_STORE_DB``, ``--storage-option`` /
``RSEMBED_STORE_STORAGE_OPTIONS``, ``--json``); larger
subcommands live in ``rsembed_store/commands/``, one module each. Every command
that prints results takes ``--json`` and then prints exactly one JSON document
on stdout (progress and notes go to stderr).
"""

from __future__ import annotations

import sys

import click

from . import __version__
from .commands.common import Context, emit_json, json_option
from .errors import RsEmbedStoreError

class Group(click.Group):
    """Turns our own errors into a one-line message and exit code 2, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except RsEmbedStoreError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    envvar="RSEMBED_STORE_DB",
    default="./rsembed-store",
    show_default=True,
    help="Store location: a directory or an object-store URI (env RSEMBED_STORE_DB).",
)
@click.option(
    "--storage-option",
    "storage_options",
    multiple=True,
    metavar="KEY=VALUE",
    envvar="RSEMBED_STORE_STORAGE_OPTIONS",
    help="Object-store option for --db, e.g. aws_region=eu-west-1; repeatable (env "
    "RSEMBED_STORE_STORAGE_OPTIONS, space-separated). Credentials are better left to the "
    "cloud's own environment variables; see docs/object-storage.md.",
)
@click.option("--max-roi-pixels", type=click.IntRange(min=1), metavar="N",
              help="Size limit: pixels of the grid one request reads (default 16777216 = 4096 x 4096; env "
                   "RSEMBED_STORE_MAX_ROI_PIXELS). See docs/ingest.md, 'Size limits'.")
@click.option("--max-array-bytes", type=click.IntRange(min=1), metavar="N",
              help="Size limit: bytes of the largest array one answer is computed from or returned as "
                   "(default 1073741824 = 1 GiB; env RSEMBED_STORE_MAX_ARRAY_BYTES).")
@click.option("--max-plan-cells", type=click.IntRange(min=1), metavar="N",
              help="Size limit: H3 cells one ingest plan may cover (default 5000000; env "
                   "RSEMBED_STORE_MAX_PLAN_CELLS).")
@click.version_option(__version__, prog_name="rsembed-store")
@click.pass_context
def main(ctx, db, storage_options, max_roi_pixels, max_array_bytes, max_plan_cells):
    """rsembed-store: cache, search and query remote-sensing embeddings.

    Computes pooled and grid embeddings for H3 cells and time windows, keeps
    each answer content-addressed in LanceDB, and serves cache-first look-ups,
    "find places like this" search and SQL over what was computed.

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
    limits = {"max_roi_pixels": max_roi_pixels, "max_array_bytes": max_array_bytes,
              "max_plan_cells": max_plan_cells}
    ctx.obj = Context(db, storage_options, limits={k: v for k, v in limits.items() if v is not None})


@main.command()
@json_option
@click.pass_obj
def stats(obj: Context, as_json):
    """What the store holds: rows per space, pooled/grid, versions, bytes, and what serves each space."""
    data = obj.store.stats()
    if as_json:
        emit_json(data)
        return
    click.echo(f"store: {data['uri']}")
    if not data["spaces"]:
        click.echo("  (empty: run `rsembed-store demo` or `rsembed-store ingest`)")
    for s in data["spaces"]:
        size = f"{s['bytes'] / 1e6:.1f} MB" if s.get("bytes") is not None else "?"
        click.echo(
            f"  {s['space']}: {s['rows']} rows ({s['pooled_rows']} pooled, {s['grid_rows']} grid), "
            f"dim {s['dim']}, {s['metric']}, version {s['version']}, {size}"
        )
        sv = s.get("serving") or {}
        if sv.get("path") == "serving":
            click.echo(f"    served from memory: {sv['kind']} tier of version {sv['version']} "
                       f"({sv['bytes'] / 2**20:.1f} MiB; {sv['delta_rows']} newer rows read as a delta)")
        else:
            click.echo(f"    served by Lance: {sv.get('reason')}")
    click.echo(f"total rows: {data['total_rows']}")


@main.command()
@json_option
def models(as_json):
    """The registered models and what each one declares."""
    from .registry import describe_models

    infos = describe_models()
    if as_json:
        emit_json(infos)
        return
    for i in infos:
        if "error" in i:
            click.echo(f"{i['id']:<12} unavailable: {i['error']}")
            continue
        click.echo(
            f"{i['id']:<12} {i['kind']:<11} dim {i['dim']:<5} {i['metric']:<7} "
            f"outputs {','.join(i['outputs']):<12} rev {i['revision']}  {i['description']}"
        )


def _register_commands() -> None:
    from .commands import register

    register(main)


_register_commands()


if __name__ == "__main__":  # pragma: no cover
    main()
