"""The route of read-only SQL: JSON rows, or an Arrow IPC stream."""

# No ``from __future__ import annotations``: FastAPI reads the endpoint annotations at runtime.

from .encoding import ARROW_STREAM, arrow_stream
from .errors import field_of


def add(app, ctx) -> None:
    from fastapi import Depends
    from fastapi.responses import Response

    m, store = ctx.models, ctx.store
    row_limit, timeout_s = ctx.settings["sql_row_limit"], ctx.settings["sql_timeout_s"]

    @app.post("/sql", tags=["sql"], summary="One read-only DuckDB query", responses={
        **ctx.errors, 200: {"content": {"application/json": {}, ARROW_STREAM: {}},
                            "description": "JSON rows, or an Arrow IPC stream with format=arrow"}})
    def sql(body: m.SqlBody, creds=Depends(ctx.reader)):
        """Run one SELECT over the store's views; at most ``min(limit, sql_row_limit)`` rows."""
        cap = row_limit if body.limit is None else min(body.limit, row_limit)
        with field_of("query"):
            table = store.sql(body.query, limit=cap + 1, timeout_s=timeout_s)  # one more row: truncated?
        truncated = table.num_rows > cap
        table = table.slice(0, cap) if truncated else table
        if body.format == "arrow":
            meta = dict(table.schema.metadata or {})
            meta.update({b"rsembed.truncated": b"true" if truncated else b"false",
                         b"rsembed.limit": str(cap).encode()})
            table = table.replace_schema_metadata(meta)
            return Response(arrow_stream(table), media_type=ARROW_STREAM, headers={
                "X-Row-Count": str(table.num_rows), "X-Truncated": "true" if truncated else "false"})
        from ..sql_values import column_values

        columns = table.column_names
        values = [column_values(c) for c in table.columns]
        rows = [[col[i] for col in values] for i in range(table.num_rows)]
        return ctx.ok({"columns": columns, "rows": rows, "row_count": len(rows), "truncated": truncated})
