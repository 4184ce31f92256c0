"""Routes of similarity search: one query, and many query vectors at once."""

# No ``from __future__ import annotations``: FastAPI reads the endpoint annotations at runtime.

from .encoding import ARROW_STREAM
from .errors import field_of
from .inputs import area_of, like_of, temporal_of


def add(app, ctx) -> None:
    from fastapi import Depends

    m, store, errors = ctx.models, ctx.store, ctx.errors

    @app.post("/search", tags=["search"], summary="Places most like a vector, key or request",
              responses=errors)
    def search(body: m.SearchBody, creds=Depends(ctx.reader)):
        """The ``k`` stored answers nearest to ``like`` in ``model``'s space."""
        if body.compute:
            ctx.check_token(creds, "compute=true (computing on a miss writes to the store)")
        ctx.limit(body.k, "k", "k")
        like, negatives = examples_of(body)
        temporal = temporal_of(body.temporal, "temporal")
        within = area_of(body.within, "within") if body.within is not None else None
        with field_of("like" if body.text is None else "text"):
            result = store.search(body.model, like, k=body.k, negatives=negatives, text=body.text,
                                  combine=body.combine, temporal=temporal, within=within, where=body.where,
                                  exclude_self=body.exclude_self, metric=body.metric, revision=body.revision,
                                  compute=body.compute)
        return ctx.ok({"results": result.to_dicts()})

    def examples_of(body):
        """(like, negatives) of a search body: one example or a list of them, and a list (or None)."""
        if isinstance(body.like, list):
            ctx.limit(len(body.like), "like", "like")
            like = [like_of(store, body, item, f"like[{i}]") for i, item in enumerate(body.like)]
        else:
            like = None if body.like is None else like_of(store, body)
        negatives = None
        if body.negatives is not None:
            ctx.limit(len(body.negatives), "negatives", "negatives")
            negatives = [like_of(store, body, item, f"negatives[{i}]") for i, item in enumerate(body.negatives)]
        return like, negatives

    @app.post("/change", tags=["search"], summary="Per-cell change between two windows", responses={
        **errors, 200: {"content": {"application/json": {}, ARROW_STREAM: {}},
                        "description": "JSON cells, or an Arrow IPC stream (cell, distance, lon, lat)"}})
    def change(body: m.ChangeBody, creds=Depends(ctx.reader)):
        """Per H3 cell stored in both windows, the cosine distance between its two vectors."""
        from fastapi import Response

        from ...limits import max_json_cells
        from ..change import change_arrow, change_json

        windows = [temporal_of(body.from_, "from"), temporal_of(body.to, "to")]
        within = area_of(body.within, "within") if body.within is not None else None
        table = store.change(body.model, windows[0], windows[1], within=within, where=body.where,
                             revision=body.revision)
        if body.format == "arrow":
            return Response(change_arrow(table), media_type=ARROW_STREAM,
                            headers={"X-Row-Count": str(table.num_rows)})
        return ctx.ok(change_json(table, max_json_cells(store.config)))

    @app.post("/search/batch", tags=["search"], summary="Many query vectors at once", responses=errors)
    def search_batch(body: m.SearchBatchBody, creds=Depends(ctx.reader)):
        """The ``k`` nearest stored answers for each of ``vectors`` (one result list per vector, in order)."""
        ctx.limit(len(body.vectors), "vectors", "vectors")
        ctx.limit(body.k, "k", "k")
        temporal = temporal_of(body.temporal, "temporal")
        within = area_of(body.within, "within") if body.within is not None else None
        with field_of("vectors"):
            results = store.search_many(body.model, body.vectors, k=body.k, temporal=temporal, within=within,
                                        where=body.where, metric=body.metric, revision=body.revision)
        return ctx.ok({"results": [r.to_dicts() for r in results]})
