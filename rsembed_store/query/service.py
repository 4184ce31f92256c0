"""The HTTP service: JSON endpoints over one :class:`~rsembed_store.store.Store`.

:func:`create_app` builds a FastAPI application (OpenAPI at ``/openapi.json``,
interactive docs at ``/docs``) with endpoints for health, models, stats,
cache-first get, batch look-up, search, read-only SQL and background ingest
jobs. ``rsembed-store serve`` runs it with uvicorn; ``docs/http.md`` is the
reference for every endpoint.

Three rules hold for every endpoint:

- **One error shape.** Every error, ours or the framework's, is
  ``{"error": {"code", "message", "field"}}`` with the status chosen by
  :data:`ERROR_RULES` (401 auth, 404 something named does not exist, 413 a
  count over a limit, 422 input that is invalid or cannot be answered, 5xx a
  fault on the server's side). An unexpected exception is a 500 whose message
  shows no internals (the traceback goes to the log).
- **Writes need the token.** With a token configured, ``POST /ingest`` and
  ``POST /embeddings`` / ``POST /search`` with ``compute=true`` need
  ``Authorization: Bearer <token>`` (compared in constant time); with
  ``protect_reads`` every data endpoint but ``/health`` does.
- **Blocking work stays off the event loop.** Every endpoint is a plain ``def``
  (FastAPI runs it in its thread pool); ingest jobs run on a worker thread of
  their own, so they outlive the request that started them.

FastAPI is an optional dependency (``pip install 'rsembed-store[serve]'``):
importing this module does not import it; :func:`create_app` does.

>>> app = create_app(Store.open("./rsembed-store"), token="s3cret")   # doctest: +SKIP
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoint
# annotations at runtime, and the body models are defined inside a function.

import base64
import hmac
import json
import logging
import math
import queue
import threading
import time
import uuid
from collections import OrderedDict
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from datetime import time as dtime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, Dict, List, Literal, Optional, Tuple, Union

import numpy as np

from ..errors import (
    ApiError,
    ComputeError,
    LimitError,
    MissingExtraError,
    NoImageryError,
    NotStoredError,
    ProviderError,
    RsEmbedStoreError,
    SpecError,
    SqlError,
    StoreError,
    UnknownModelError,
    UnknownProviderError,
    UnknownSpaceError,
    VectorError,
    WeightsError,
    require,
)

log = logging.getLogger("rsembed_store.service")

ARROW_STREAM = "application/vnd.apache.arrow.stream"
MAX_BODY_BYTES = 32 * 1024 * 1024  # a request body larger than this is refused with 413
KEEP_FINISHED_JOBS = 500  # finished ingest jobs remembered for GET /jobs/{id}
_HEX = set("0123456789abcdef")

# Our exceptions -> (status, code), most specific class first. The rule in one
# sentence: 404 when something named does not exist, 422 when the input is
# invalid or cannot be answered, 5xx when the server itself fails.
ERROR_RULES: Tuple[Tuple[type, int, str], ...] = (
    (UnknownModelError, 404, "unknown_model"),
    (UnknownProviderError, 404, "unknown_provider"),
    (UnknownSpaceError, 404, "unknown_space"),
    (LimitError, 413, "too_large"),
    (NotStoredError, 404, "not_found"),
    (NoImageryError, 422, "no_imagery"),
    (ProviderError, 502, "provider_error"),
    (ComputeError, 422, "compute_error"),
    (SpecError, 422, "spec_error"),
    (VectorError, 422, "vector_error"),
    (SqlError, 422, "sql_error"),
    (MissingExtraError, 501, "missing_extra"),
    (StoreError, 500, "store_error"),
    (WeightsError, 500, "weights_error"),
    (RsEmbedStoreError, 500, "error"),
)

# Codes the service itself raises (besides ERROR_RULES); docs/http.md lists them all.
SERVICE_CODES: Dict[str, int] = {
    "bad_request": 400,
    "validation_error": 422,
    "not_found": 404,
    "unauthorized": 401,
    "too_large": 413,
    "method_not_allowed": 405,
    "internal_error": 500,
}


# HTTP-layer refusals by status; any other status gets the code "http_error"
HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


def error_codes() -> Dict[str, int]:
    """Every error code the service can answer with, and its status."""
    codes = {code: status for _, status, code in ERROR_RULES}
    codes.update(SERVICE_CODES)
    return codes


def classify(exc: BaseException) -> Tuple[int, str]:
    """The (status, code) of one of our exceptions per :data:`ERROR_RULES` (an ApiError carries its own)."""
    if isinstance(exc, ApiError):
        return exc.status, exc.code
    for cls, status, code in ERROR_RULES:
        if isinstance(exc, cls):
            return status, code
    return 500, "internal_error"


def error_body(code: str, message: str, field: Optional[str] = None) -> dict:
    return {"error": {"code": code, "message": message, "field": field}}


@contextmanager
def field_of(name: str):
    """Tag our errors raised inside the block with the body field they concern."""
    try:
        yield
    except RsEmbedStoreError as exc:
        if getattr(exc, "field", None) is None:
            exc.field = name
        raise


# ---------------------------------------------------------------- JSON values


def jsonable(value: Any) -> Any:
    """``value`` as strict JSON data: NaN/inf become null, numpy and dates become plain values."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (datetime, date, dtime)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return jsonable(float(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if hasattr(value, "to_dict"):
        return jsonable(value.to_dict())
    return str(value)


def dumps(value: Any) -> bytes:
    """``value`` as strict JSON bytes, as :func:`jsonable` would make it, but in one pass through orjson
    (a search answer's rows went through ``jsonable`` and ``json.dumps`` in 0.3 ms, a fifth of a request):
    NaN and inf become null, numpy values and arrays plain values, dates ISO strings."""
    try:
        import orjson
    except ImportError:  # the `serve` extra brings it; without it, the same JSON the slower way
        return json.dumps(jsonable(value), allow_nan=False).encode("utf-8")
    try:
        return orjson.dumps(value, default=_orjson_default,
                            option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits (a DuckDB HUGEINT): Python's json holds it
        return json.dumps(jsonable(value), allow_nan=False).encode("utf-8")


def _orjson_default(value: Any) -> Any:
    """What orjson does not encode itself, as :func:`jsonable` encodes it."""
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, np.ndarray):  # non-native byte order or dtypes orjson refuses
        return jsonable(value.tolist())
    return jsonable(value)


def grid_json(emb, encoding: str) -> Optional[dict]:
    """The grid of a grid answer in the chosen encoding (``None`` for pooled answers).

    ``base64``: the stored bytes exactly (little-endian, C order, ``dtype`` and
    ``codec`` as stored). ``list``: the decoded float32 values as nested lists,
    NaN (no data) as null. ``none``: shape, dtype and codec only.
    """
    if emb.grid is None:
        return None
    raw = np.asarray(emb.grid)
    little = raw.astype(raw.dtype.newbyteorder("<"), copy=False)
    out = {"shape": list(raw.shape), "dtype": little.dtype.name, "codec": emb.grid_codec, "encoding": encoding}
    if encoding == "base64":
        out["data"] = base64.b64encode(np.ascontiguousarray(little).tobytes()).decode("ascii")
    elif encoding == "list":
        out.update(dtype="float32", codec="raw", data=jsonable(emb.grid_f32()))
    return out


def embedding_json(emb, grid_encoding: str = "base64") -> dict:
    """One answer as the service returns it (see docs/http.md, ``POST /embeddings``)."""
    return {
        "key": emb.key,
        "cached": bool(emb.cached),
        "model": emb.model,
        "revision": emb.request.revision,
        "space": emb.space,
        "output": emb.output_mode,
        "dim": emb.dim,
        "vector": jsonable(np.asarray(emb.vector, dtype=np.float32)),
        "request": json.loads(emb.request.canonical),
        "meta": jsonable(emb.meta or {}),
        "compute_s": jsonable(float(emb.compute_s or 0.0)),
        "created_at": emb.created_at.isoformat() if emb.created_at else None,
        "grid": grid_json(emb, grid_encoding),
    }


# ---------------------------------------------------------------- parsing bodies


def _request(data: Any, field: str):
    from ..keys import Request

    with field_of(field):
        return Request.from_dict(data)


def _resolved(data: Any, field: str):
    from ..keys import resolve

    with field_of(field):
        return resolve(_request(data, field))


def _temporal(data: Any, field: str):
    from ..specs import TemporalSpec

    if data is None:
        return None
    with field_of(field):
        return TemporalSpec.from_dict(data)


def _check_key(key: str, field: str) -> str:
    if len(key) != 64 or not set(key) <= _HEX:
        raise ApiError(422, "validation_error", f"{field}={key!r} is not a key; a key is 64 lower-case hex digits "
                       "(the SHA-256 of a canonical request)", field)
    return key


def _area(data, field: str):
    """A region or a search filter from ``{"bbox"}`` | ``{"geojson"}`` | ``{"cells"}`` (exactly one)."""
    from ..specs import BBox

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


class Jobs:
    """Ingest jobs run one at a time on a daemon worker thread, apart from any request.

    A job is planned (and its input checked) in the request that submits it;
    only the computation runs here, so a client that disconnects does not stop
    it. Finished jobs are kept for :data:`KEEP_FINISHED_JOBS` look-ups.
    """

    def __init__(self, store, keep: int = KEEP_FINISHED_JOBS):
        self.store = store
        self.keep = keep
        self._lock = threading.Lock()
        self._jobs: "OrderedDict[str, dict]" = OrderedDict()
        self._queue: "queue.Queue[Tuple[str, Any]]" = queue.Queue()
        self._worker: Optional[threading.Thread] = None

    def submit(self, plan) -> dict:
        job_id = uuid.uuid4().hex
        job = {
            "job_id": job_id,
            "status": "queued",
            "model": plan.model,
            "plan": plan.summary(),
            "progress": {"done": 0, "total": len(plan.requests)},
            "summary": None,
            "error": None,
            "created_at": _now(),
            "started_at": None,
            "finished_at": None,
        }
        with self._lock:
            self._jobs[job_id] = job
            self._forget_old()
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="rsembed-ingest-jobs", daemon=True)
                self._worker.start()
        self._queue.put((job_id, plan))
        return self.get(job_id)

    def get(self, job_id: str) -> Optional[dict]:
        with self._lock:
            job = self._jobs.get(job_id)
            return json.loads(json.dumps(job)) if job is not None else None  # a snapshot

    def active(self) -> int:
        with self._lock:
            return sum(1 for j in self._jobs.values() if j["status"] in ("queued", "running"))

    def wait(self, timeout_s: Optional[float] = None) -> bool:
        """Wait until no job is queued or running; False if ``timeout_s`` passed first."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.active():
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _forget_old(self) -> None:
        finished = [k for k, j in self._jobs.items() if j["status"] in ("done", "failed")]
        for k in finished[: max(0, len(finished) - self.keep)]:
            del self._jobs[k]

    def _update(self, job_id: str, **changes) -> None:
        with self._lock:
            self._jobs[job_id].update(changes)

    def _work(self) -> None:
        while True:
            job_id, plan = self._queue.get()
            try:
                self._run(job_id, plan)
            finally:
                self._queue.task_done()

    def _run(self, job_id: str, plan) -> None:
        from ..ingest.engine import Engine

        total = len(plan.requests)
        self._update(job_id, status="running", started_at=_now())

        def on_batch(summary) -> None:
            done = summary.cached + summary.computed + summary.failed
            self._update(job_id, progress={"done": min(done, total), "total": total})

        try:
            engine = Engine(self.store, self.store.config)
            summary = engine.run(plan.requests, progress=False, on_batch=on_batch)
        except Exception as exc:
            if isinstance(exc, RsEmbedStoreError):
                _, code = classify(exc)
                error = {"code": code, "message": str(exc), "field": None}
            else:
                log.exception("ingest job %s failed", job_id)
                error = {"code": "internal_error", "message": "the ingest job failed on the server; see its log",
                         "field": None}
            self._update(job_id, status="failed", error=error, finished_at=_now())
            return
        self._update(job_id, status="done", summary=jsonable(summary.to_dict()),
                     progress={"done": total, "total": total}, finished_at=_now())


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class Unexpected:
    """ASGI middleware: an unexpected exception is answered 500 ``internal_error`` and goes no further.

    The traceback goes to the log; the answer shows no internals. The exception
    is not re-raised to the server, so the connection stays usable (uvicorn
    closes one whose application raised). An exception after the answer has
    started cannot be answered: it is logged and the connection is closed.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            log.exception("unexpected error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            from starlette.responses import JSONResponse

            body = error_body("internal_error", "an unexpected error occurred on the server; its log has the details")
            await JSONResponse(body, status_code=500)(scope, receive, send)


class BodyLimit:
    """ASGI middleware: a request whose Content-Length is over ``max_bytes`` is answered 413, unread."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            length = dict(scope.get("headers") or ()).get(b"content-length", b"")
            if length.isdigit() and int(length) > self.max_bytes:
                from starlette.responses import JSONResponse

                message = f"the request body has {int(length)} bytes; at most {self.max_bytes} are accepted"
                await JSONResponse(error_body("too_large", message), status_code=413)(scope, receive, send)
                return
        await self.app(scope, receive, send)


# ---------------------------------------------------------------- body models


def _models():
    """The request-body models (pydantic, imported with FastAPI)."""
    from pydantic import BaseModel, ConfigDict, Field

    from .service_schemas import H3_CELL_ID, OUTPUT, REQUEST, TEMPORAL, described_as

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
        like: Like = Field(description="Exactly one of vector, key or request.")
        k: int = Field(10, ge=1, description="How many results (at most max_batch).")
        temporal: Optional[Dict[str, Any]] = Field(None, description="Keep rows whose window overlaps this "
                                                                     "TemporalSpec dict.",
                                                   json_schema_extra=nullable(TEMPORAL))
        within: Optional[Area] = Field(None, description="Keep rows inside this area.")
        where: Optional[str] = Field(None, description="An extra filter on stored columns, e.g. \"year = 2023\".")
        exclude_self: bool = True
        metric: Optional[str] = Field(None, description="cosine, l2 or dot (default: the space's metric).")
        revision: Optional[str] = Field(None, description="The model revision (default: the registered one).")
        compute: bool = Field(False, description="With like.request: compute it on a miss (needs the token).")

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


# ---------------------------------------------------------------- the app


SERVE_ENV = "RSEMBED_STORE_SERVE"  # how `serve --workers N` tells each worker process what to serve


def app_from_environment():
    """The application described by ``$RSEMBED_STORE_SERVE`` (JSON: db, storage_options, config, token,
    protect_reads): the factory each worker of ``rsembed-store serve --workers N`` imports."""
    import json
    import os

    from ..store import Store

    spec = json.loads(os.environ[SERVE_ENV])
    store = Store.open(spec["db"], storage_options=spec.get("storage_options"), config=spec.get("config"))
    return create_app(store, token=spec.get("token"), protect_reads=bool(spec.get("protect_reads")))


def create_app(store, *, token: Optional[str] = None, protect_reads: bool = False, max_batch: int = 1000,
               sql_row_limit: int = 10_000, sql_timeout_s: float = 30.0, max_ingest_requests: int = 100_000):
    """Build the FastAPI application over ``store``.

    ``token``: writes (``POST /ingest``, and computing on a miss) need
    ``Authorization: Bearer <token>``; ``protect_reads``: every data endpoint
    but ``/health`` needs it too. ``max_batch`` caps look-up items, search
    ``k`` and ingest windows (413 beyond); ``sql_row_limit`` and
    ``sql_timeout_s`` cap SQL; ``max_ingest_requests`` caps one ingest job
    (cells x windows).
    """
    require("fastapi", "serve", "The HTTP service")
    from fastapi import Depends, FastAPI, Request, Security
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from .. import __version__

    if token is not None and (not isinstance(token, str) or not token):
        raise SpecError("token must be a non-empty string (or None for no token)")
    if protect_reads and token is None:
        raise SpecError("protect_reads needs a token: give --token (or RSEMBED_STORE_TOKEN)")
    for name, value in (("max_batch", max_batch), ("sql_row_limit", sql_row_limit),
                        ("max_ingest_requests", max_ingest_requests)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise SpecError(f"{name}={value!r} must be a positive integer")
    if isinstance(sql_timeout_s, bool) or not isinstance(sql_timeout_s, (int, float)) or not sql_timeout_s > 0:
        raise SpecError(f"sql_timeout_s={sql_timeout_s!r} must be a positive number of seconds")

    m = _models()
    jobs = Jobs(store)
    errors = {status: {"model": m.ErrorResponse} for status in (401, 404, 413, 422, 500)}

    app = FastAPI(
        title="rsembed-store",
        version=__version__,
        description="Cache-first embeddings, similarity search, read-only SQL and ingest jobs over one "
                    "rsembed-store. Every error is {\"error\": {\"code\", \"message\", \"field\"}}; "
                    "see docs/http.md.",
        responses={422: {"model": m.ErrorResponse, "description": "Invalid input, or it cannot be answered"}},
    )
    app.state.store = store
    app.state.jobs = jobs
    app.state.settings = {"protect_reads": protect_reads, "token": token is not None, "max_batch": max_batch,
                          "sql_row_limit": sql_row_limit, "sql_timeout_s": sql_timeout_s,
                          "max_ingest_requests": max_ingest_requests}

    # ------------------------------------------------------------ errors: one shape

    def answer(status: int, code: str, message: str, field: Optional[str] = None, headers=None):
        return JSONResponse(error_body(code, message, field), status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return answer(exc.status, exc.code, exc.message, exc.field, exc.headers)

    @app.exception_handler(RsEmbedStoreError)
    async def _our_error(request: Request, exc: RsEmbedStoreError):
        status, code = classify(exc)
        if status >= 500:
            log.error("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return answer(status, code, str(exc), getattr(exc, "field", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        problems = exc.errors()
        first = problems[0] if problems else {}
        if first.get("type") == "json_invalid":
            where = first.get("loc", ("body", "?"))[-1]
            reason = first.get("ctx", {}).get("error", first.get("msg"))
            return answer(422, "validation_error", f"the request body is not valid JSON: {reason} (at character "
                                                   f"{where})")
        field = _field_path(first.get("loc", ()))
        message = f"{field or 'body'}: {first.get('msg', 'invalid')}"
        if "input" in first and first.get("type") != "missing":
            message += f" (got {_short(first['input'])})"
        if len(problems) > 1:
            message += f"; and {len(problems) - 1} more problem(s)"
        return answer(422, "validation_error", message, field)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            code, message = "not_found", f"no endpoint {request.method} {request.url.path}; see /docs"
        elif exc.status_code == 405:
            code, message = "method_not_allowed", f"{request.url.path} does not accept {request.method}"
        else:  # other refusals of the HTTP layer keep their status
            code, message = HTTP_CODES.get(exc.status_code, "http_error"), str(exc.detail)
        return answer(exc.status_code, code, message, None, getattr(exc, "headers", None))

    # Unexpected errors are answered by the outermost middleware of ours (Unexpected), not by an
    # exception handler for Exception: Starlette re-raises those to the server after answering, and
    # uvicorn then closes the connection, so a client's next request on it was reset.
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(Unexpected)

    # ------------------------------------------------------------ auth

    bearer = HTTPBearer(auto_error=False, description="The server's token (rsembed-store serve --token).")

    def check_token(creds: Optional[HTTPAuthorizationCredentials], why: str) -> None:
        if token is None:
            return
        if creds is None:
            raise ApiError(401, "unauthorized", f"{why} needs the header 'Authorization: Bearer <token>'",
                           headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(creds.credentials.encode("utf-8"), token.encode("utf-8")):
            raise ApiError(401, "unauthorized", "the bearer token is not the server's token",
                           headers={"WWW-Authenticate": "Bearer"})

    def reader(creds: Optional[HTTPAuthorizationCredentials] = Security(bearer)):
        if protect_reads:
            check_token(creds, "this server protects reads: every endpoint but /health")
        return creds

    def writer(creds: Optional[HTTPAuthorizationCredentials] = Security(bearer)):
        check_token(creds, "this endpoint writes to the store and")
        return creds

    def ok(data: Any, status: int = 200):
        return Response(dumps(data), status_code=status, media_type="application/json")

    def limit(count: int, what: str, field: str, cap: int = max_batch) -> None:
        if count > cap:
            raise ApiError(413, "too_large", f"{what} has {count}; at most {cap} are accepted per request "
                                             "(the server's limit): split it", field)

    # ------------------------------------------------------------ reads

    @app.get("/health", tags=["service"], summary="Is the service up")
    def health():
        """Always open (no token): ``{"ok": true, "version", "store"}``."""
        return ok({"ok": True, "version": __version__, "store": store.uri})

    @app.get("/models", tags=["service"], summary="The registered models", responses=errors)
    def models(creds=Depends(reader)):
        """Every registered model's declared ModelInfo (``{"models": [...]}``)."""
        from ..registry import describe_models

        return ok({"models": describe_models()})

    @app.get("/stats", tags=["service"], summary="What the store holds", responses=errors)
    def stats(creds=Depends(reader)):
        """Rows per space (pooled/grid), versions, bytes, indexes: ``Store.stats()``."""
        return ok(store.stats())

    # ------------------------------------------------------------ embeddings

    @app.post("/embeddings", tags=["embeddings"], summary="Cache-first get of one answer", responses=errors)
    def embeddings(body: m.EmbeddingsBody, creds=Depends(reader)):
        """The stored answer to a request; on a miss, compute, store and return it.

        ``compute=true`` (the default) needs the token when the server has one;
        ``compute=false`` never computes and answers a miss with 404 ``not_found``.
        """
        if body.compute:
            check_token(creds, "compute=true (computing on a miss writes to the store)")
        resolved = _resolved(body.request, "request")
        with field_of("request"):
            emb = store.get(resolved, compute=body.compute)
        if emb is None:
            raise ApiError(404, "not_found", f"no stored answer for key {resolved.key} and compute=false",
                           "request")
        return ok(embedding_json(emb, body.grid_encoding))

    @app.post("/embeddings/lookup", tags=["embeddings"], summary="Batch look-up, never computes",
              responses=errors)
    def lookup(body: m.LookupBody, creds=Depends(reader)):
        """Stored answers for keys or requests, in order, ``null`` for misses."""
        limit(len(body.items), "items", "items")
        wanted = []
        for i, item in enumerate(body.items):
            field = f"items[{i}]"
            wanted.append(_check_key(item, field) if isinstance(item, str) else _resolved(item, field))
        found = store.lookup(wanted)
        results = [None if e is None else embedding_json(e, body.grid_encoding) for e in found]
        hits = sum(r is not None for r in results)
        return ok({"results": results, "hits": hits, "misses": len(results) - hits})

    # ------------------------------------------------------------ search

    @app.post("/search", tags=["search"], summary="Places most like a vector, key or request",
              responses=errors)
    def search(body: m.SearchBody, creds=Depends(reader)):
        """The ``k`` stored answers nearest to ``like`` in ``model``'s space."""
        if body.compute:
            check_token(creds, "compute=true (computing on a miss writes to the store)")
        limit(body.k, "k", "k")
        like = _like(body)
        temporal = _temporal(body.temporal, "temporal")
        within = _area(body.within, "within") if body.within is not None else None
        result = store.search(body.model, like, k=body.k, temporal=temporal, within=within, where=body.where,
                              exclude_self=body.exclude_self, metric=body.metric, revision=body.revision,
                              compute=body.compute)
        return ok({"results": result.to_dicts()})

    @app.post("/search/batch", tags=["search"], summary="Many query vectors at once", responses=errors)
    def search_batch(body: m.SearchBatchBody, creds=Depends(reader)):
        """The ``k`` nearest stored answers for each of ``vectors`` (one result list per vector, in order)."""
        limit(len(body.vectors), "vectors", "vectors")
        limit(body.k, "k", "k")
        temporal = _temporal(body.temporal, "temporal")
        within = _area(body.within, "within") if body.within is not None else None
        with field_of("vectors"):
            results = store.search_many(body.model, body.vectors, k=body.k, temporal=temporal, within=within,
                                        where=body.where, metric=body.metric, revision=body.revision)
        return ok({"results": [r.to_dicts() for r in results]})

    def _like(body):
        like = body.like
        given = [n for n in ("vector", "key", "request") if getattr(like, n) is not None]
        if len(given) != 1:
            raise ApiError(422, "spec_error", "like needs exactly one of 'vector', 'key' or 'request', got "
                                              f"{given or 'none'}", "like")
        if like.vector is not None:
            with field_of("like.vector"), np.errstate(over="ignore"):  # beyond float32: inf, refused below
                vector = np.asarray(like.vector, dtype=np.float32)
                if vector.size == 0 or not np.all(np.isfinite(vector)):
                    raise VectorError("like.vector must be a non-empty list of finite numbers")
            return vector
        if like.key is not None:
            key = _check_key(like.key, "like.key")
            with field_of("like.key"):
                space = store.space_for(body.model, body.revision)
                hit = store.lookup_many([key], space=space.space)[0]
            if hit is None:
                raise ApiError(404, "not_found", f"key {key} is not stored in space {space.space!r}", "like.key")
            return hit
        resolved = _resolved(like.request, "like.request")
        with field_of("like.request"):
            emb = store.get(resolved, compute=body.compute)
        if emb is None:
            raise ApiError(404, "not_found", f"the like request (key {resolved.key}) is not stored; send "
                                             "compute=true to compute it", "like.request")
        return emb

    # ------------------------------------------------------------ sql

    @app.post("/sql", tags=["sql"], summary="One read-only DuckDB query", responses={
        **errors, 200: {"content": {"application/json": {}, ARROW_STREAM: {}},
                        "description": "JSON rows, or an Arrow IPC stream with format=arrow"}})
    def sql(body: m.SqlBody, creds=Depends(reader)):
        """Run one SELECT over the store's views; at most ``min(limit, sql_row_limit)`` rows."""
        import pyarrow as pa

        cap = sql_row_limit if body.limit is None else min(body.limit, sql_row_limit)
        with field_of("query"):
            table = store.sql(body.query, limit=cap + 1, timeout_s=sql_timeout_s)  # one more row: truncated?
        truncated = table.num_rows > cap
        table = table.slice(0, cap) if truncated else table
        if body.format == "arrow":
            meta = dict(table.schema.metadata or {})
            meta.update({b"rsembed.truncated": b"true" if truncated else b"false",
                         b"rsembed.limit": str(cap).encode()})
            table = table.replace_schema_metadata(meta)
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer_:
                writer_.write_table(table)
            return Response(sink.getvalue().to_pybytes(), media_type=ARROW_STREAM, headers={
                "X-Row-Count": str(table.num_rows), "X-Truncated": "true" if truncated else "false"})
        from .sql_values import column_values

        columns = table.column_names
        values = [column_values(c) for c in table.columns]
        rows = [[col[i] for col in values] for i in range(table.num_rows)]
        return ok({"columns": columns, "rows": rows, "row_count": len(rows), "truncated": truncated})

    # ------------------------------------------------------------ ingest

    @app.post("/ingest", tags=["ingest"], summary="Start an ingest job", status_code=202, responses=errors)
    def ingest(body: m.IngestBody, creds=Depends(writer)):
        """Plan the cells of ``region`` x ``windows`` and compute what is missing, in the background.

        The input is checked here (a bad region or window is a 422 and no job
        starts); the answer is 202 ``{"job_id", ...}``; poll ``GET /jobs/{job_id}``.
        """
        from ..ingest.plan import plan, region_cells
        from ..limits import Limits
        from ..registry import model_class
        from ..specs import OutputSpec

        with field_of("model"):
            model_class(body.model)
        limit(len(body.windows), "windows", "windows")
        windows = [_temporal(w, f"windows[{i}]") for i, w in enumerate(body.windows)]
        output = None
        if body.output is not None:
            with field_of("output"):
                output = OutputSpec.from_dict(body.output)
        region = _area(body.region, "region")
        with field_of("h3_res"):
            if not 0 <= body.h3_res <= 15:
                raise SpecError(f"h3_res={body.h3_res!r} is not accepted; use an integer H3 resolution in [0, 15]")
        with field_of("region"):
            try:
                cells = region_cells(region, body.h3_res, max_cells=max_ingest_requests)
            except SpecError as exc:
                if "max_cells=" in str(exc):  # the region covers more cells than one job may hold
                    raise ApiError(413, "too_large", str(exc).replace("raise max_cells", "split the region"),
                                   "region") from None
                raise
        limit(len(cells) * len(windows), "this ingest (cells x windows)", "region", max_ingest_requests)
        with field_of("region"):
            the_plan = plan(body.model, cells, body.h3_res, windows, output=output,
                            max_cells=max_ingest_requests, limits=Limits.from_config(store.config))
        return ok(jobs.submit(the_plan), 202)

    @app.get("/jobs/{job_id}", tags=["ingest"], summary="The state of an ingest job", responses=errors)
    def job(job_id: str, creds=Depends(reader)):
        """``status`` queued|running|done|failed, ``progress`` {done, total}, ``summary`` when done."""
        found = jobs.get(job_id)
        if found is None:
            raise ApiError(404, "not_found", f"no job {job_id!r} (jobs live in the server's memory)", "job_id")
        return ok(found)

    return app


_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def _field_path(loc) -> Optional[str]:
    """A pydantic error location as a body field path: ``("body", "items", 2)`` -> ``"items[2]"``.

    Union member tags that pydantic adds to a location (``str``, ``dict[str,any]``) are dropped.
    """
    out = ""
    for i, part in enumerate(loc):
        if i == 0 and part in ("body", "path", "query", "header"):
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).lower() in _UNION_TAGS or "[" in str(part):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or None


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = ["ARROW_STREAM", "ApiError", "ERROR_RULES", "Jobs", "create_app", "embedding_json", "error_codes",
           "grid_json", "jsonable"]
