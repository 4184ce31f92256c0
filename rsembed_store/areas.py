"""The HTTP spelling of an area, ``{"bbox": [...]} | {"geojson": {...}} | {"cells": [...]}``,
accepted by the Python face too (``Store.search(within=...)``, ``plan(region, ...)``), so a
body written for the service works unchanged in Python."""

from __future__ import annotations

from typing import Any, Mapping

from .errors import SpecError

AREA_KEYS = ("bbox", "geojson", "cells")


def is_area_dict(value: Any) -> bool:
    """True for a mapping in the HTTP form: no GeoJSON ``type``, only keys among bbox/geojson/cells."""
    return isinstance(value, Mapping) and "type" not in value and bool(value) and set(value) <= set(AREA_KEYS)


def from_area_dict(value: Mapping, field: str = "within") -> Any:
    """What the HTTP form names: a :class:`~rsembed_store.specs.BBox`, a GeoJSON dict or a list of cells.

    >>> from_area_dict({"bbox": [10.9, 45.9, 11.1, 46.1]})
    BBox(minlon=10.9, minlat=45.9, maxlon=11.1, maxlat=46.1, crs='EPSG:4326')
    """
    from .specs import BBox

    given = [k for k in AREA_KEYS if value.get(k) is not None]
    if len(given) != 1:
        raise SpecError(f"{field} needs exactly one of 'bbox' [w, s, e, n], 'geojson' (a Polygon or MultiPolygon) "
                        f"or 'cells' (H3 cell ids), got {given or 'none'}")
    name = given[0]
    area = value[name]
    if name == "bbox":
        if not isinstance(area, (list, tuple)) or len(area) != 4:
            raise SpecError(f"{field}.bbox={area!r} needs 4 numbers [minlon, minlat, maxlon, maxlat]")
        return BBox(*area)
    if name == "cells":
        if isinstance(area, (str, int)):
            area = [area]
        if not area:
            raise SpecError(f"{field}.cells is empty; give at least one H3 cell id")
        return list(area)
    if not isinstance(area, Mapping):
        raise SpecError(f"{field}.geojson must be a GeoJSON object (Polygon, MultiPolygon, Feature...), "
                        f"got {type(area).__name__}")
    return area
