"""``rsembed-store search``: the stored places most like a place, a request or a key."""

from __future__ import annotations

import click

from ..errors import SpecError
from .common import emit_json
from .options import (config_from_sources, json_option, metric_option, model_option, parse_area, parse_temporal,
                      request_from_options, request_options, revision_option, temporal_filter_option,
                      where_option, within_option)


# the search argument an error concerns (its ``field``) -> the flag that sets it
_FLAGS = {"where": "--where", "within": "--within", "temporal": "--temporal", "k": "-k"}


@click.command()
@model_option("Model id: its space is searched (see `rsembed-store models`).")
@click.option("--like-key", help="The key of a stored answer to search from (64 hex digits).")
@request_options(prefix="like-")
@click.option("-k", "k", type=int, default=10, show_default=True, help="How many results.")
@temporal_filter_option()
@within_option()
@where_option
@metric_option
@revision_option
@click.option("--exclude-self/--no-exclude-self", default=True, show_default=True,
              help="Leave the query's own row out of the results.")
@click.option("--compute/--no-compute", default=False, show_default=True,
              help="With --like-point/--like-h3/--like-bbox: compute and store the like place on a miss "
                   "(else a miss is an error).")
@json_option
@click.pass_obj
def search(obj, model, like_key, point, buffer_m, cell, bbox, time, year, output, pooling, sources, provider, k,
           temporal, within, where, metric, revision, exclude_self, compute, as_json):
    """Find the K stored places whose embeddings are most like a place or a stored key.

    \b
    --time/--year set the like place's window; --temporal filters the results.
    Examples:
      rsembed-store search -m spectral --like-point 11.0,46.0 --buffer-m 250 --year 2023 -k 5
      rsembed-store search -m spectral --like-key 3f2a...e9 --temporal 2023 --within 10.9,45.9,11.3,46.2
    """
    from ..query.search import search as run_search

    place = [x for x in (point, cell, bbox) if x]
    if like_key and place:
        raise SpecError("give either --like-key or a like place (--like-point/--like-h3/--like-bbox), not both")
    if like_key:
        if time or year is not None:
            raise SpecError("--time/--year set the window of a like place; with --like-key filter the results "
                            "with --temporal instead")
        like, get = like_key, None
    else:
        like = request_from_options(model, point, buffer_m, cell, bbox, time, year, output, pooling, prefix="like-",
                                    provider=provider)
        config = config_from_sources(sources)
        store = obj.store  # a search needs a store that holds rows: it never creates one

        def get(request):
            return store.get(request, compute=compute, config=config or None)
    area = parse_area(within, "--within")
    window = parse_temporal(temporal)
    try:
        result = run_search(obj.store, model, like, k=k, temporal=window, within=area, where=where,
                            exclude_self=exclude_self, metric=metric, revision=revision, get=get)
    except SpecError as exc:
        flag = _FLAGS.get(getattr(exc, "field", None))
        if flag is None:
            raise
        raise SpecError(f"{flag}: {str(exc).replace('where=', flag + ' ')}") from None
    if as_json:
        emit_json(result.to_dict())
        return
    click.echo(format_result(result))


HEADERS = ("#", "distance", "key", "lon", "lat", "window", "h3")


def format_result(result) -> str:
    """The search answer as text: a summary line, then an aligned table with a header row."""
    plan = result.plan
    how = "exact" if plan.get("exact") else f"{plan.get('index')} nprobes={plan.get('nprobes')}"
    lines = [f"space {result.space} ({result.metric}, {how}), {len(result)} result(s) in "
             f"{result.seconds * 1000:.1f} ms"]
    if not result.rows:
        lines.append("  (nothing matches)")
        return "\n".join(lines)
    rows = []
    for i, r in enumerate(result.rows, 1):
        window = f"{r['start_date']}..{r['end_date']}" if r.get("start_date") else "-"
        rows.append((str(i), f"{r['distance']:.5f}", r["key"][:16], f"{r['lon']:.5f}", f"{r['lat']:.5f}", window,
                     str(r["h3"])))
    widths = [max(len(h), *(len(row[c]) for row in rows)) for c, h in enumerate(HEADERS)]
    right = {0, 1, 3, 4}  # numbers align on the right

    def line(cells):
        return "  ".join(c.rjust(w) if j in right else c.ljust(w) for j, (c, w) in enumerate(zip(cells, widths)))

    lines.append(line(HEADERS).rstrip())
    lines.extend(line(row).rstrip() for row in rows)
    return "\n".join(lines)
