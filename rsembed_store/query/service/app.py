"""The application: settings, auth, middleware and handlers, and the routes of each concern.

:func:`create_app` checks the settings, builds the FastAPI app, installs the
error handlers (:mod:`.errors`) and middleware (:mod:`.middleware`), and adds
the routes of each concern (:mod:`.store_routes`, :mod:`.search_routes`,
:mod:`.sql_routes`, :mod:`.ingest_routes`), which share one :class:`Context`.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoint annotations at runtime.

import hmac
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

from ...errors import ApiError, SpecError, require
from .encoding import dumps
from .errors import install_handlers
from .jobs import Jobs
from .middleware import MAX_BODY_BYTES, BodyLimit, JsonBody, Unexpected

SERVE_ENV = "RSEMBED_STORE_SERVE"  # how `serve --workers N` tells each worker process what to serve


@dataclass
class Context:
    """What every route needs: the store, the settings, the body models and the auth dependencies."""

    store: Any
    settings: Dict[str, Any]
    models: Any  # the body models (bodies.body_models())
    jobs: Jobs
    errors: Dict[int, Any]  # the documented error responses of a data endpoint
    check_token: Callable[[Any, str], None]
    reader: Callable  # a FastAPI dependency: the token, when reads are protected
    writer: Callable  # a FastAPI dependency: the token, always (when the server has one)
    extra: Dict[str, Any] = field(default_factory=dict)

    def ok(self, data: Any, status: int = 200):
        """``data`` as a JSON response (strict JSON, via :func:`~.encoding.dumps`)."""
        from fastapi.responses import Response

        return Response(dumps(data), status_code=status, media_type="application/json")

    def limit(self, count: int, what: str, field: str, cap: Optional[int] = None) -> None:
        """413 when ``count`` is over ``cap`` (default: the server's ``max_batch``)."""
        cap = self.settings["max_batch"] if cap is None else cap
        if count > cap:
            raise ApiError(413, "too_large", f"{what} has {count}; at most {cap} are accepted per request "
                                             "(the server's limit): split it", field)


def app_from_environment():
    """The application described by ``$RSEMBED_STORE_SERVE`` (JSON: db, storage_options, config, token,
    protect_reads): the factory each worker of ``rsembed-store serve --workers N`` imports."""
    import json
    import os

    from ...store import Store

    spec = json.loads(os.environ[SERVE_ENV])
    store = Store.open(spec["db"], storage_options=spec.get("storage_options"), config=spec.get("config"))
    return create_app(store, token=spec.get("token"), protect_reads=bool(spec.get("protect_reads")))


def _check_settings(token, protect_reads, max_batch, sql_row_limit, sql_timeout_s, max_ingest_requests,
                    max_body_bytes) -> None:
    if token is not None and (not isinstance(token, str) or not token):
        raise SpecError("token must be a non-empty string (or None for no token)")
    if protect_reads and token is None:
        raise SpecError("protect_reads needs a token: give --token (or RSEMBED_STORE_TOKEN)")
    for name, value in (("max_batch", max_batch), ("sql_row_limit", sql_row_limit),
                        ("max_ingest_requests", max_ingest_requests), ("max_body_bytes", max_body_bytes)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise SpecError(f"{name}={value!r} must be a positive integer")
    if isinstance(sql_timeout_s, bool) or not isinstance(sql_timeout_s, (int, float)) or not sql_timeout_s > 0:
        raise SpecError(f"sql_timeout_s={sql_timeout_s!r} must be a positive number of seconds")


def _auth(token: Optional[str], protect_reads: bool):
    """(check_token, reader, writer): the bearer-token check and the two FastAPI dependencies."""
    from fastapi import Security
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

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

    return check_token, reader, writer


def create_app(store, *, token: Optional[str] = None, protect_reads: bool = False, max_batch: int = 1000,
               sql_row_limit: int = 10_000, sql_timeout_s: float = 30.0, max_ingest_requests: int = 100_000,
               max_body_bytes: int = MAX_BODY_BYTES):
    """Build the FastAPI application over ``store``.

    ``token``: writes (``POST /ingest``, and computing on a miss) need
    ``Authorization: Bearer <token>``; ``protect_reads``: every data endpoint
    but ``/health`` needs it too. ``max_batch`` caps look-up items, search
    ``k`` and ingest windows (413 beyond); ``sql_row_limit`` and
    ``sql_timeout_s`` cap SQL; ``max_ingest_requests`` caps one ingest job
    (cells x windows); ``max_body_bytes`` caps a request body (413 unread beyond).
    """
    require("fastapi", "serve", "The HTTP service")
    from fastapi import FastAPI

    from ... import __version__
    from . import ingest_routes, search_routes, sql_routes, store_routes
    from .. import viewer
    from .bodies import body_models

    _check_settings(token, protect_reads, max_batch, sql_row_limit, sql_timeout_s, max_ingest_requests,
                    max_body_bytes)
    m = body_models()
    app = FastAPI(
        title="rsembed-store",
        version=__version__,
        description="Cache-first embeddings, similarity search, read-only SQL and ingest jobs over one "
                    "rsembed-store. Every error is {\"error\": {\"code\", \"message\", \"field\"}}; "
                    "see docs/http.md.",
        responses={422: {"model": m.ErrorResponse, "description": "Invalid input, or it cannot be answered"}},
    )
    settings = {"protect_reads": protect_reads, "token": token is not None, "max_batch": max_batch,
                "sql_row_limit": sql_row_limit, "sql_timeout_s": sql_timeout_s,
                "max_ingest_requests": max_ingest_requests, "max_body_bytes": max_body_bytes}
    check_token, reader, writer = _auth(token, protect_reads)
    ctx = Context(store=store, settings=settings, models=m, jobs=Jobs(store),
                  errors={status: {"model": m.ErrorResponse} for status in (401, 404, 413, 422, 500)},
                  check_token=check_token, reader=reader, writer=writer)
    app.state.store = store
    app.state.jobs = ctx.jobs
    app.state.settings = settings

    install_handlers(app)
    # Unexpected errors are answered by the outermost middleware of ours (Unexpected), not by an
    # exception handler for Exception: Starlette re-raises those to the server after answering, and
    # uvicorn then closes the connection, so a client's next request on it was reset.
    app.add_middleware(JsonBody)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(Unexpected)

    for routes in (store_routes, search_routes, sql_routes, ingest_routes, viewer):
        routes.add(app, ctx)
    return app
