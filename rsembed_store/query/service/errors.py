"""One error shape for every endpoint: ``{"error": {"code", "message", "field"}}``.

:data:`ERROR_RULES` maps our exceptions to a status and a stable code;
:func:`install_handlers` answers ours, FastAPI's validation errors and
Starlette's HTTP refusals in that shape. Unexpected exceptions are answered by
the :class:`~.middleware.Unexpected` middleware instead (see there why).
"""

import logging
from contextlib import contextmanager
from typing import Any, Dict, Optional, Tuple

from ...errors import (
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
)

log = logging.getLogger("rsembed_store.service")

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


def install_handlers(app) -> None:
    """Answer our errors, request-validation errors and HTTP-layer refusals in the one error shape."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

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
