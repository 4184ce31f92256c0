"""The request-body models of the service (pydantic, imported with FastAPI, so built by a function).

They describe the bodies for ``/openapi.json`` and check types; the request
specs inside them are checked by our own spec classes (see :mod:`.schemas`).
"""

# No ``from __future__ import annotations``: pydantic reads these annotations at runtime.

from types import SimpleNamespace
from typing import Any, Dict, List, Literal, Optional, Union


def body_models():
    """The request-body models (pydantic, imported with FastAPI)."""
    from pydantic import BaseModel, ConfigDict, Field

    from .schemas import H3_CELL_ID, OUTPUT, REQUEST, TEMPORAL, described_as

    def nullable(schema):
        return described_as({"anyOf": [schema, {"type": "null"}]})

    GridEncoding = Literal["base64", "list", "none"]
    point = {"type": "PointBuffer", "lon": 11.0, "lat": 46.0, "buffer_m": 250}
    request_example = {"model": "spectral", "spatial": point, "temporal": {"mode": "year", "year": 2023}}

    class Body(BaseModel):
        model_config = ConfigDict(extra="forbid")

    class ErrorDetail(BaseModel):
        code: str = Field(description="A stable machine-readable code, e.g. 'spec_error'.")
        message: str = Field(description="What was wrong, naming the value and what is accepted.")
        field: Optional[str] = Field(None, description="The body field at fault, e.g. 'request' or 'items[2]'.")

    class ErrorResponse(BaseModel):
        error: ErrorDetail

    class EmbeddingsBody(Body):
        request: Dict[str, Any] = Field(
            description="A request in its Request.to_dict() form: model, spatial, temporal, sensor, output, "
                        "input_prep, provider (model and spatial required).",
            examples=[request_example], json_schema_extra=described_as(REQUEST))
        compute: bool = Field(True, description="Compute and store the answer on a miss (needs the token when "
                                                "the server has one); false answers a miss with 404.")
        grid_encoding: GridEncoding = Field("base64", description="How grid answers carry their grid.")

    class LookupBody(Body):
        items: List[Union[str, Dict[str, Any]]] = Field(
            description="Keys (64 hex digits) or request objects; at most the server's max_batch.",
            examples=[[request_example]], json_schema_extra=described_as(
                {"type": "array", "items": {"anyOf": [{"type": "string", "pattern": "^[0-9a-f]{64}$"}, REQUEST]}}))
        grid_encoding: GridEncoding = "base64"

    class Area(Body):
        bbox: Optional[List[float]] = Field(None, description="[minlon, minlat, maxlon, maxlat] in degrees.")
        geojson: Optional[Dict[str, Any]] = Field(None, description="A GeoJSON Polygon/MultiPolygon (or a "
                                                                    "Feature/FeatureCollection of them).")
        cells: Optional[List[Union[str, int]]] = Field(None, description="H3 cell ids (hex strings or ints).",
                                                       json_schema_extra=nullable({"type": "array",
                                                                                   "items": H3_CELL_ID}))

    class Like(Body):
        vector: Optional[List[float]] = Field(None, description="A query vector of the space's dimension.")
        key: Optional[str] = Field(None, description="The key of a stored answer in the model's space.")
        request: Optional[Dict[str, Any]] = Field(None, description="A request; its stored answer is used.",
                                                  json_schema_extra=nullable(REQUEST))

    class SearchBody(Body):
        model: str = Field(description="The model whose space is searched.", examples=["spectral"])
        # search by examples and text (issue 20): see rsembed_store/query/examples.py
        like: Optional[Union[Like, List[Like]]] = Field(
            None, description="One example (exactly one of vector, key or request) or a list of them; "
                              "give like or text.")
        negatives: Optional[List[Like]] = Field(None, description="Examples the results should not resemble.")
        text: Optional[str] = Field(None, description="A phrase, for models with a text tower (instead of like).")
        combine: Optional[str] = Field(None, description="How several examples make one query: 'centroid' or "
                                                         "'linear' (default: the measured winner).")
        k: int = Field(10, ge=1, description="How many results (at most max_batch).")
        temporal: Optional[Dict[str, Any]] = Field(None, description="Keep rows whose window overlaps this "
                                                                     "TemporalSpec dict.",
                                                   json_schema_extra=nullable(TEMPORAL))
        within: Optional[Area] = Field(None, description="Keep rows inside this area.")
        where: Optional[str] = Field(None, description="An extra filter on stored columns, e.g. \"year = 2023\".")
        exclude_self: bool = Field(True, description="Leave out every example's and negative's own row.")
        metric: Optional[str] = Field(None, description="cosine, l2 or dot (default: the space's metric).")
        revision: Optional[str] = Field(None, description="The model revision (default: the registered one).")
        compute: bool = Field(False, description="With like.request: compute it on a miss (needs the token).")

    class ChangeBody(Body):
        model_config = ConfigDict(extra="forbid", populate_by_name=True)
        model: str = Field(description="The model whose space is compared.", examples=["spectral"])
        from_: Dict[str, Any] = Field(alias="from", description="The first window (TemporalSpec dict).",
                                      json_schema_extra=described_as(TEMPORAL))
        to: Dict[str, Any] = Field(description="The second window (TemporalSpec dict).",
                                   json_schema_extra=described_as(TEMPORAL))
        within: Optional[Area] = Field(None, description="Keep cells inside this area.")
        where: Optional[str] = Field(None, description="An extra filter on stored columns.")
        revision: Optional[str] = Field(None, description="The model revision (default: the registered one).")
        format: Literal["json", "arrow"] = Field("json", description="JSON cells (at most max_json_cells, "
                                                                     "200,000 by default), or an Arrow IPC stream.")

    class SearchBatchBody(Body):
        model: str = Field(description="The model whose space is searched.", examples=["spectral"])
        vectors: List[List[float]] = Field(min_length=1, description="Query vectors of the space's dimension "
                                                                     "(at most max_batch).")
        k: int = Field(10, ge=1, description="How many results per vector (at most max_batch).")
        temporal: Optional[Dict[str, Any]] = Field(None, description="Keep rows whose window overlaps this "
                                                                     "TemporalSpec dict.")
        within: Optional[Area] = Field(None, description="Keep rows inside this area.")
        where: Optional[str] = Field(None, description="An extra filter on stored columns.")
        metric: Optional[str] = Field(None, description="cosine, l2 or dot (default: the space's metric).")
        revision: Optional[str] = Field(None, description="The model revision (default: the registered one).")

    class SqlBody(Body):
        query: str = Field(description="One read-only SELECT.", examples=["SELECT space, count(*) AS n FROM "
                                                                          "embeddings GROUP BY ALL"])
        limit: Optional[int] = Field(None, ge=0, description="Rows to return (capped by the server's "
                                                             "sql_row_limit).")
        format: Literal["json", "arrow"] = Field("json", description="json rows, or an Arrow IPC stream.")

    class IngestBody(Body):
        model: str = Field(examples=["spectral"])
        region: Area = Field(description="Exactly one of bbox, geojson or cells.")
        h3_res: int = Field(9, description="H3 resolution of the cells (0-15).")
        windows: List[Dict[str, Any]] = Field(
            min_length=1, description="TemporalSpec dicts, e.g. {\"mode\": \"year\", \"year\": 2023}.",
            json_schema_extra=described_as({"type": "array", "items": TEMPORAL, "minItems": 1}))
        output: Optional[Dict[str, Any]] = Field(None, description="An OutputSpec dict (default pooled mean).",
                                                 json_schema_extra=nullable(OUTPUT))

    return SimpleNamespace(**{k: v for k, v in locals().items() if isinstance(v, type)})
