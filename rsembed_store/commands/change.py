"""``rsembed-store change``: per H3 cell, how far its embedding moved between two windows."""

from __future__ import annotations

import click

from .common import emit_json, json_option
from .ingest import parse_bbox


@click.command()
@click.option("--model", "-m", required=True, help="Model id: its space is compared (see `rsembed-store models`).")
@click.option("--from", "from_", required=True, help="The first window: a year '2022' or 'START/END'.")
@click.option("--to", "to", required=True, help="The second window: a year '2023' or 'START/END'.")
@click.option("--within-bbox", help="Keep cells whose centre is in MINLON,MINLAT,MAXLON,MAXLAT.")
@click.option("--within-h3", multiple=True, help="Keep cells inside these H3 cells (comma-separated; repeatable).")
@click.option("--where", help="An extra filter on stored columns, e.g. \"provider = 'local'\".")
@click.option("--revision", help="Model revision (default: the registered one).")
@click.option("--top", type=click.IntRange(min=0), default=10, show_default=True,
              help="Without --json: print this many most-changed cells.")
@click.option("--arrow", "arrow_path", type=click.Path(dir_okay=False),
              help="Also write every cell as an Arrow IPC stream (cell, distance, lon, lat) to this file.")
@json_option
@click.pass_obj
def change(obj, model, from_, to, within_bbox, within_h3, where, revision, top, arrow_path, as_json):
    """Per H3 cell stored in both windows, the cosine distance between its two embeddings.

    \b
    0 means the same direction, 1 unrelated, 2 opposite. A row counts for a
    window when its own window lies inside it; a cell's rows in one window are
    averaged. Examples:
      rsembed-store change -m spectral --from 2022 --to 2023
      rsembed-store change -m spectral --from 2022 --to 2023 --json > change.json
    """
    from ..errors import SpecError
    from ..query.change import change as run_change
    from ..query.change import change_arrow, change_json

    if within_bbox and within_h3:
        raise SpecError("give at most one of --within-bbox and --within-h3")
    area = None
    if within_bbox:
        area = parse_bbox(within_bbox)
    elif within_h3:
        area = [c.strip() for value in within_h3 for c in value.split(",") if c.strip()]
    table = run_change(obj.store, model, from_, to, within=area, where=where, revision=revision)
    if arrow_path:
        with open(arrow_path, "wb") as f:
            f.write(change_arrow(table))
    if as_json:
        emit_json(change_json(table))
        return
    dist = table.column("distance").to_numpy()
    click.echo(f"{table.num_rows} cell(s) stored in both {from_} and {to}"
               + (f": distance median {float(sorted(dist)[len(dist) // 2]):.4f}, max {float(dist.max()):.4f}"
                  if len(dist) else ""))
    rows = change_json(table, maximum=max(table.num_rows, 1))["cells"]
    for row in sorted(rows, key=lambda r: (-r["distance"], r["cell"]))[:top]:
        click.echo(f"  {row['cell']}  {row['distance']:.5f}  {row['lon']:.5f},{row['lat']:.5f}")
