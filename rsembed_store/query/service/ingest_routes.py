"""Routes of background ingest: start a job, and follow it."""

# No ``from __future__ import annotations``: FastAPI reads the endpoint annotations at runtime.

from ...errors import ApiError, SpecError
from .errors import field_of
from .inputs import area_of, temporal_of


def add(app, ctx) -> None:
    from fastapi import Depends

    m, store, errors = ctx.models, ctx.store, ctx.errors
    max_requests = ctx.settings["max_ingest_requests"]

    @app.post("/ingest", tags=["ingest"], summary="Start an ingest job", status_code=202, responses=errors)
    def ingest(body: m.IngestBody, creds=Depends(ctx.writer)):
        """Plan the cells of ``region`` x ``windows`` and compute what is missing, in the background.

        The input is checked here (a bad region or window is a 422 and no job
        starts); the answer is 202 ``{"job_id", ...}``; poll ``GET /jobs/{job_id}``.
        """
        from ...ingest.regions import region_cells
        from ...limits import Limits
        from ...registry import model_class
        from ...specs import OutputSpec

        with field_of("model"):
            model_class(body.model)
        ctx.limit(len(body.windows), "windows", "windows")
        windows = [temporal_of(w, f"windows[{i}]") for i, w in enumerate(body.windows)]
        output = None
        if body.output is not None:
            with field_of("output"):
                output = OutputSpec.from_dict(body.output)
        region = area_of(body.region, "region")
        with field_of("h3_res"):
            if not 0 <= body.h3_res <= 15:
                raise SpecError(f"h3_res={body.h3_res!r} is not accepted; use an integer H3 resolution in [0, 15]")
        with field_of("region"):
            try:
                cells = region_cells(region, body.h3_res, max_cells=max_requests)
            except SpecError as exc:
                if "max_cells=" in str(exc):  # the region covers more cells than one job may hold
                    raise ApiError(413, "too_large", str(exc).replace("raise max_cells", "split the region"),
                                   "region") from None
                raise
        ctx.limit(len(cells) * len(windows), "this ingest (cells x windows)", "region", max_requests)
        with field_of("region"):
            the_plan = store.plan(body.model, cells, windows, h3_res=body.h3_res, output=output,
                                  max_cells=max_requests, limits=Limits.from_config(store.config))
        return ctx.ok(ctx.jobs.submit(the_plan), 202)

    @app.get("/jobs/{job_id}", tags=["ingest"], summary="The state of an ingest job", responses=errors)
    def job(job_id: str, creds=Depends(ctx.reader)):
        """``status`` queued|running|done|failed, ``progress`` {done, total}, ``summary`` when done."""
        found = ctx.jobs.get(job_id)
        if found is None:
            raise ApiError(404, "not_found", f"no job {job_id!r} (jobs live in the server's memory)", "job_id")
        return ctx.ok(found)
