"""``rsembed-store sql "QUERY"``: read-only DuckDB SQL over the store (see docs/sql.md)."""

from __future__ import annotations

import csv
import io
import json
import sys

import click

from .common import emit_json
from .options import json_option

MAX_CELL = 60  # characters of one value in the text table before it is cut


def _text(value) -> str:
    """One value as text: lists and dicts as compact JSON, bytes by size, NULL as empty."""
    from ..query.sql import _jsonable

    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(_jsonable(value), separators=(",", ":"))
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _cut(text: str) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 3] + "..."


def format_table(result) -> str:
    """An aligned text table; numbers right-aligned, long values cut."""
    import pyarrow as pa

    from ..query.sql_values import column_values

    table = result.table
    names = list(table.column_names)
    numeric = [pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
               for t in table.schema.types]
    rows = [[_cut(_text(v)) for v in row] for row in zip(*[column_values(c) for c in table.columns])] \
        if table.num_rows else []
    widths = [max([len(n)] + [len(r[i]) for r in rows]) for i, n in enumerate(names)]

    def line(cells):
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)).rstrip()

    out = [line(names), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in rows)
    return "\n".join(out)


def format_csv(result) -> str:
    from ..query.sql_values import column_values

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(result.table.column_names)
    for row in zip(*[column_values(c) for c in result.table.columns]):
        writer.writerow([_text(v) for v in row])
    return buf.getvalue()


class _SqlCommand(click.Command):
    """Reads a query that starts with a ``-- comment`` as the query, not as an unknown option: an
    argument that starts with ``-`` and holds white space cannot be an option."""

    def parse_args(self, ctx, args):
        if "--" not in args:
            texts = [a for a in args if a.startswith("-") and any(c.isspace() for c in a)]
            if texts:
                args = [a for a in args if a not in texts] + ["--"] + texts
        return super().parse_args(ctx, args)


@click.command(cls=_SqlCommand)
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(["table", "csv"]), default="table", show_default=True,
              help="Text output format (--json prints JSON).")
@click.option("--limit", type=click.IntRange(min=0), default=10_000, show_default=True,
              help="Return at most N rows (0: no limit).")
@click.option("--timeout-s", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=30.0,
              show_default=True, help="Interrupt the query after this many seconds.")
@json_option
@click.pass_obj
def sql(obj, query, fmt, limit, timeout_s, as_json):
    """Run one read-only SQL query (DuckDB) over the store.

    Views: one per space ("spectral__spectral-v1"), "<model>" when one revision
    of the model is held, "embeddings" (every space, without vector and grid,
    plus a space column) and "spaces" (the catalog). H3 helpers: h3_parent,
    h3_resolution, h3_to_string, h3_from_string, h3_child_min/max,
    h3_center_lat/lng, h3_latlng_to_cell; vec_mean(list(vector)).

    \b
    Example:
      rsembed-store sql "SELECT space, count(*) AS n, sum(compute_s) AS seconds
                         FROM embeddings GROUP BY space"

    QUERY "-" reads the query from stdin (e.g. "rsembed-store sql - < file.sql");
    a query may start with a "-- comment".
    """
    from ..query.sql import sql_result

    if query == "-":
        query = sys.stdin.read()
    result = sql_result(obj.store, query, limit=limit or None, timeout_s=timeout_s)
    if as_json:
        emit_json(result.to_json())
        return
    if fmt == "csv":
        click.echo(format_csv(result), nl=False)
    else:
        click.echo(format_table(result))
        click.echo(f"({result.row_count} row{'s' if result.row_count != 1 else ''})", err=True)
    if result.truncated:
        click.echo(f"note: truncated at {limit} rows; use --limit N (0 for no limit) to see more", err=True)
