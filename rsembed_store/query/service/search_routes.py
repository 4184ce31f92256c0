"""Routes of similarity search: one query, and many query vectors at once."""

# No ``from __future__ import annotations``: FastAPI reads the endpoint annotations at runtime.

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
        like = like_of(store, body)
        temporal = temporal_of(body.temporal, "temporal")
        within = area_of(body.within, "within") if body.within is not None else None
        result = store.search(body.model, like, k=body.k, temporal=temporal, within=within, where=body.where,
                              exclude_self=body.exclude_self, metric=body.metric, revision=body.revision,
                              compute=body.compute)
        return ctx.ok({"results": result.to_dicts()})

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
