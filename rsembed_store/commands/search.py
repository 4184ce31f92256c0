"""``rsembed-store search``: the stored places most like a place, a request or a key."""

from __future__ import annotations


import click

from ..errors import SpecError
from .common import emit_json, json_option
from .ingest import parse_bbox
from .request_options import config_from_sources, request_from_options, request_options


# the search argument an error concerns (its ``field``) -> the flag that sets it
_FLAGS = {"where": "--where"}


def _cells(values):
    cells = []
    for value in values:
        cells.extend(c.strip() for c in value.split(",") if c.strip())
    return cells


def _geojson(path: str) -> dict:
    """The parsed GeoJSON of ``--within-geojson PATH`` (errors name the flag and the path)."""
    from ..geo import read_geojson

    return read_geojson(path, "--within-geojson")


@click.command()
@click.option("--model", "-m", required=True, help="Model id: its space is searched (see `rsembed-store models`).")
@request_options(prefix="like-")
# search by examples and text (issue 20): several --like-key, --negative-key, --text, --combine
@click.option("--like-key", multiple=True,
              help="The key of a stored answer to search from (64 hex digits); repeat for several examples.")
@click.option("--negative-key", multiple=True, help="The key of a stored answer the results should not resemble "
                                                     "(repeatable).")
@click.option("--text", "text", help="A phrase to search with, for models with a text tower (e.g. remoteclip).")
@click.option("--combine", type=click.Choice(["centroid", "linear"]),
              help="How several examples make one query (default: linear, the measured winner).")
@click.option("-k", "k", type=int, default=10, show_default=True, help="How many results.")
@click.option("--during", help="Keep results whose window overlaps this: a year '2023' or 'START/END'.")
@click.option("--within-bbox", help="Keep results whose centre is in MINLON,MINLAT,MAXLON,MAXLAT.")
@click.option("--within-h3", multiple=True, help="Keep results inside these H3 cells (comma-separated; repeatable).")
@click.option("--within-geojson", type=click.Path(dir_okay=False),
              help="Keep results whose centre is inside the Polygon/MultiPolygon in this GeoJSON file.")
@click.option("--where", help="An extra filter on stored columns, e.g. \"year = 2023\".")
@click.option("--metric", type=click.Choice(["cosine", "l2", "dot"]), help="Default: the space's metric.")
@click.option("--revision", help="Model revision (default: the registered one).")
@click.option("--include-self", is_flag=True, help="Keep the query's own row in the results.")
@click.option("--no-compute", is_flag=True, help="With --like-point/--like-h3/--like-bbox: never compute a miss.")
@json_option
@click.pass_obj
def search(obj, model, point, buffer_m, cell, bbox, time, year, output, pooling, sources, provider, like_key,
           negative_key, text, combine, k, during, within_bbox, within_h3, within_geojson, where, metric, revision,
           include_self, no_compute, as_json):
    """Find the K stored places whose embeddings are most like a place (computed on a miss) or a key.

    \b
    --time/--year set the like place's window; --during filters the results.
    Examples:
      rsembed-store search -m spectral --like-point 11.0,46.0 --buffer-m 250 --year 2023 -k 5
      rsembed-store search -m spectral --like-key 3f2a...e9 --during 2023 --within-bbox 10.9,45.9,11.3,46.2
      rsembed-store search -m spectral --like-key 3f2a... --like-key 81c0... --negative-key 0b9e...
      rsembed-store search -m remoteclip --text "a harbour with boats" -k 20
    """
    from ..query.examples import search_examples, wants_examples
    from ..query.search import search as run_search

    store = obj.store
    place = [x for x in (point, cell, bbox) if x]
    if like_key and place:
        raise SpecError("give either --like-key or a like place (--like-point/--like-h3/--like-bbox), not both")
    if text is not None and (like_key or place):
        raise SpecError("give either --text or examples (--like-key or a like place), not both")
    if negative_key and not (like_key or place or text is not None):
        raise SpecError("--negative-key needs positives to steer away from: give --like-key, a like place "
                        "(--like-point/--like-h3/--like-bbox) or --text")
    get = None
    if text is not None:
        like = None
    elif like_key:
        if time or year is not None:
            raise SpecError("--time/--year set the window of a like place; with --like-key filter the results "
                            "with --during instead")
        like = list(like_key) if len(like_key) > 1 else like_key[0]
    else:
        like = request_from_options(model, point, buffer_m, cell, bbox, time, year, output, pooling, prefix="like-",
                                    provider=provider)
        config = config_from_sources(sources)

        def get(request):
            return store.get(request, compute=not no_compute, config=config or None)
    within = [x for x in (within_bbox, within_h3, within_geojson) if x]
    if len(within) > 1:
        raise SpecError("give at most one of --within-bbox, --within-h3 and --within-geojson")
    area = None
    if within_bbox:
        area = parse_bbox(within_bbox)
    elif within_h3:
        area = _cells(within_h3)
    elif within_geojson:
        area = _geojson(within_geojson)
    negatives = list(negative_key) if negative_key else None
    try:
        if wants_examples(like, negatives, text, combine):
            result = search_examples(store, model, like, negatives=negatives, text=text, combine=combine, k=k,
                                     temporal=during, within=area, where=where, exclude_self=not include_self,
                                     metric=metric, revision=revision, get=get)
        else:
            result = run_search(store, model, like, k=k, temporal=during, within=area, where=where,
                                exclude_self=not include_self, metric=metric, revision=revision, get=get)
    except SpecError as exc:
        flag = _FLAGS.get(getattr(exc, "field", None))
        if flag is None:
            raise
        raise SpecError(f"{flag}: {exc}") from None
    if as_json:
        emit_json(result.to_dict())
        return
    plan = result.plan
    how = "exact" if plan.get("exact") else f"{plan.get('index')} nprobes={plan.get('nprobes')}"
    click.echo(f"space {result.space} ({result.metric}, {how}), {len(result)} result(s) in "
               f"{result.seconds * 1000:.1f} ms")
    if not result.rows:
        click.echo("  (nothing matches)")
    for i, r in enumerate(result.rows, 1):
        window = f"{r['start_date']}..{r['end_date']}" if r.get("start_date") else "-"
        click.echo(f"{i:>3}  {r['distance']:.5f}  {r['key'][:16]}  {r['lon']:.5f},{r['lat']:.5f}  {window}  "
                   f"h3 {r['h3']}")
