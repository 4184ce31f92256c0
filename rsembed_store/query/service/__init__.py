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

The package, by concern: :mod:`.app` (create_app, settings, auth), one
``*_routes`` module per group of endpoints, :mod:`.bodies` (request-body
models) and :mod:`.schemas` (the request specs' JSON Schemas), :mod:`.inputs`
(bodies to values), :mod:`.encoding` (JSON and Arrow answers), :mod:`.errors`
(the error shape), :mod:`.middleware` and :mod:`.jobs` (ingest jobs).

FastAPI is an optional dependency (``pip install 'rsembed-store[serve]'``):
importing this module does not import it; :func:`create_app` does.

>>> app = create_app(Store.open("./rsembed-store"), token="s3cret")   # doctest: +SKIP
"""

from ...errors import ApiError
from .app import SERVE_ENV, Context, app_from_environment, create_app
from .encoding import ARROW_STREAM, dumps, embedding_json, grid_json, jsonable
from .errors import ERROR_RULES, classify, error_body, error_codes
from .jobs import Jobs

__all__ = ["ARROW_STREAM", "ApiError", "Context", "ERROR_RULES", "Jobs", "SERVE_ENV", "app_from_environment",
           "classify", "create_app", "dumps", "embedding_json", "error_body", "error_codes", "grid_json", "jsonable"]
