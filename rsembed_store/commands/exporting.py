"""``rsembed-store export SPACE --format F --out PATH``: take vectors out (see docs/io.md)."""

from __future__ import annotations

import click

from .common import emit_json, row_bar
from .options import json_option, parse_area, parse_temporal, temporal_filter_option, where_option, within_option


@click.command("export")
@click.argument("space")
@click.option("--format", "fmt", default="geoparquet",
              type=click.Choice(["geoparquet", "parquet", "npz", "netcdf", "geotiff", "cog", "zarr"]),
              show_default=True, help="File format (docs/io.md lists the columns of each).")
@click.option("--out", "out", required=True, type=click.Path(), help="The file to write (written under a "
              "temporary name, renamed when complete); npz/netcdf also write a .json manifest beside it; geotiff/cog: "
              "a directory, one <key>.tif per grid row; zarr: a store with one group per grid row.")
@temporal_filter_option("rows")
@within_option("rows")
@where_option
@click.option("--sql", help="A read-only SQL query over the store whose 'key' column names the rows to export.")
@click.option("--batch-rows", type=click.IntRange(min=1), default=16_384, show_default=True,
              help="Rows read and written at a time (bounds memory).")
@json_option
@click.pass_obj
def export_cmd(obj, space, fmt, out, temporal, within, where, sql, batch_rows, as_json):
    """Write the rows of SPACE (a space name, or a model id) that the filters select to a file."""
    from ..errors import UnknownSpaceError
    from ..io.exporter import export

    store = obj.store
    try:
        store.space_info(space)
    except UnknownSpaceError:
        try:
            space = store.space_for(space).space
        except Exception:
            raise UnknownSpaceError(f"no space or model {space!r} in the store; spaces: "
                                    f"{[s.space for s in store.spaces()]}") from None
    area = parse_area(within, "--within")
    window = parse_temporal(temporal)
    filtered = any(x is not None for x in (window, area, where, sql))
    with row_bar(None if filtered else store.count(space), "export", not as_json) as progress:
        result = export(store, space, out, format=fmt, temporal=window,
                        within=area, where=where, sql=sql, batch_rows=batch_rows, progress=progress)
    if as_json:
        emit_json(result.to_dict())
        return
    click.echo(f"exported {result.rows} rows of {result.space} to {result.path} ({result.format}, "
               f"{result.bytes / 2**20:.1f} MiB)"
               + (f"; {result.skipped} grid rows without georeferencing skipped" if result.skipped else ""))
