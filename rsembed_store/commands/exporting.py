"""``rsembed-store export SPACE --format F --out PATH``: take vectors out (see docs/io.md)."""

from __future__ import annotations

import click

from .common import emit_json, json_option, row_bar


@click.command("export")
@click.argument("space")
@click.option("--format", "fmt", default="geoparquet",
              type=click.Choice(["geoparquet", "parquet", "npz", "netcdf", "geotiff", "cog", "zarr"]),
              show_default=True, help="File format (docs/io.md lists the columns of each).")
@click.option("--out", "out", required=True, type=click.Path(), help="The file to write (written under a "
              "temporary name, renamed when complete); npz/netcdf also write a .json manifest beside it; geotiff/cog: "
              "a directory, one <key>.tif per grid row; zarr: a store with one group per grid row.")
@click.option("--during", help="Rows whose window overlaps this: a year '2023' or 'START/END'.")
@click.option("--bbox", "within_bbox", help="Rows whose centre is in MINLON,MINLAT,MAXLON,MAXLAT.")
@click.option("--h3", "within_h3", multiple=True, help="Rows inside these H3 cells (comma-separated; repeatable).")
@click.option("--within", "within_geojson", type=click.Path(dir_okay=False, exists=True),
              help="Rows inside the area of this GeoJSON file.")
@click.option("--where", help="A filter on stored columns, e.g. \"year = 2023\".")
@click.option("--sql", help="A read-only SQL query over the store whose 'key' column names the rows to export.")
@click.option("--batch-rows", type=click.IntRange(min=1), default=16_384, show_default=True,
              help="Rows read and written at a time (bounds memory).")
@json_option
@click.pass_obj
def export_cmd(obj, space, fmt, out, during, within_bbox, within_h3, within_geojson, where, sql, batch_rows,
               as_json):
    """Write the rows of SPACE (a space name, or a model id) that the filters select to a file."""
    from ..errors import SpecError, UnknownSpaceError
    from ..io.exporter import export
    from ..specs import parse_time
    from .ingest import parse_bbox
    from .search import _cells, _geojson

    store = obj.store
    try:
        store.space_info(space)
    except UnknownSpaceError:
        try:
            space = store.space_for(space).space
        except Exception:
            raise UnknownSpaceError(f"no space or model {space!r} in the store; spaces: "
                                    f"{[s.space for s in store.spaces()]}") from None
    areas = [x for x in (within_bbox, within_h3, within_geojson) if x]
    if len(areas) > 1:
        raise SpecError("give at most one of --bbox, --h3 and --within")
    area = (parse_bbox(within_bbox) if within_bbox else _cells(within_h3) if within_h3 else
            _geojson(within_geojson) if within_geojson else None)
    filtered = any(x is not None for x in (during, area, where, sql))
    bar = row_bar(None if filtered else store.count(space), "export", not as_json)
    try:
        result = export(store, space, out, format=fmt, temporal=parse_time(during) if during else None,
                        within=area, where=where, sql=sql, batch_rows=batch_rows,
                        progress=bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    if as_json:
        emit_json(result.to_dict())
        return
    click.echo(f"exported {result.rows} rows of {result.space} to {result.path} ({result.format}, "
               f"{result.bytes / 2**20:.1f} MiB)"
               + (f"; {result.skipped} grid rows without georeferencing skipped" if result.skipped else ""))
