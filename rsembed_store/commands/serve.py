"""``rsembed-store serve``: the HTTP service (uvicorn), or one in-process request to it.

``--request METHOD PATH [--body JSON]`` builds the same application, sends it
ONE request in process (no socket), prints the answer and exits 0 only on a
2xx: the command line doubles as a smoke test of the API.
"""

from __future__ import annotations

import ipaddress
import sys

import click

from ..errors import NoStoreError, SpecError, require
from .common import emit_json
from .ingest import parse_sources


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: the endpoints that may write: the store is created for them when absent
_WRITES = {("POST", "/embeddings"), ("POST", "/ingest")}


def _may_write(method: str, path: str) -> bool:
    return (method.upper(), path.split("?", 1)[0].rstrip("/") or "/") in _WRITES


def _read_body(body: str | None) -> str | None:
    """``--body`` text as given, or the contents of ``@FILE``."""
    if body is None or not body.startswith("@"):
        return body
    try:
        with open(body[1:], encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise SpecError(f"--body {body!r}: cannot read the file: {exc}") from None


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind (loopback by default; give a --token before binding others).")
@click.option("--port", type=int, default=8765, show_default=True, help="TCP port.")
@click.option("--token", envvar="RSEMBED_STORE_TOKEN", show_envvar=True,
              help="Bearer token that writes need (ingest, computing on a miss).")
@click.option("--protect-reads", is_flag=True, help="Require the token on every endpoint but /health.")
@click.option("--source", "sources", multiple=True,
              help="Imagery source NAME=DIR for computing misses (local provider); repeatable.")
@click.option("--request", "one_request", nargs=2, metavar="METHOD PATH",
              help="Send one in-process request (e.g. GET /health), print the answer, exit non-zero unless 2xx.")
@click.option("--body", help="JSON body for --request, or @FILE to read it from a file.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Server processes. Each holds its own store handle and serving tiers (the saved tier "
                   "files are shared through the page cache); more than one uses more cores.")
@click.pass_obj
def serve(obj, host, port, token, protect_reads, sources, one_request, body, workers):
    """Serve the store over HTTP: get, look-up, search, SQL and ingest jobs (JSON; docs at /docs).

    \b
    Examples:
      rsembed-store serve --source s2-l2a=./rsembed-demo/scenes --token "$TOKEN"
      rsembed-store serve --request GET /stats
      rsembed-store serve --request POST /sql --body '{"query": "SELECT count(*) FROM embeddings"}'

    \b
    --request reads need a store at --db (exit 2 when there is none); only
    POST /embeddings and POST /ingest may create it.
    """
    from ..query.service import create_app

    if body is not None and not one_request:
        raise SpecError("--body goes with --request METHOD PATH")
    config = {"sources": parse_sources(sources)} if sources else {}
    if one_request:
        # one request creates the store only if it may write (compute a miss, start an ingest)
        store = obj.open_store(config, create=_may_write(*one_request))
    else:
        try:
            store = obj.open_store(config, create=False)
        except NoStoreError:  # a server takes writes, so it may start on an empty store, but says so
            store = obj.open_store(config, create=True)
            click.echo(f"note: there was no store at {obj.db!r}: created an empty one "
                       "(ingest jobs and computed misses fill it)", err=True)
    app = create_app(store, token=token or None, protect_reads=protect_reads)
    if one_request:
        sys.exit(_one_request(app, one_request[0], one_request[1], _read_body(body), token))
    uvicorn = require("uvicorn", "serve", "rsembed-store serve")
    if not _is_loopback(host) and not token:
        click.echo(f"warning: serving on {host} without --token: anyone who can reach it may read the store "
                   "(writes are open too)", err=True)
    click.echo(f"serving {store.uri} at http://{host}:{port} (API docs at http://{host}:{port}/docs)"
               + (f" with {workers} worker processes" if workers > 1 else ""), err=True)
    if workers == 1:
        uvicorn.run(app, host=host, port=port, log_level="info")
        return
    # several processes: uvicorn imports the app in each from a factory, which reads how to build it
    # from the environment they inherit
    import json
    import os

    from ..query.service import SERVE_ENV

    os.environ[SERVE_ENV] = json.dumps({"db": obj.db, "storage_options": obj.storage_options,
                                        "config": store.config, "token": token or None,
                                        "protect_reads": protect_reads})
    uvicorn.run("rsembed_store.query.service.app:app_from_environment", factory=True, host=host, port=port,
                workers=workers, log_level="info")


def _one_request(app, method: str, path: str, body: str | None, token: str | None) -> int:
    """Send one request to ``app`` in process; print the answer; the exit code (0 on a 2xx)."""
    import asyncio

    httpx = require("httpx", "serve", "rsembed-store serve --request")
    method = method.upper()
    if not path.startswith("/"):
        raise SpecError(f"--request path {path!r} must start with '/', e.g. /health")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if body is not None:
        headers["Content-Type"] = "application/json"

    async def send():
        # the ASGI app itself, no socket; an unexpected error is answered (500) rather than raised
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://rsembed-store") as client:
            return await client.request(method, path, headers=headers,
                                        content=body.encode("utf-8") if body is not None else None)

    res = asyncio.run(send())
    is_json = res.headers.get("content-type", "").startswith("application/json")
    if is_json:
        emit_json(res.json())
    else:  # e.g. an Arrow stream from POST /sql with format=arrow: the bytes, for a pipe
        sys.stdout.buffer.write(res.content)
        sys.stdout.flush()
    if res.status_code == 202 and is_json and "job_id" in res.json():
        # the ingest job runs in this process: finish it before exiting
        click.echo("waiting for the ingest job to finish ...", err=True)
        app.state.jobs.wait()
        job = app.state.jobs.get(res.json()["job_id"])
        click.echo(f"job {job['job_id']}: {job['status']}", err=True)
        if job["status"] != "done":
            return 1
    if not 200 <= res.status_code < 300:
        click.echo(f"error: {method} {path} answered {res.status_code}", err=True)
        return 1
    return 0
