"""rs-embed 0.3.1's embedding calls, answered from the store: look up first, compute only misses.

Same names, signatures and defaults as ``rs_embed.get_embedding``,
``get_embeddings_batch``, ``list_models`` and ``describe_model``; one extra keyword,
``store`` (an open :class:`~rsembed_store.Store` or a URI; default
:func:`~rsembed_store.compat.routing.default_store_uri`), and ``strict_provider``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from ..errors import SpecError
from ..keys import Request
from ..registry import model_class
from ..specs import OutputSpec, SensorSpec, SpatialSpec, TemporalSpec
from . import routing
from .auto import answers
from .types import Embedding, FetchSpec


def _temporal_dict(t: Optional[TemporalSpec]) -> Dict[str, Any]:
    """rs-embed's ``temporal_to_dict`` of the window the answer was computed for."""
    if t is None:
        return {"mode": None}
    if t.mode == "year":
        return {"mode": "year", "year": t.year, "start": f"{t.year}-01-01", "end": f"{t.year + 1}-01-01"}
    return {"mode": "range", "start": t.start, "end": t.end}


def to_result(stored, asked: str) -> Embedding:
    """The store's Embedding as rs-embed's: ``.data`` and ``.meta`` (rs-embed's standard keys + ours)."""
    r = stored.request
    info = model_class(r.model).info
    if r.output.mode == "grid":
        data = np.asarray(stored.grid_f32(), dtype=np.float32)
    else:
        data = np.asarray(stored.vector, dtype=np.float32)
    sensor = r.sensor.to_dict() if r.sensor is not None else None
    meta = dict(stored.meta or {})
    meta.update({
        "model": asked,
        "type": info.kind,
        "backend": r.provider,
        "source": r.sensor.collection if r.sensor is not None else r.provider,
        "sensor": sensor,
        "temporal": _temporal_dict(r.temporal),
        "image_size": info.input_size,
        "output": r.output.to_dict(),
        "input_prep": r.input_prep.to_dict() if r.input_prep is not None else None,
    })
    # a model bridged from rs-embed: its own meta at the top level, as rs-embed returns it
    meta.update({k: v for k, v in (meta.pop("rs_embed", None) or {}).items() if k != "model"})
    meta.update({
        # what the store knows
        "store_model": r.model,
        "revision": r.revision,
        "provider": r.provider,
        "key": r.key,
        "cached": bool(stored.cached),
    })
    return Embedding(data=data, meta=meta, key=r.key, cached=bool(stored.cached), provider=r.provider,
                     stored=stored)


def build_requests(model: str, spatials, *, temporal, sensor, fetch, modality, output, backend, input_prep,
                   model_kwargs) -> List[Request]:
    """One store Request per spatial, read the way rs-embed reads its arguments (see :mod:`.routing`)."""
    routing.check_unsupported(model, modality, model_kwargs)
    name = routing.with_settings(routing.store_model_name(model), model_kwargs)
    info = model_class(name).info
    t = routing.temporal_for(info, temporal)
    s = routing.sensor_for(info, sensor, fetch)
    out = routing.output_for(output)
    prep = routing.input_prep_for(input_prep)
    provider = routing.backend_provider(backend)
    return [Request(name, sp, t, s, out, prep, provider) for sp in spatials]


def get_embedding(
    model: str,
    *,
    spatial: SpatialSpec,
    temporal: Optional[TemporalSpec] = None,
    sensor: Optional[SensorSpec] = None,
    fetch: Optional[FetchSpec] = None,
    modality: Optional[str] = None,
    output: OutputSpec = OutputSpec.pooled(),
    backend: str = "auto",
    device: str = "auto",
    input_prep=None,
    store=None,
    strict_provider: Optional[bool] = None,
    **model_kwargs: Any,
) -> Embedding:
    """One embedding, from the store when held, else computed, stored and returned (rs-embed's signature).

    >>> emb = get_embedding("spectral", spatial=PointBuffer(11.0, 46.0, 250),
    ...                     temporal=TemporalSpec.year(2022))  # doctest: +SKIP
    >>> emb.data.shape, emb.meta["cached"]  # doctest: +SKIP
    """
    return get_embeddings_batch(model, spatials=[spatial], temporal=temporal, sensor=sensor, fetch=fetch,
                                modality=modality, output=output, backend=backend, device=device,
                                input_prep=input_prep, store=store, strict_provider=strict_provider,
                                **model_kwargs)[0]


def get_embeddings_batch(
    model: str,
    *,
    spatials: List[SpatialSpec],
    temporal: Optional[TemporalSpec] = None,
    sensor: Optional[SensorSpec] = None,
    fetch: Optional[FetchSpec] = None,
    modality: Optional[str] = None,
    output: OutputSpec = OutputSpec.pooled(),
    backend: str = "auto",
    device: str = "auto",
    input_prep=None,
    store=None,
    strict_provider: Optional[bool] = None,
    **model_kwargs: Any,
) -> List[Embedding]:
    """Embeddings for many spatials, in order: one batch look-up, then only the misses are computed."""
    if not isinstance(spatials, (list, tuple)) or not spatials:
        raise SpecError(f"spatials must be a non-empty list of PointBuffer/BBox, got {spatials!r}")
    requests = build_requests(model, spatials, temporal=temporal, sensor=sensor, fetch=fetch, modality=modality,
                              output=output, backend=backend, input_prep=input_prep, model_kwargs=model_kwargs)
    strict = routing.strict_default() if strict_provider is None else bool(strict_provider)
    stored = answers(routing.get_store(store), requests, strict=strict)
    return [to_result(e, model) for e in stored]


def list_models(*, include_aliases: bool = False) -> List[str]:
    """The rs-embed model ids this store answers: its native ones, and rs-embed's through the bridge
    when rs-embed is installed."""
    from ..registry import _MODELS, model_names

    bridged = [n[len("rsembed:"):] for n in model_names() if n.startswith("rsembed:")]
    ids = {n for n in _MODELS if n not in routing.BRIDGED} | set(bridged)
    if include_aliases:
        ids |= {alias for alias, target in routing.ALIASES.items() if target in ids}
    return sorted(ids)


def describe_model(model: str) -> Dict[str, Any]:
    """The declared contract of the model answering ``model`` (rs-embed's ``type`` and ``output`` keys too)."""
    from ..registry import describe_model as describe

    name = routing.store_model_name(model)
    if name.startswith("rsembed:"):
        return dict(describe(name))
    info = model_class(name).info.to_dict()
    return {**info, "type": info["kind"], "output": list(info["outputs"]), "store_model": name}


__all__ = ["describe_model", "get_embedding", "get_embeddings_batch", "list_models"]
