"""``rsembed-store maintain``: compact, refresh indexes, build and tune the vector index."""

from __future__ import annotations

import click

from .common import emit_json, json_option


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
@json_option
@click.pass_obj
def maintain(obj, spaces, min_rows, target_recall, force, index_type, sample_size, as_json):
    """Compact each space, refresh its indexes and tune its vector search (versions are kept)."""
    from ..query.maintain import maintain as run

    log = (lambda m: click.echo(m, err=True))
    report = run(obj.store, spaces=list(spaces) or None, min_rows_for_index=min_rows, target_recall=target_recall,
                 force=force, index_type=index_type, sample_size=sample_size, log=log)
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
    click.echo(f"done in {report['seconds']:.1f} s")
