"""Command-line options that describe one request, shared by ``get`` and ``search``.

``--point LON,LAT --buffer-m B`` | ``--h3 CELL`` | ``--bbox W,S,E,N`` pick the
place; ``--time START/END`` or ``--year Y`` the window; ``--output`` and
``--pooling`` the answer; ``--source NAME=DIR`` tells the local provider where
imagery lives when a miss has to be computed.
"""

from __future__ import annotations

from typing import Optional

import click

from ..errors import SpecError
from ..specs import H3Cell, OutputSpec, PointBuffer, TemporalSpec, parse_time
from .ingest import parse_bbox, parse_sources


def parse_point(text: str):
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    if len(parts) != 2:
        raise SpecError(f"point {text!r} is not accepted; use LON,LAT (e.g. 11.0,46.0)")
    try:
        return float(parts[0]), float(parts[1])
    except ValueError:
        raise SpecError(f"point {text!r} has a value that is not a number; use LON,LAT") from None


def spatial_from_options(point: Optional[str], buffer_m: Optional[float], cell: Optional[str], bbox: Optional[str],
                         prefix: str = ""):
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
    return parse_bbox(bbox)


def temporal_from_options(time: Optional[str], year: Optional[int]) -> Optional[TemporalSpec]:
    if time and year is not None:
        raise SpecError("give either --time START/END or --year Y, not both")
    if time:
        return parse_time(time)
    return TemporalSpec.year(year) if year is not None else None


def output_from_options(output: str, pooling: str) -> OutputSpec:
    return OutputSpec.grid() if output == "grid" else OutputSpec.pooled(pooling)


def config_from_sources(sources) -> dict:
    return {"sources": parse_sources(sources)} if sources else {}


def request_options(prefix: str = ""):
    """Decorator adding the place/window/output options (``prefix`` e.g. ``like-``)."""

    def decorate(fn):
        options = [
            click.option(f"--{prefix}point", "point", help="ROI centre LON,LAT (a square; give --buffer-m)."),
            click.option("--buffer-m", type=float, help="Half the side of the square ROI, in metres."),
            click.option(f"--{prefix}h3", "cell", help="An H3 cell id as the ROI."),
            click.option(f"--{prefix}bbox", "bbox", help="A lon/lat box MINLON,MINLAT,MAXLON,MAXLAT as the ROI."),
            click.option("--time", "time", help="Half-open window START/END (ISO dates)."),
            click.option("--year", type=int, help="A calendar year as the window."),
            click.option("--output", type=click.Choice(["pooled", "grid"]), default="pooled", show_default=True),
            click.option("--pooling", type=click.Choice(["mean", "max"]), default="mean", show_default=True),
            click.option("--source", "sources", multiple=True,
                         help="Imagery source NAME=DIR for computing a miss; repeatable."),
            click.option("--provider", help="Where pixels come from (e.g. local, gee); default: the model's first."),
        ]
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


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


__all__ = ["request_options", "request_from_options", "config_from_sources"]
