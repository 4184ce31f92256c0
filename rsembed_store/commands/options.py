"""Every command-line option that more than one command takes, and the parsers of their values.

One vocabulary across the three faces: a CLI flag is the Python keyword (or the
HTTP field) it sets, with ``_`` written ``-`` (``temporal`` -> ``--temporal``,
``timeout_s`` -> ``--timeout-s``, ``within`` -> ``--within``); a boolean keyword
``x`` is the flag pair ``--x/--no-x`` with the Python default. docs/cli.md says
this, and ``tests/cli/test_vocabulary.py`` compares the faces so they cannot drift.

The store options (``--db``, ``--storage-option``, ``--max-*``) and ``--json``
are accepted before the subcommand and on every subcommand; given in both places,
the subcommand's value wins (``--storage-option`` items add up).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, List, Optional

import click

from ..errors import SpecError

# ---------------------------------------------------------------- the store options and --json

DB_ENV = "RSEMBED_STORE_DB"
STORAGE_OPTIONS_ENV = "RSEMBED_STORE_STORAGE_OPTIONS"
DEFAULT_DB = "./rsembed-store"

_LIMIT_HELP = {
    "max_roi_pixels": "Size limit: pixels of the grid one request reads (default 16777216 = 4096 x 4096; env "
                      "RSEMBED_STORE_MAX_ROI_PIXELS). See docs/ingest.md, 'Size limits'.",
    "max_array_bytes": "Size limit: bytes of the largest array one answer is computed from or returned as "
                       "(default 1073741824 = 1 GiB; env RSEMBED_STORE_MAX_ARRAY_BYTES).",
    "max_plan_cells": "Size limit: H3 cells one ingest plan may cover (default 5000000; env "
                      "RSEMBED_STORE_MAX_PLAN_CELLS).",
}


def _obj(ctx: click.Context):
    """The command line's shared :class:`~rsembed_store.commands.common.Context` (made by the group)."""
    from .common import Context

    obj = ctx.find_object(Context)
    if obj is None:  # a subcommand invoked on its own (tests): start from the defaults and the environment
        obj = ctx.ensure_object(Context)
    return obj


def _set_db(ctx, param, value):
    if value is not None:
        _obj(ctx).db = value
    return value


def _add_storage_options(ctx, param, value):
    if value:
        obj = _obj(ctx)
        obj.storage_option_items = tuple(obj.storage_option_items) + tuple(value)
    return value


def _set_limit(name: str):
    def callback(ctx, param, value):
        if value is not None:
            _obj(ctx).limit_flags[name] = value
        return value

    return callback


def store_params(*, top: bool = False) -> List[click.Option]:
    """``--db``, ``--storage-option`` and the ``--max-*`` size limits as click options. ``top=True``
    (the group) reads the defaults and the environment; on a subcommand an option only overrides
    what it is given. :func:`share` attaches them to every subcommand."""
    params = [
        click.Option(["--db"], default=DEFAULT_DB if top else None, envvar=DB_ENV if top else None,
                     show_default=top, expose_value=False, callback=_set_db,
                     help="Store location: a directory or an object-store URI (env RSEMBED_STORE_DB)."),
        click.Option(["--storage-option"], multiple=True, metavar="KEY=VALUE",
                     envvar=STORAGE_OPTIONS_ENV if top else None, expose_value=False, callback=_add_storage_options,
                     help="Object-store option for --db, e.g. aws_region=eu-west-1; repeatable (env "
                          "RSEMBED_STORE_STORAGE_OPTIONS, space-separated). Credentials are better left to "
                          "the cloud's own environment variables; see docs/object-storage.md."),
    ]
    for name, text in _LIMIT_HELP.items():
        params.append(click.Option([f"--{name.replace('_', '-')}"], type=click.IntRange(min=1), metavar="N",
                                   expose_value=False, callback=_set_limit(name), help=text))
    return params


def share(command: click.Command) -> click.Command:
    """Give ``command`` the store options (after its own), so ``rsembed-store CMD --db X`` works
    as well as ``rsembed-store --db X CMD``."""
    names = {o for p in command.params for o in getattr(p, "opts", ())}
    command.params.extend(p for p in store_params() if not set(p.opts) & names)
    return command


def _json_flag(ctx, param, value):
    obj = _obj(ctx)
    if value:
        obj.as_json = True
    return bool(value or obj.as_json)


#: ``--json``: print one JSON document on stdout instead of text (also accepted before the subcommand)
json_option = click.option("--json", "as_json", is_flag=True, default=None, callback=_json_flag,
                           help="Print one JSON document instead of text.")


def top_json_option(fn):
    """``--json`` on the group: every subcommand that prints results then prints JSON."""
    return click.option("--json", "as_json", is_flag=True, expose_value=False, callback=_json_flag,
                        help="Print JSON (the same as giving --json to the subcommand).")(fn)


def model_option(help: str = "Model id (see `rsembed-store models`).") -> Callable:
    return click.option("--model", "-m", required=True, help=help)


def revision_option(fn):
    return click.option("--revision", help="Model revision (default: the registered one).")(fn)


def metric_option(fn):
    return click.option("--metric", type=click.Choice(["cosine", "l2", "dot"]),
                        help="Default: the space's metric.")(fn)


def temporal_filter_option(what: str = "results") -> Callable:
    """``--temporal``: keep rows whose window overlaps it (Python/HTTP ``temporal``)."""
    return click.option("--temporal", help=f"Keep {what} whose window overlaps this: a year '2023' or "
                                           "'START/END' (ISO dates, half-open).")


def within_option(what: str = "results") -> Callable:
    """``--within``: keep rows whose centre is inside an area (Python/HTTP ``within``)."""
    return click.option("--within", help=f"Keep {what} whose centre is inside this area: {AREA_FORMS}.")


def where_option(fn):
    return click.option("--where", help="An extra filter on stored columns, e.g. \"year = 2023\".")(fn)


def source_option(help: str = "Imagery source NAME=DIR for computing a miss; repeatable.") -> Callable:
    return click.option("--source", "sources", multiple=True, help=help)


def provider_option(help: str = "Where pixels come from (e.g. local, gee); default: the model's first.") -> Callable:
    return click.option("--provider", help=help)


def modality_option(fn):
    return click.option("--modality", "modalities", multiple=True,
                        help="An extra sensor the model takes beside its own, e.g. s1 (see docs/timeseries.md); "
                             "repeatable.")(fn)


def output_options(fn):
    fn = click.option("--pooling", type=click.Choice(["mean", "max"]), default="mean", show_default=True)(fn)
    return click.option("--output", type=click.Choice(["pooled", "grid"]), default="pooled", show_default=True)(fn)


# ---------------------------------------------------------------- one request: place, window, output


def request_options(prefix: str = "") -> Callable:
    """The place/window/output options of one request (``prefix`` e.g. ``like-`` for search)."""

    def decorate(fn):
        options = [
            click.option(f"--{prefix}point", "point", help="ROI centre LON,LAT (a square; give --buffer-m)."),
            click.option("--buffer-m", type=float, help="Half the side of the square ROI, in metres."),
            click.option(f"--{prefix}h3", "cell", help="An H3 cell id as the ROI."),
            click.option(f"--{prefix}bbox", "bbox", help="A lon/lat box MINLON,MINLAT,MAXLON,MAXLAT as the ROI."),
            click.option("--time", "time", help="Half-open window START/END (ISO dates)."),
            click.option("--year", type=int, help="A calendar year as the window."),
            output_options,
            source_option(),
            provider_option(),
        ]
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def parse_point(text: str):
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    if len(parts) != 2:
        raise SpecError(f"point {text!r} is not accepted; use LON,LAT (e.g. 11.0,46.0)")
    try:
        return float(parts[0]), float(parts[1])
    except ValueError:
        raise SpecError(f"point {text!r} has a value that is not a number; use LON,LAT") from None


def parse_bbox(text: str, flag: str = "--bbox"):
    """``MINLON,MINLAT,MAXLON,MAXLAT`` as a :class:`~rsembed_store.specs.BBox`."""
    from ..specs import BBox

    parts = [p for p in text.replace(" ", ",").split(",") if p]
    if len(parts) != 4:
        raise SpecError(f"{flag} {text!r} is not accepted; use MINLON,MINLAT,MAXLON,MAXLAT")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise SpecError(f"{flag} {text!r} has a value that is not a number; use MINLON,MINLAT,MAXLON,MAXLAT") from None
    return BBox(*values)


def parse_sources(values) -> dict:
    """``--source NAME=DIR`` items as ``{name: dir}``; each DIR must be an existing directory,
    checked here so that a typo is reported at once, not once per request after planning."""
    sources = {}
    for item in values:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SpecError(f"--source {item!r} is not accepted; use NAME=DIR, e.g. s2-l2a=./scenes")
        if not os.path.isdir(os.path.expanduser(path)):
            what = "is not a directory" if os.path.exists(os.path.expanduser(path)) else "does not exist"
            raise SpecError(f"--source {item!r}: {path!r} {what}; give the directory that holds the "
                            f"{name!r} scenes, as NAME=DIR")
        sources[name] = path
    return sources


def config_from_sources(sources) -> dict:
    return {"sources": parse_sources(sources)} if sources else {}


def spatial_from_options(point: Optional[str], buffer_m: Optional[float], cell: Optional[str], bbox: Optional[str],
                         prefix: str = ""):
    from ..specs import H3Cell, PointBuffer

    given = [x for x in (point, cell, bbox) if x]
    if len(given) != 1:
        raise SpecError(f"give exactly one place: --{prefix}point LON,LAT (with --buffer-m), --{prefix}h3 CELL "
                        f"or --{prefix}bbox W,S,E,N")
    if point:
        if buffer_m is None:
            raise SpecError(f"--{prefix}point needs --buffer-m (half the side of the square, in metres)")
        lon, lat = parse_point(point)
        return PointBuffer(lon, lat, buffer_m)
    if cell:
        return H3Cell(cell)
    return parse_bbox(bbox, f"--{prefix}bbox")


def temporal_from_options(time: Optional[str], year: Optional[int]):
    from ..specs import TemporalSpec, parse_time

    if time and year is not None:
        raise SpecError("give either --time START/END or --year Y, not both")
    if time:
        return parse_time(time)
    return TemporalSpec.year(year) if year is not None else None


def output_from_options(output: str, pooling: str):
    from ..specs import OutputSpec

    return OutputSpec.grid() if output == "grid" else OutputSpec.pooled(pooling)


def request_from_options(model: str, point, buffer_m, cell, bbox, time, year, output, pooling, prefix: str = "",
                         provider: Optional[str] = None, modalities=None):
    from ..keys import Request

    return Request(
        model,
        spatial_from_options(point, buffer_m, cell, bbox, prefix),
        temporal_from_options(time, year),
        output=output_from_options(output, pooling),
        provider=provider,
        modalities=modalities,
    )


def parse_temporal(text: Optional[str], flag: str = "--temporal"):
    """A ``--temporal`` filter: a year ``2023`` or ``START/END``; None when not given."""
    if text is None:
        return None
    from ..specs import parse_time

    try:
        return parse_time(text)
    except SpecError as exc:
        raise SpecError(f"{flag}: {exc}") from None


# ---------------------------------------------------------------- areas: --within and --region

AREA_FORMS = ("a box MINLON,MINLAT,MAXLON,MAXLAT, H3 cells CELL[,CELL...], or a file: GeoJSON "
              "(Polygon/MultiPolygon/Feature[Collection]) or a cell list (JSON list or one cell per line)")


def _is_cell(text: str) -> bool:
    import h3

    try:
        return bool(h3.is_valid_cell(text))
    except Exception:  # h3 raises on text that is not hex
        return False


def read_cells(path: str) -> list:
    """A cell file: a JSON list, or one cell per line (``#`` starts a comment line)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = json.loads(text)
        if isinstance(data, list):
            return data
    except json.JSONDecodeError:
        pass
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _area_file(path: str, flag: str) -> Any:
    """A file named by ``--within``/``--region``: GeoJSON (read by :func:`rsembed_store.geo.read_geojson`),
    a JSON list of cells, or one cell per line."""
    from ..geo import read_geojson

    with open(path, encoding="utf-8", errors="replace") as f:
        head = f.read(64).lstrip()
    if head.startswith(("{", "[")):
        data = read_geojson(path, flag)
        if isinstance(data, (list, dict)):
            return data
        raise SpecError(f"{flag} {path!r} holds JSON {type(data).__name__}; {flag} takes {AREA_FORMS}")
    cells = read_cells(path)
    bad = [c for c in cells if not _is_cell(c)]
    if not cells or bad:
        raise SpecError(f"{flag} {path!r} is neither GeoJSON nor a list of H3 cells"
                        + (f" (not a cell: {bad[0]!r})" if bad else " (it is empty)") + f"; {flag} takes {AREA_FORMS}")
    return cells


def parse_area(text: Optional[str], flag: str) -> Any:
    """An area as the CLI spells it (``--within``, ``--region``): a box, H3 cells or a file.

    Returns what the Python face takes: a BBox, a list of cell ids, or a GeoJSON dict.
    """
    if text is None:
        return None
    value = text.strip()
    if os.path.isfile(os.path.expanduser(value)):
        return _area_file(os.path.expanduser(value), flag)
    parts = [p for p in value.replace(" ", ",").split(",") if p]
    if len(parts) == 4 and all(_is_number(p) for p in parts):
        return parse_bbox(value, flag)
    if parts and all(_is_cell(p) for p in parts):
        return parts
    if value.lower().endswith((".json", ".geojson", ".txt")):
        raise SpecError(f"{flag} {text!r}: no such file; {flag} takes {AREA_FORMS}")
    raise SpecError(f"{flag} {text!r} is not accepted; {flag} takes {AREA_FORMS}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def cell_list(values) -> List[str]:
    """Repeatable comma-separated cells as one list."""
    cells: List[str] = []
    for value in values:
        cells.extend(c.strip() for c in value.split(",") if c.strip())
    return cells


__all__ = [
    "AREA_FORMS", "config_from_sources", "json_option", "model_option", "parse_area", "parse_bbox",
    "parse_sources", "parse_temporal", "request_from_options", "request_options", "share", "store_params",
    "temporal_filter_option", "within_option",
]
