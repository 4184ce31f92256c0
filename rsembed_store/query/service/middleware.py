"""ASGI middleware of the service: unexpected errors, body size, and JSON bodies whatever their content type."""

import logging

from .errors import error_body

log = logging.getLogger("rsembed_store.service")

MAX_BODY_BYTES = 32 * 1024 * 1024  # a request body larger than this is refused with 413


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


class JsonBody:
    """ASGI middleware: a POST body is read as JSON whatever its Content-Type.

    Every endpoint that takes a body takes JSON, and ``curl -d '{...}'`` sends
    ``application/x-www-form-urlencoded``; FastAPI would then not parse the body
    and answer that a dictionary was expected, which hides the real mistake.
    So the content type of a POST is set to ``application/json`` before routing:
    a body that is JSON works, one that is not gets "the request body is not
    valid JSON". Multipart bodies are left alone (no endpoint takes them).
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("method") == "POST":
            headers = [(k, v) for k, v in scope.get("headers") or () if k != b"content-type"]
            given = dict(scope.get("headers") or ()).get(b"content-type", b"")
            if not given.startswith(b"multipart/") and b"json" not in given:
                scope = dict(scope, headers=headers + [(b"content-type", b"application/json")])
        await self.app(scope, receive, send)
