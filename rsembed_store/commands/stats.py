"""``rsembed-store stats``: what the store holds, per space."""

from __future__ import annotations

import click

from .common import emit_json
from .options import json_option


@click.command()
@json_option
@click.pass_obj
def stats(obj, as_json):
    """What the store holds: rows per space, pooled/grid, versions, bytes, and what serves each space."""
    data = obj.store_stats()
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
