"""JSON Schemas of the request specs, for the service's OpenAPI document.

The service takes request specs as plain JSON objects and checks them itself
(:meth:`Request.from_dict` and the spec classes), so that every refusal names
the bad value. These schemas only *describe* those objects in ``/openapi.json``
(fields, types, ranges, the ``type``/``mode`` that picks each form), so that
clients and schema-driven fuzzing (``scripts/fuzz_service.py``) see their
shape. What a schema cannot say (``minlon < maxlon``, a valid H3 index, a
registered model) is still checked by the service, with a 422 naming it.
"""

from __future__ import annotations

from typing import Any, Callable, Dict

_NUMBER = {"type": "number"}
_NULL = {"type": "null"}


def _object(required, properties, **extra) -> Dict[str, Any]:
    return {"type": "object", "required": list(required), "properties": properties, "additionalProperties": False,
            **extra}


def _nullable(schema: Dict[str, Any]) -> Dict[str, Any]:
    return {"anyOf": [schema, _NULL]}


CRS = {"type": "string", "enum": ["EPSG:4326"], "description": "Only EPSG:4326 (lon/lat degrees)."}
LON = {**_NUMBER, "minimum": -180, "maximum": 180}
LAT = {**_NUMBER, "minimum": -90, "maximum": 90}

POINT_BUFFER = _object(["type", "lon", "lat", "buffer_m"], {
    "type": {"type": "string", "enum": ["PointBuffer"]},
    "lon": LON, "lat": LAT,
    "buffer_m": {**_NUMBER, "exclusiveMinimum": 0, "maximum": 500_000,
                 "description": "Half the side of the square, in ground metres."},
    "crs": CRS,
}, title="PointBuffer")

BBOX = _object(["type", "minlon", "minlat", "maxlon", "maxlat"], {
    "type": {"type": "string", "enum": ["BBox"]},
    "minlon": LON, "minlat": LAT, "maxlon": LON, "maxlat": LAT, "crs": CRS,
}, title="BBox", description="minlon < maxlon and minlat < maxlat (no box across the antimeridian).")

H3_CELL_ID = {
    "anyOf": [{"type": "string", "pattern": "^(0[xX])?[0-9a-fA-F]{1,16}$"},
              {"type": "integer", "minimum": 1, "maximum": 2**64 - 1}],
    "description": "A valid H3 cell index: hex ('8928308280fffff') or its int form.",
    "examples": ["8928308280fffff"],
}

H3_CELL = _object(["type", "cell"], {"type": {"type": "string", "enum": ["H3Cell"]}, "cell": H3_CELL_ID},
                  title="H3Cell")

SPATIAL = {"oneOf": [POINT_BUFFER, BBOX, H3_CELL], "description": "A PointBuffer, BBox or H3Cell (by 'type')."}

TEMPORAL = {"oneOf": [
    _object(["mode", "year"], {"mode": {"type": "string", "enum": ["year"]},
                               "year": {"type": "integer", "minimum": 1, "maximum": 9998}}, title="year"),
    _object(["mode", "start", "end"], {"mode": {"type": "string", "enum": ["range"]},
                                       "start": {"type": "string", "format": "date"},
                                       "end": {"type": "string", "format": "date"}},
            title="range", description="The half-open window [start, end); start < end."),
], "description": "A TemporalSpec: a calendar year, or a range of ISO dates."}

SENSOR = _object(["collection", "bands"], {
    "collection": {"type": "string", "minLength": 1},
    "bands": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "uniqueItems": True},
    "scale_m": {**_NUMBER, "exclusiveMinimum": 0},
    "cloudy_pct": {**_NUMBER, "minimum": 0, "maximum": 100},
    "fill_value": _NUMBER,
    "composite": {"type": "string", "enum": ["median", "mosaic"]},
    "check_input": {"type": "boolean"},
    "check_raise": {"type": "boolean"},
    "check_save_dir": _nullable({"type": "string"}),
}, title="SensorSpec")

OUTPUT = _object(["mode"], {
    "mode": {"type": "string", "enum": ["pooled", "grid"]},
    "scale_m": {**_NUMBER, "exclusiveMinimum": 0},
    "pooling": {"type": "string", "enum": ["mean", "max"]},
    "grid_orientation": {"type": "string", "enum": ["north_up", "native"]},
}, title="OutputSpec")

_POSITIVE = {"type": "integer", "minimum": 1}
INPUT_PREP = _object([], {
    "mode": {"type": "string", "enum": ["resize", "tile", "auto"]},
    "tile_size": _nullable(_POSITIVE),
    "tile_stride": _nullable(_POSITIVE),
    "max_tiles": _POSITIVE,
    "pad_edges": {"type": "boolean"},
}, title="InputPrepSpec")

REQUEST = _object(["model", "spatial"], {
    "model": {"type": "string", "minLength": 1, "description": "A registered model id (GET /models).",
              "examples": ["spectral"]},
    "spatial": SPATIAL,
    "temporal": _nullable(TEMPORAL),
    "sensor": _nullable(SENSOR),
    "output": _nullable(OUTPUT),
    "input_prep": _nullable(INPUT_PREP),
    "provider": _nullable({"type": "string", "minLength": 1}),
    "modalities": _nullable({"anyOf": [
        {"type": "array", "items": {"type": "string"}},
        {"type": "object", "additionalProperties": _nullable(SENSOR)},
    ]}),
}, title="Request")


def described_as(schema: Dict[str, Any]) -> Callable[[Dict[str, Any]], None]:
    """A pydantic ``json_schema_extra`` that replaces a field's generated schema with ``schema``,
    keeping its title, description and examples."""

    def replace(generated: Dict[str, Any]) -> None:
        kept = {k: generated[k] for k in ("title", "description", "examples") if k in generated}
        generated.clear()
        generated.update(schema)
        generated.update(kept)

    return replace


__all__ = ["OUTPUT", "REQUEST", "SPATIAL", "TEMPORAL", "described_as"]
