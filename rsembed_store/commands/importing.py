"""``rsembed-store import FILE --model NAME``: bring precomputed vectors in (see docs/io.md)."""

from __future__ import annotations

import click

from .common import emit_json, row_bar
from .options import json_option


def _pairs(items, flag: str) -> dict:
    out = {}
    for item in items:
        role, sep, column = item.partition("=")
        if not sep or not role or not column:
            raise click.BadParameter(f"{item!r} is not ROLE=COLUMN, e.g. lon=longitude", param_hint=flag)
        out[role.strip()] = column.strip()
    return out


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--model", "-m", "model", required=True, metavar="NAME",
              help="The imported model: NAME or imported:NAME (its vectors get a space of their own).")
@click.option("--revision", default="1", show_default=True,
              help="Product version or weights checksum of these vectors (part of every key).")
@click.option("--metric", type=click.Choice(["cosine", "l2", "dot"]), default="cosine", show_default=True,
              help="How vectors of this space are compared.")
@click.option("--temporal", type=click.Choice(["composite", "year"]), default="composite", show_default=True,
              help="How windows are keyed: the range they cover, or the year they start in (annual products).")
@click.option("--vector-column", metavar="NAME", help="The vector column (default: detected).")
@click.option("--column", "column_items", multiple=True, metavar="ROLE=NAME",
              help="Name the column of a role (lon, lat, buffer_m, minlon..maxlat, cell, geometry, start, end, "
                   "date, year, spatial_type); repeatable.")
@click.option("--buffer-m", type=float, metavar="METRES", help="Half side of every point's square ROI when the "
              "file has no buffer_m column.")
@click.option("--year", type=int, help="The year of every row when the file has no window columns.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "geoparquet", "npz", "netcdf"]),
              help="The file's format (default: by suffix: .npz, .nc, else Parquet).")
@click.option("--npz-model", metavar="MODEL", help="For an rs-embed npz/netcdf holding several models: the one to "
              "import.")
@click.option("--update", is_flag=True, help="Overwrite rows whose key the space already holds (default: keep them).")
@click.option("--dry-run", is_flag=True, help="Check and key everything, write nothing, report what would be written.")
@click.option("--batch-rows", type=click.IntRange(min=1), default=65_536, show_default=True,
              help="Rows read, checked and written at a time (bounds memory).")
@json_option
@click.pass_obj
def import_cmd(obj, file, model, revision, metric, temporal, vector_column, column_items, buffer_m, year, fmt,
               npz_model, update, dry_run, batch_rows, as_json):
    """Import vectors from a GeoParquet, Parquet or rs-embed npz/netcdf (+ its .json manifest) FILE into the
    space of imported:NAME.

    Every row becomes a request (its H3 cell, box, point or geometry; its window or
    year) with the key resolve() gives it. A bad row stops the import before anything
    is written; a second import of the same file writes nothing new.
    """
    columns = _pairs(column_items, "--column")
    if vector_column:
        columns["vector"] = vector_column
    from ..errors import NoStoreError
    from ..io.importer import import_table

    if dry_run:  # never creates a store; without one there is nothing held to compare with
        try:
            store = obj.store
        except NoStoreError:
            store = None
    else:
        store = obj.writable_store
    import pyarrow.parquet as pq

    try:
        total = pq.ParquetFile(file).metadata.num_rows
    except Exception:  # not Parquet (npz, or an error import_table names)
        total = None
    with row_bar(total, "import", not as_json and not dry_run) as progress:
        result = import_table(store, file, model=model, revision=revision, metric=metric, temporal=temporal,
                              columns=columns, buffer_m=buffer_m, year=year, update=update, dry_run=dry_run,
                              batch_rows=batch_rows, npz_model=npz_model, format=fmt, progress=progress)
    if as_json:
        emit_json(result.to_dict())
        return
    verb = "would import" if dry_run else "imported"
    click.echo(f"{verb} {result.rows} rows into {result.space}: {result.inserted} new, {result.updated} updated, "
               f"{result.existing} already held, {result.duplicates} repeated keys; "
               + ", ".join(f"{k} {v}" for k, v in result.kinds.items()))
