"""Request bodies to our values: requests, windows, keys, areas and ``like``, each refusal naming its field."""

from typing import Any

import numpy as np

from ...errors import ApiError, SpecError, VectorError
from .errors import field_of

_HEX = set("0123456789abcdef")

def request_of(data: Any, field: str):
    from ...keys import Request

    with field_of(field):
        return Request.from_dict(data)


def resolved_of(data: Any, field: str):
    from ...keys import resolve

    with field_of(field):
        return resolve(request_of(data, field))


def temporal_of(data: Any, field: str):
    from ...specs import TemporalSpec

    if data is None:
        return None
    with field_of(field):
        return TemporalSpec.from_dict(data)


def check_key(key: str, field: str) -> str:
    if len(key) != 64 or not set(key) <= _HEX:
        raise ApiError(422, "validation_error", f"{field}={key!r} is not a key; a key is 64 lower-case hex digits "
                       "(the SHA-256 of a canonical request)", field)
    return key


def area_of(data, field: str):
    """A region or a search filter from ``{"bbox"}`` | ``{"geojson"}`` | ``{"cells"}`` (exactly one)."""
    from ...specs import BBox

    given = [name for name in ("bbox", "geojson", "cells") if getattr(data, name) is not None]
    if len(given) != 1:
        raise ApiError(422, "spec_error", f"{field} needs exactly one of 'bbox' [w, s, e, n], 'geojson' (a Polygon "
                       f"or MultiPolygon) or 'cells' (H3 cell ids), got {given or 'none'}", field)
    name = given[0]
    value = getattr(data, name)
    with field_of(f"{field}.{name}"):
        if name == "bbox":
            if len(value) != 4:
                raise SpecError(f"{field}.bbox={value!r} needs 4 numbers [minlon, minlat, maxlon, maxlat]")
            return BBox(*value)
        if name == "cells" and not value:
            raise SpecError(f"{field}.cells is empty; give at least one H3 cell id")
        return value


# ---------------------------------------------------------------- ingest jobs


def like_of(store, body, like=None, name: str = "like"):
    """The query of one ``like`` item of a search body (``body.like`` by default; ``name`` is its field,
    e.g. ``like[2]`` or ``negatives[0]``): a vector, a stored answer (by key) or a request's answer."""
    like = body.like if like is None else like
    given = [n for n in ("vector", "key", "request") if getattr(like, n) is not None]
    if len(given) != 1:
        raise ApiError(422, "spec_error", f"{name} needs exactly one of 'vector', 'key' or 'request', got "
                                          f"{given or 'none'}", name)
    if like.vector is not None:
        with field_of(f"{name}.vector"), np.errstate(over="ignore"):  # beyond float32: inf, refused below
            vector = np.asarray(like.vector, dtype=np.float32)
            if vector.size == 0 or not np.all(np.isfinite(vector)):
                raise VectorError(f"{name}.vector must be a non-empty list of finite numbers")
        return vector
    if like.key is not None:
        key = check_key(like.key, f"{name}.key")
        with field_of(f"{name}.key"):
            space = store.space_for(body.model, body.revision)
            hit = store.lookup_many([key], space=space.space)[0]
        if hit is None:
            raise ApiError(404, "not_found", f"key {key} is not stored in space {space.space!r}", f"{name}.key")
        return hit
    resolved = resolved_of(like.request, f"{name}.request")
    with field_of(f"{name}.request"):
        emb = store.get(resolved, compute=body.compute)
    if emb is None:
        raise ApiError(404, "not_found", f"the like request (key {resolved.key}) is not stored; send "
                                         "compute=true to compute it", f"{name}.request")
    return emb
