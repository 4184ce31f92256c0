"""``rsembed-store maintain``: compact, refresh indexes, build and tune the vector index."""

from __future__ import annotations

import click

from .common import emit_json
from .options import json_option


@click.command()
@click.option("--space", "spaces", multiple=True, help="A space to maintain (repeatable; default: all).")
@click.option("--min-rows", type=int, default=50_000, show_default=True,
              help="Build a vector index once a space holds this many rows (smaller spaces are searched exactly).")
@click.option("--target-recall", type=float, default=0.95, show_default=True,
              help="Recall@10 the tuned search settings must reach on a sample.")
@click.option("--force", is_flag=True, help="Rebuild the scalar and vector indexes.")
@click.option("--index-type", type=click.Choice(["IVF_FLAT", "IVF_PQ", "IVF_SQ", "IVF_HNSW_SQ"]),
              help="Vector index type (default: IVF_FLAT while the vectors fit 4 GiB, else IVF_PQ).")
@click.option("--sample-size", type=int, default=100, show_default=True, help="Stored vectors used as queries.")
@click.option("--prune", "prune_age", metavar="AGE",
              help="Then delete versions older than AGE (e.g. 7d, 12h, 30m, 0s), never tagged ones or the latest.")
@json_option
@click.pass_obj
def maintain(obj, spaces, min_rows, target_recall, force, index_type, sample_size, prune_age, as_json):
    """Compact each space, refresh its indexes, tune its vector search and rebuild its serving tier.

    Versions are kept unless --prune says how old a version may get.
    """
    from ..query.maintain import maintain as run

    older = parse_age(prune_age) if prune_age is not None else None
    log = (lambda m: click.echo(m, err=True))
    report = run(obj.store, spaces=list(spaces) or None, min_rows_for_index=min_rows, target_recall=target_recall,
                 force=force, index_type=index_type, sample_size=sample_size, prune_older_than=older, log=log)
    if as_json:
        emit_json(report)
        return
    if not report["spaces"]:
        click.echo("no spaces to maintain")
    for s in report["spaces"]:
        if s.get("skipped"):
            click.echo(f"{s['space']}: {s['skipped']}")
            continue
        vi = s.get("vector_index") or {}
        if vi.get("type"):
            mark = "" if vi.get("target_met") else "  (target NOT met)"
            filt = vi.get("filtered") or {}
            click.echo(f"{s['space']}: {s['rows']} rows; {vi['type']} ({vi['action']}), {vi['query']}: recall@10 "
                       f"{vi['recall_at_10']:.3f} (filtered {filt.get('recall_at_10', float('nan')):.3f}), "
                       f"p50 {vi['p50_ms']:.2f} ms; {s['seconds']:.1f} s{mark}")
        else:
            click.echo(f"{s['space']}: {s['rows']} rows; no vector index ({vi.get('reason')}); {s['seconds']:.1f} s")
        if s.get("prune"):
            click.echo(f"{s['space']}: pruned {s['prune']['versions_removed']} versions, "
                       f"{s['prune']['bytes_removed'] / 2**20:.1f} MiB freed")
        if s.get("serving"):
            sv = s["serving"]
            click.echo(f"{s['space']}: served by {sv['path']}"
                       + (f" ({sv['kind']}, {sv['bytes'] / 2**20:.1f} MiB)" if sv.get("kind") else
                          f" ({sv.get('reason')})"))
    click.echo(f"done in {report['seconds']:.1f} s")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str):
    """``"7d"`` -> timedelta(days=7); units s, m, h, d, w."""
    from datetime import timedelta

    from ..errors import SpecError

    t = text.strip().lower()
    try:
        value, unit = float(t[:-1]), t[-1]
        if unit not in _UNITS or value < 0 or value != value or value > 1e6:
            raise ValueError
    except (ValueError, IndexError):
        raise SpecError(f"--prune {text!r} is not an age; use a number and a unit (s, m, h, d, w), "
                        "e.g. 7d or 0s") from None
    return timedelta(seconds=value * _UNITS[unit])
