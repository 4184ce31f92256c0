"""The viewer's routes: the page, its static files, offline /docs and the picture's binary data.

``add(app, ctx)`` is called by the service's ``create_app`` like every other
group of routes. The page (``/`` and ``/ui``) and its files are open (they are
the same for everyone and hold no data); the data endpoints use the service's
``reader`` dependency, so ``--protect-reads`` covers them too.

Cells reach the browser as an Arrow IPC stream (``cell`` uint64, ``r, g, b``
uint8, ``n`` uint32), about 15 bytes a cell, never per-row JSON.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoint annotations at runtime.

import mimetypes
import os
from pathlib import Path
from typing import Optional

from ...errors import ApiError, SpecError
from .picture import Pictures, parse_window, windows_of

STATIC = Path(__file__).parent / "static"
BASEMAP_ENV = "RSEMBED_STORE_BASEMAP"  # an XYZ tile URL template such as .../{z}/{x}/{y}.png; unset: none
MAX_CELLS = 150_000  # cells one viewport answer may hold (the server's cap; a request may ask for fewer)
ARROW_STREAM = "application/vnd.apache.arrow.stream"
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".png": "image/png",
          ".txt": "text/plain", "": "text/plain"}


def static_file(name: str) -> Path:
    """The file ``name`` under the static folder; 404 for anything outside it or missing."""
    path = (STATIC / name).resolve()
    if STATIC.resolve() not in path.parents or not path.is_file():
        raise ApiError(404, "not_found", f"no viewer file {name!r}", "path")
    return path


def basemap_url() -> Optional[str]:
    """The configured basemap (``$RSEMBED_STORE_BASEMAP``), checked to be an XYZ template, or None."""
    url = os.environ.get(BASEMAP_ENV, "").strip()
    if not url:
        return None
    if not all(part in url for part in ("{z}", "{x}", "{y}")):
        raise SpecError(f"${BASEMAP_ENV}={url!r} is not an XYZ tile URL template: it needs {{z}}, {{x}} and {{y}}")
    return url


def _bbox(text: Optional[str]):
    if not text:
        return None
    try:
        box = tuple(float(x) for x in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or not (-90 <= box[1] <= box[3] <= 90) or not all(-180 <= box[i] <= 180 for i in (0, 2)):
        raise ApiError(422, "spec_error", f"bbox={text!r} is not minlon,minlat,maxlon,maxlat in degrees "
                                          "(lon -180..180, lat -90..90, minlat <= maxlat)", "bbox")
    return box


def _text_tower(model: str) -> bool:
    """Whether ``model`` declares a text tower (``ModelInfo.text``), so the page offers text search."""
    from ...registry import model_info

    try:
        return bool(getattr(model_info(model), "text", False))
    except Exception:  # a space of a model no longer registered: no text search
        return False


def add(app, ctx) -> None:
    from fastapi import Depends, Query
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import FileResponse, Response

    store = ctx.store
    pictures = ctx.extra.setdefault("pictures", Pictures(store))
    vendor = "/viewer/static/vendor/swagger-ui"

    # /docs from our own copy of Swagger UI (FastAPI's default loads it from a CDN) and no /redoc (ditto)
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) not in ("/docs", "/redoc")]
    app.docs_url = app.redoc_url = None

    # The page, its files and /docs are plain Starlette routes: not API operations, so not in the OpenAPI
    # document (whose operations the service's tests match one-to-one with its API routes).
    async def docs(request):
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - API docs",
                                   swagger_js_url=f"{vendor}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{vendor}/swagger-ui.css",
                                   swagger_favicon_url=f"{vendor}/favicon-32x32.png",
                                   swagger_ui_parameters={"validatorUrl": None})

    async def page(request):
        return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    async def static(request):
        path = request.path_params["path"]
        file = static_file(path)
        kind = _TYPES.get(file.suffix) or mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        cache = "public, max-age=86400" if path.startswith("vendor/") else "no-cache"
        return FileResponse(file, media_type=kind, headers={"Cache-Control": cache})

    app.add_route("/docs", docs, methods=["GET"], include_in_schema=False)
    app.add_route("/", page, methods=["GET"], include_in_schema=False)
    app.add_route("/ui", page, methods=["GET"], include_in_schema=False)
    app.add_route("/viewer/static/{path:path}", static, methods=["GET"], include_in_schema=False)

    @app.get("/viewer/spaces", tags=["viewer"], summary="The spaces the map can draw", responses=ctx.errors)
    def spaces(creds=Depends(ctx.reader)):
        """Each space with its model, dimension, H3 resolution, time windows (rows each, most first) and
        whether its model has a text tower; plus the configured ``basemap`` and the ``max_cells`` cap."""
        out = []
        for s in store.spaces():
            out.append({**s.to_dict(), "text": _text_tower(s.model), "windows": windows_of(store, s.space)})
        if out and out[0]["windows"]:  # what the page draws first: start on it now
            first = out[0]["windows"][0]
            pictures.warm(out[0]["space"], parse_window(first["window"]))
        return ctx.ok({"spaces": out, "basemap": basemap_url(), "max_cells": MAX_CELLS})

    @app.get("/viewer/picture", tags=["viewer"], summary="What the picture of a space and window is",
             responses=ctx.errors)
    def picture(space: str = Query(description="A space name (GET /viewer/spaces)."),
                window: Optional[str] = Query(None, description="START/END ISO dates; default: the space's "
                                                                "window with most rows."),
                creds=Depends(ctx.reader)):
        """The picture's version, window, rows, H3 resolution, bounds and the share of variance of each
        principal component."""
        return ctx.ok(pictures.get(space, _window(window)).describe())

    @app.get("/viewer/cells", tags=["viewer"], summary="The coloured cells of a viewport, as Arrow",
             responses={**ctx.errors, 200: {"content": {ARROW_STREAM: {}},
                                            "description": "Arrow IPC stream: cell, r, g, b, n"}})
    def cells(space: str = Query(description="A space name (GET /viewer/spaces)."),
              window: Optional[str] = Query(None, description="START/END ISO dates."),
              bbox: Optional[str] = Query(None, description="minlon,minlat,maxlon,maxlat (default: all)."),
              res: int = Query(15, ge=0, le=15, description="The finest H3 resolution wanted."),
              max_cells: int = Query(MAX_CELLS, ge=1, description=f"At most this many cells (<= {MAX_CELLS})."),
              creds=Depends(ctx.reader)):
        """The cells whose centre is in ``bbox``, at the finest resolution <= ``res`` (and the space's) whose
        count fits ``max_cells``; coarser cells are parents coloured by their rows' mean vector. Headers
        ``X-Viewer-Res`` (the resolution used) and ``X-Viewer-Version`` (the space's Lance version)."""
        import pyarrow as pa

        box = _bbox(bbox)
        pic = pictures.get(space, _window(window))
        used, table = pic.view(box, res, min(max_cells, MAX_CELLS))
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return Response(sink.getvalue().to_pybytes(), media_type=ARROW_STREAM,
                        headers={"X-Viewer-Res": str(used), "X-Viewer-Version": str(pic.version),
                                 "X-Viewer-Rows": str(table.num_rows)})

    @app.get("/viewer/cell", tags=["viewer"], summary="The stored row at a point", responses=ctx.errors)
    def cell(space: str = Query(description="A space name (GET /viewer/spaces)."),
             lon: float = Query(ge=-180, le=180), lat: float = Query(ge=-90, le=90),
             window: Optional[str] = Query(None, description="START/END ISO dates."),
             creds=Depends(ctx.reader)):
        """The row of ``space`` in ``window`` whose H3 cell holds the point, else the one whose centre is
        nearest: ``{key, cell, h3, lon, lat, start_date, end_date, model, revision}``."""
        return ctx.ok(_row_at(store, pictures.get(space, _window(window)), lon, lat))


def _window(text: Optional[str]):
    try:
        return parse_window(text)
    except SpecError as exc:
        raise ApiError(422, "spec_error", str(exc), "window") from None


def _row_at(store, pic, lon: float, lat: float) -> dict:
    import h3
    import numpy as np

    from .picture import _window_filter

    base = pic.level(pic.h3_res)
    here = int(h3.str_to_int(h3.latlng_to_cell(lat, lon, pic.h3_res)))
    hit = np.flatnonzero(base.cells == here)
    if len(hit) == 0:  # no stored cell under the point: the nearest centre (degrees, lon scaled by cos lat)
        d = (base.lat - lat) ** 2 + ((base.lon - lon) * np.cos(np.radians(lat))) ** 2
        hit = [int(d.argmin())]
    from ...h3int import children_range

    lo, hi = children_range(int(base.cells[hit[0]]), store.space_info(pic.space).h3_res)
    t = store.to_arrow(pic.space, version=pic.version,
                       columns=["key", "h3", "cell", "lon", "lat", "start_date", "end_date", "model", "revision"],
                       filter=f"h3 >= {lo} AND h3 <= {hi} AND {_window_filter(pic.window)}")
    rows = t.to_pylist()
    if not rows:
        raise ApiError(404, "not_found", f"no stored row at lon={lon}, lat={lat} in {pic.space!r}", "lon")
    row = min(rows, key=lambda r: ((r["lon"] - lon) ** 2 + (r["lat"] - lat) ** 2, r["key"]))
    for name in ("h3", "cell"):
        row[name] = None if row[name] is None else format(row[name] & 0xFFFFFFFFFFFFFFFF, "x")
    for name in ("start_date", "end_date"):
        row[name] = row[name].isoformat() if row[name] is not None else None
    return row
