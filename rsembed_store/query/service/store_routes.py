"""Routes over what the store holds: health, models, stats, cache-first get and batch look-up."""

# No ``from __future__ import annotations``: FastAPI reads the endpoint annotations at runtime.

from ...errors import ApiError
from .encoding import embedding_json
from .errors import field_of
from .inputs import check_key, resolved_of


def add(app, ctx) -> None:
    from fastapi import Depends

    from ... import __version__

    m, store, errors = ctx.models, ctx.store, ctx.errors

    @app.get("/health", tags=["service"], summary="Is the service up")
    def health():
        """Always open (no token): ``{"ok": true, "version", "store"}``."""
        return ctx.ok({"ok": True, "version": __version__, "store": store.uri})

    @app.get("/models", tags=["service"], summary="The registered models", responses=errors)
    def models(creds=Depends(ctx.reader)):
        """Every registered model's declared ModelInfo (``{"models": [...]}``)."""
        from ...registry import describe_models

        return ctx.ok({"models": describe_models()})

    @app.get("/stats", tags=["service"], summary="What the store holds", responses=errors)
    def stats(creds=Depends(ctx.reader)):
        """Rows per space (pooled/grid), versions, bytes, indexes: ``Store.stats()``."""
        return ctx.ok(store.stats())

    @app.post("/embeddings", tags=["embeddings"], summary="Cache-first get of one answer", responses=errors)
    def embeddings(body: m.EmbeddingsBody, creds=Depends(ctx.reader)):
        """The stored answer to a request; on a miss, compute, store and return it.

        ``compute=true`` (the default) needs the token when the server has one;
        ``compute=false`` never computes and answers a miss with 404 ``not_found``.
        """
        if body.compute:
            ctx.check_token(creds, "compute=true (computing on a miss writes to the store)")
        resolved = resolved_of(body.request, "request")
        with field_of("request"):
            emb = store.get(resolved, compute=body.compute)
        if emb is None:
            raise ApiError(404, "not_found", f"no stored answer for key {resolved.key} and compute=false",
                           "request")
        return ctx.ok(embedding_json(emb, body.grid_encoding))

    @app.post("/embeddings/lookup", tags=["embeddings"], summary="Batch look-up, never computes",
              responses=errors)
    def lookup(body: m.LookupBody, creds=Depends(ctx.reader)):
        """Stored answers for keys or requests, in order, ``null`` for misses."""
        ctx.limit(len(body.items), "items", "items")
        wanted = []
        for i, item in enumerate(body.items):
            field = f"items[{i}]"
            wanted.append(check_key(item, field) if isinstance(item, str) else resolved_of(item, field))
        found = store.lookup(wanted)
        results = [None if e is None else embedding_json(e, body.grid_encoding) for e in found]
        hits = sum(r is not None for r in results)
        return ctx.ok({"results": results, "hits": hits, "misses": len(results) - hits})
