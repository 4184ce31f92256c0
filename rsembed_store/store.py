"""The Store users call: the storage core plus cache-first get, search, SQL, ingest and files.

:class:`Store` is :class:`~rsembed_store.storage.Storage` (rows, spaces,
versions) with the faces on top; each face lives in its wing and is imported
when first used (``query.get``, ``query.search``, ``query.sql``,
``query.maintain``, ``query.serving``, ``ingest.engine``, ``io``), so opening a
store imports none of them.

Custom weights in the config (``{"models": {id: {"weights": path}}}``) belong
to this store: its calls resolve and compute with them
(:meth:`Store.models_scope`), and the process's registry is left alone.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator, List, Mapping, Optional, Sequence

from .embedding import Embedding
from .sizes import dir_bytes
from .storage import SCALAR_INDEXES, PutResult, SpaceInfo, Storage
from .storage_options import default_uri, parse_storage_options, redact, storage_options_from_env


#: the H3 resolution of the cells an ingest plans unless told (the CLI's --h3-res, HTTP's h3_res)
PLAN_H3_RES = 9

class Store(Storage):
    """An embedding store: open it, then get, look up, search, query with SQL, ingest, import, export.

    >>> store = Store.open("./rsembed-store")                                    # doctest: +SKIP
    >>> emb = store.get("spectral", PointBuffer(11.0, 46.0, 250), TemporalSpec.year(2023))  # doctest: +SKIP
    >>> store.search("spectral", emb, k=5)                                       # doctest: +SKIP
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._getter = None
        self._serving = None
        self._models: Dict[str, type] = {}

    def _opened(self) -> None:
        if self.config.get("models"):
            from .ingest.models.weights import weights_variants

            self._models = weights_variants(self.config)

    @contextmanager
    def models_scope(self) -> Iterator[None]:
        """Within the block, model ids resolve to this store's classes (its custom weights) first.

        Every face of the store uses it; use it yourself to :func:`~rsembed_store.keys.resolve`
        a request the way this store would."""
        from .registry import models_in_scope

        with models_in_scope(self._models):
            yield

    # ------------------------------------------------------------ the storage core's hooks

    def _view(self, space: str):
        return self.serving.view(space)

    def _space_extras(self, space: str) -> dict:
        return {"serving": self._serving_summary(space)}

    def _known_key_prefixes(self, space: str):
        serving = self._serving  # one in memory only: no tier is loaded or built for a write
        tier = serving.loaded_tier(space) if serving is not None else None
        return None if tier is None else (tier.key_prefixes, tier.layout.keys(), tier.version)

    # ------------------------------------------------------------ faces

    def import_table(self, source, *, model: str, revision: str, **kwargs):
        """Bulk-import precomputed vectors (an Arrow table, a record-batch stream or a (Geo)Parquet
        path) into the space of ``imported:<model>``; see :func:`rsembed_store.io.importer.import_table`."""
        from .io.importer import import_table

        return import_table(self, source, model=model, revision=revision, **kwargs)

    def export(self, space: str, out, *, format: str = "geoparquet", **kwargs):
        """Write a space's rows (all, or those the filters select) to a file; see
        :func:`rsembed_store.io.exporter.export`."""
        from .io.exporter import export

        return export(self, space, out, format=format, **kwargs)

    @property
    def serving(self):
        """The serving tiers of this store (:class:`~rsembed_store.query.serving.Serving`): look-ups and
        searches answered from memory, in step with Lance. Configured by ``config["serving"]``."""
        if self._serving is None:
            with self._lock:
                if self._serving is None:
                    from .query.serving import Serving

                    self._serving = Serving(self, self.config)
        return self._serving

    @property
    def getter(self):
        if self._getter is None:
            from .query.get import Getter

            self._getter = Getter(self, self.config)
        return self._getter

    def lookup(self, items: Sequence) -> List[Optional[Embedding]]:
        """Stored answers for a batch of keys or requests, in order, ``None`` for misses.

        Never computes. Requests are resolved and grouped by space (one query each).
        """
        with self.models_scope():
            return self.getter.lookup(items)

    def get(self, model, spatial=None, temporal=None, sensor=None, output=None, input_prep=None,
            provider=None, *, compute: bool = True, config: Optional[Mapping] = None) -> Optional[Embedding]:
        """Cache-first: the stored answer on a hit; on a miss compute, store and return it.

        ``model`` is a model id (with the spec arguments) or a whole Request.
        ``compute=False`` returns ``None`` on a miss. ``Embedding.cached`` says
        whether the answer came from the store.

        ``provider`` None (the default) or ``"auto"``: a stored answer from any of the
        model's providers is a hit (one look-up of every candidate key; a stored answer
        under the provider a request without one resolves to keeps its key), and a miss
        is computed by the first provider that can serve it (rsembed_store.compat.auto).
        ``"auto"`` raises NoProviderError when none can; left unnamed, the model's first
        provider is then used as before. ``$RSEMBED_STORE_STRICT_PROVIDER=1`` looks up
        only the chosen provider's answer. A resolved request is used as it is.

        >>> store.get("spectral", PointBuffer(11.0, 46.0, 250), TemporalSpec.year(2023))  # doctest: +SKIP
        """
        from .keys import Request

        if isinstance(model, str):
            request = Request(model, spatial, temporal, sensor, output, input_prep, provider)
        else:
            request = model
        with self.models_scope():
            if isinstance(request, Request):
                from .compat.auto import answers, is_auto
                from .compat.routing import strict_default

                if is_auto(request.provider):
                    return answers(self, [request], strict=strict_default(), compute=compute, config=config,
                                   fallback=request.provider is None)[0]
            return self.getter.get(request, compute=compute, config=config)

    def search(self, model: str, like=None, k: int = 10, *, negatives=None, text: Optional[str] = None,
               combine: Optional[str] = None, temporal=None, within=None, where: Optional[str] = None,
               exclude_self: bool = True, metric: Optional[str] = None, revision: Optional[str] = None,
               compute: bool = False, config: Optional[Mapping] = None):
        """Find the ``k`` stored places most like ``like`` in ``model``'s space.

        ``like`` is a vector, a stored key, an Embedding or a request (looked up;
        computed and stored on a miss only with ``compute=True``, the same default
        as the CLI's ``--no-compute`` and HTTP's ``"compute": false``: a search
        writes nothing unless asked), or a list of them (several examples);
        ``negatives`` a list of examples to steer away from; ``text`` a phrase
        for models with a text tower (instead of ``like``); ``combine`` how
        several examples make one query (see ``rsembed_store.query.examples``).
        ``temporal`` keeps rows whose window overlaps
        it; ``within`` is a BBox, a GeoJSON polygon, H3 cells or the HTTP form
        ``{"bbox"|"geojson"|"cells": ...}``; ``where`` is an extra filter on stored
        columns. Filters run inside LanceDB.
        """
        from .query.examples import search_examples, wants_examples
        from .query.search import search

        getter = (lambda request: self.get(request, compute=compute, config=config))
        with self.models_scope():
            if wants_examples(like, negatives, text, combine):
                return search_examples(self, model, like, negatives=negatives, text=text, combine=combine, k=k,
                                       temporal=temporal, within=within, where=where, exclude_self=exclude_self,
                                       metric=metric, revision=revision, get=getter, text_config=config)
            if like is None:
                from .errors import SpecError

                raise SpecError("give like (one example or a list of them) or text (a phrase)")
            return search(self, model, like, k=k, temporal=temporal, within=within, where=where,
                          exclude_self=exclude_self, metric=metric, revision=revision, get=getter)

    def change(self, model: str, from_, to, *, within=None, where: Optional[str] = None,
               revision: Optional[str] = None):
        """Per H3 cell stored in both windows, the cosine distance between its vectors of ``from_`` and
        ``to`` (an Arrow table: cell, distance, lon, lat); see ``rsembed_store.query.change``."""
        from .query.change import change

        return change(self, model, from_, to, within=within, where=where, revision=revision)

    def search_many(self, model: str, vectors, k: int = 10, *, temporal=None, within=None,
                    where: Optional[str] = None, metric: Optional[str] = None, revision: Optional[str] = None):
        """:meth:`search` for many query vectors at once: one SearchResult per row of ``vectors``
        (batched through the serving tier's graph when it can answer)."""
        from .query.serving.answer import search_many

        return search_many(self, model, vectors, k=k, temporal=temporal, within=within, where=where,
                           metric=metric, revision=revision)

    def sql(self, query: str, *, limit: Optional[int] = 10_000, timeout_s: Optional[float] = 30.0, version=None):
        """Run one read-only DuckDB query over the spaces (views named after them, plus
        ``embeddings``); returns a pyarrow Table. See docs/sql.md."""
        from .query.sql import run_sql

        return run_sql(self, query, limit=limit, timeout_s=timeout_s, version=version)

    def maintain(self, **kwargs) -> dict:
        """Compact, refresh scalar indexes, and build/refresh vector indexes where large enough."""
        from .query.maintain import maintain

        return maintain(self, **kwargs)

    def plan(self, model: str, region, windows, *, h3_res: int = PLAN_H3_RES, **kwargs):
        """The :class:`~rsembed_store.ingest.plan.Plan` of ``model`` over the H3 cells of ``region`` x
        ``windows`` (resolved and keyed as this store would; nothing is computed). ``h3_res`` is the
        resolution of the cells planned, 9 (about 0.1 km2) as on the command line and over HTTP (the
        store's own ``h3_res``, 12 by default, is that of the column every row's centre is indexed
        by, not a planning grid); other arguments (``output``, ``sensor``, ``input_prep``, ``provider``,
        ``max_cells``, ``limits``) go to :func:`~rsembed_store.ingest.plan.plan`."""
        from .ingest.plan import plan

        with self.models_scope():
            return plan(model=model, region=region, h3_res=h3_res, windows=windows, **kwargs)

    def ingest(self, requests, region=None, windows=None, *, config: Optional[Mapping] = None,
               h3_res: int = PLAN_H3_RES, output=None, sensor=None, input_prep=None, provider=None,
               **kwargs):
        """Compute and store answers that are missing, cache-first; returns an IngestSummary.

        Either a model with a region and windows (planned as :meth:`plan` does):

        >>> store.ingest("spectral", BBox(11.0, 46.0, 11.1, 46.1), [2022, 2023])    # doctest: +SKIP

        or resolved requests (or a Plan) made elsewhere: ``store.ingest(plan)``.
        Other keyword arguments (``progress``, ``executor``, ``batch_size``, ...) go to
        :func:`~rsembed_store.ingest.engine.ingest`.
        """
        from .ingest.engine import ingest

        with self.models_scope():
            if isinstance(requests, str):
                if region is None or windows is None:
                    from .errors import SpecError

                    raise SpecError(f"store.ingest({requests!r}, region, windows) needs a region and windows "
                                    f"(got region={region!r}, windows={windows!r}), or pass resolved requests")
                requests = self.plan(requests, region, windows, h3_res=h3_res, output=output, sensor=sensor,
                                     input_prep=input_prep, provider=provider)
            elif region is not None or windows is not None:
                from .errors import SpecError

                if isinstance(region, Mapping) and windows is None:
                    raise SpecError("store.ingest(requests, config): pass the config by name, "
                                    "store.ingest(requests, config={...})")
                raise SpecError("region and windows go with a model id: store.ingest(model, region, windows); "
                                "with requests or a Plan, give neither")
            requests = getattr(requests, "requests", requests)
            return ingest(self, requests, {**self.config, **(config or {})}, **kwargs)

    def _serving_summary(self, space: str) -> dict:
        """Which path serves ``space`` and the memory its tier holds (loads a saved tier; builds no graph)."""
        from .stats import serving_summary

        return serving_summary(self.serving, space)


__all__ = ["PutResult", "SCALAR_INDEXES", "SpaceInfo", "Store", "default_uri", "dir_bytes", "parse_storage_options",
           "redact", "storage_options_from_env"]
