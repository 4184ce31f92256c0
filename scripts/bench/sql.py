"""Section ``sql``: DuckDB roll-ups by H3 parent cell over the big space (1M rows in the full run).

Through ``store.sql`` (the public path: a fresh read-only DuckDB session over
the Lance table, nothing copied), per parent resolution: rows, years and mean
centre per parent cell, and the mean vector per parent (``vec_mean``: every
vector is read). Each figure is the median wall time over ``runs``; the first
query of each kind also checks that the roll-up counts every row once.
"""

from __future__ import annotations

from .timing import median, timed
from .workspace import Workspace, log


def queries(space: str, res: int) -> dict:
    table = '"' + space.replace('"', '""') + '"'
    return {
        f"count_by_parent_res{res}": (f"SELECT h3_parent(h3, {res}) AS parent, count(*) AS n, "
                                      f"count(DISTINCT year) AS years, avg(lon) AS lon, avg(lat) AS lat "
                                      f"FROM {table} GROUP BY parent"),
        f"mean_vector_by_parent_res{res}": (f"SELECT h3_parent(h3, {res}) AS parent, count(*) AS n, "
                                            f"vec_mean(list(vector)) AS centroid FROM {table} GROUP BY parent"),
    }


def run(ws: Workspace) -> dict:
    cfg = ws.config
    sp = ws.space(*cfg.big_space)
    out = {"rows": sp.rows, "dim": sp.dim, "queries": {}}
    for res in cfg.rollup_res:
        for name, text in queries(sp.space, res).items():
            secs = []
            for _ in range(cfg.runs):
                s, table = timed(lambda: sp.store.sql(text, limit=None, timeout_s=None))
                secs.append(s)
            counted = sum(table.column("n").to_pylist())
            if counted != sp.rows:
                raise RuntimeError(f"{name} counted {counted} rows, the space holds {sp.rows}")
            out["queries"][name] = {"sql": text, "groups": table.num_rows, "median_s": round(median(secs), 4),
                                    "runs_s": [round(x, 4) for x in secs]}
            log(f"sql {name}: {table.num_rows} groups in {median(secs):.3f} s")
    return out
