"""Earth Engine expressions of the ``gee`` provider: filter, pick bands, composite.

Everything here builds server-side expressions and runs nothing: the filtered and
composited collection, with its image counts, travels to Earth Engine as one
expression in one computePixels call (see :mod:`.gee_transport`).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .gee_collections import POLARISATIONS, Band, Collection

#: One source of a composite: the collection id, the bands picked from it as
#: ``(requested name, Band)``, and its declaration when scene filters apply (None: none).
Source = Tuple[str, Sequence[Tuple[str, Band]], Optional[Collection]]


def rectangle(ee, crs: str, gt, width: int, height: int):
    """The grid's footprint as a planar rectangle in the grid's own CRS."""
    x0, xres, _, y0, _, yneg = gt
    return ee.Geometry.Rectangle([x0, y0 + height * yneg, x0 + width * xres, y0], crs, False)


def quality_filters(ee, coll: Collection, images, picked, cloudy_pct: float):
    """Scene-level filters: cloud percentage for optical collections, IW/polarisation/orbit for Sentinel-1."""
    filters: Dict[str, Any] = {}
    if coll.cloud_property:
        images = images.filter(ee.Filter.lte(coll.cloud_property, float(cloudy_pct)))
        filters[coll.cloud_property] = f"<= {float(cloudy_pct):g}"
    if coll.instrument_mode:
        images = images.filter(ee.Filter.eq("instrumentMode", coll.instrument_mode))
        filters["instrumentMode"] = coll.instrument_mode
    if coll.polarisation_property:
        pols = [band.name for _, band in picked if band.name in POLARISATIONS]
        for pol in dict.fromkeys(pols):
            images = images.filter(ee.Filter.listContains(coll.polarisation_property, pol))
        if pols:
            filters[coll.polarisation_property] = sorted(set(pols))
    if coll.orbit_pass:
        images = images.filter(ee.Filter.eq("orbitProperties_pass", coll.orbit_pass))
        filters["orbitProperties_pass"] = coll.orbit_pass
    return images, filters


def describe(filters: Mapping[str, Any]) -> str:
    """The scene filters as one line for error messages: ``CLOUDY_PIXEL_PERCENTAGE <= 30, ...``."""
    return ", ".join(f"{k} {v}" if str(v).startswith("<") else f"{k} = {v}" for k, v in filters.items()) or "(none)"


def band_picker(ee, picked: Sequence[Tuple[str, Band]], resampling: str, qa: Optional[Tuple[str, int]] = None):
    """The per-image function: select (renamed to the requested spelling), resample continuous bands,
    and mask each pixel unless every band has data there (so a composite never mixes bands of
    different dates where one band is missing, as in the local provider), and where the
    collection's quality band ``qa = (band, bits)`` has any of ``bits`` set."""
    smooth = [(n, b.name) for n, b in picked if not b.categorical]
    classes = [(n, b.name) for n, b in picked if b.categorical]

    def pick(img):
        parts = []
        if smooth:
            part = img.select([b for _, b in smooth], [n for n, _ in smooth])
            parts.append(part.resample(resampling) if resampling != "nearest" else part)
        if classes:
            parts.append(img.select([b for _, b in classes], [n for n, _ in classes]))
        out = parts[0]
        for part in parts[1:]:
            out = out.addBands(part)
        if len(picked) > 1:
            out = out.updateMask(out.mask().reduce(ee.Reducer.min()))
        if qa is not None:  # the collection's own quality band: clouds, shadows, fill
            out = out.updateMask(img.select([qa[0]]).bitwiseAnd(qa[1]).eq(0))
        return out

    return pick


def guarded(ee, composited, names: List[str], size):
    """The composite if any image passed, else a fully masked stand-in with the same bands.

    A composite of an empty collection has no bands, and selecting from it fails
    server-side; the stand-in keeps the one request valid so the count bands can say
    "no image" instead.
    """
    blank = ee.Image.constant([0] * len(names)).rename(list(names)).updateMask(0)
    return ee.Image(ee.Algorithms.If(size.gt(0), composited, blank)).select(list(names))




def filtered_composite(ee, sources: Sequence[Source], footprint, start: Optional[str], end: Optional[str],
                       how: str, resampling: str, cloudy_pct: float = 100.0):
    """Filter each source collection, pick its bands per image, merge them and composite.

    ``footprint(ee)`` gives the grid's rectangle; ``start``/``end`` the half-open window
    (None: no date filter). A source with a declaration gets its scene filters
    (clouds at ``cloudy_pct``, Sentinel-1 mode and polarisations) and quality-band mask.
    ``how`` is ``median`` or ``mosaic`` (latest image on top). Returns
    ``(composite, filtered, unfiltered, filters)``: the two collections give the image
    counts, ``filters`` says which scene filters applied.
    """
    base = filtered = prepared = None
    filters: Dict[str, Any] = {}
    for collection_id, picked, declared in sources:
        b = ee.ImageCollection(collection_id).filterBounds(footprint(ee))
        if start is not None:
            b = b.filterDate(start, end)
        if declared is None:
            f, p = b, b.map(band_picker(ee, picked, resampling))
        else:
            f, found = quality_filters(ee, declared, b, picked, cloudy_pct)
            p = f.map(band_picker(ee, picked, resampling, declared.qa))
            filters.update(found)
        base, filtered, prepared = (b, f, p) if base is None else (base.merge(b), filtered.merge(f),
                                                                  prepared.merge(p))
    composited = prepared.median() if how == "median" else prepared.sort("system:time_start").mosaic()
    return composited, filtered, base, filters


__all__ = ["Source", "band_picker", "describe", "filtered_composite", "guarded", "quality_filters", "rectangle"]
