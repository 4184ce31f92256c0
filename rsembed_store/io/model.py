"""Imported embedding spaces: a precomputed model of their own, ``imported:<name>``.

Vectors brought in from files were computed by someone else, so they get a model
id of their own and never share a space (or a key) with vectors this store
computes. The declaration carries what the store needs up front (dimension,
metric, revision, how the window is read) and is kept in the space's catalog
entry, so another process can declare it again from the store
(:func:`declare_from_store`).

>>> info = declare_imported("clay-v1", revision="2024-06", dim=768)
>>> info.id, info.kind, info.dim
('imported:clay-v1', 'precomputed', 768)
"""

from __future__ import annotations

import json
import re
from typing import Optional

import pyarrow.compute as pc

from ..errors import ComputeError, SpecError, UnknownSpaceError
from ..model import METRICS, Model, ModelInfo

PREFIX = "imported:"
TEMPORAL = ("composite", "year")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def model_id(name: str) -> str:
    """``imported:<name>`` for a bare name, the id itself when it already has the prefix."""
    if not isinstance(name, str):
        raise SpecError(f"model name {name!r} must be a string such as 'clay-v1'")
    bare = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if not _NAME.match(bare):
        raise SpecError(f"model name {name!r} is not accepted; use 1-64 letters, digits, '_', '.', '-' "
                        "starting with a letter or digit, e.g. 'clay-v1' (the id becomes 'imported:clay-v1')")
    return PREFIX + bare


class ImportedModel(Model):
    """Base of the classes :func:`declare_imported` makes; its vectors are never computed here."""

    def read(self, request):  # noqa: D102
        raise ComputeError(f"model {self.info.id!r} holds imported vectors and cannot compute a missing one "
                           f"({request!r}); import it, or ask with compute off (store.lookup)")


def declare_imported(name: str, *, revision: str, dim: int, metric: str = "cosine",
                     temporal: str = "composite", description: str = "") -> ModelInfo:
    """Register (or confirm) the precomputed model ``imported:<name>`` and return its info.

    ``temporal``: ``"composite"`` keys a window as the half-open range it covers (a
    year is Jan 1 .. next Jan 1); ``"year"`` keys it as the year it starts in, for
    annual products. Declaring the same id again with another dimension, metric or
    temporal reading is refused (a revision is a space of its own and may differ).
    """
    from ..registry import _MODELS, model_class, register_model

    mid = model_id(name)
    if not isinstance(revision, str) or not revision.strip():
        raise SpecError(f"revision={revision!r} must be a non-empty string naming the product version, "
                        "e.g. '2024-06' or a weights checksum")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
        raise SpecError(f"dim={dim!r} must be a positive integer (the vector length)")
    if metric not in METRICS:
        raise SpecError(f"metric={metric!r} is not accepted; use one of {list(METRICS)}")
    if temporal not in TEMPORAL:
        raise SpecError(f"temporal={temporal!r} is not accepted; use one of {list(TEMPORAL)}")
    info = ModelInfo(id=mid, revision=revision, kind="precomputed", dim=dim, metric=metric,
                     outputs=("pooled",), temporal=temporal, providers=(),
                     description=description or f"vectors imported from files as {mid!r}")
    if mid in _MODELS:
        old = model_class(mid).info
        if (old.dim, old.metric, old.temporal, old.revision) == (dim, metric, temporal, revision):
            return old
        if (old.dim, old.metric, old.temporal) != (dim, metric, temporal) and old.revision == revision:
            raise SpecError(f"model {mid!r} revision {revision!r} is declared with dim={old.dim}, "
                            f"metric={old.metric!r}, temporal={old.temporal!r}; refusing dim={dim}, "
                            f"metric={metric!r}, temporal={temporal!r} for the same revision")
    cls = type(f"Imported_{re.sub(r'[^A-Za-z0-9]', '_', mid[len(PREFIX):])}", (ImportedModel,), {"info": info})
    register_model(mid, cls)
    return info


def declare_from_store(store, name: str, revision: Optional[str] = None) -> ModelInfo:
    """Declare ``imported:<name>`` again from the store's catalog (the latest space of it, or ``revision``)."""
    mid = model_id(name)
    try:
        space = store.space_for(mid, revision)
    except UnknownSpaceError:
        raise UnknownSpaceError(f"the store holds no imported space {mid!r}"
                                + (f" revision {revision!r}" if revision else "")) from None
    info = {}
    try:  # the declaration kept beside the space (the catalog is one small table)
        cat = store._catalog().to_arrow()
        for row in cat.filter(pc.equal(cat.column("space"), space.space)).column("info").to_pylist():
            info = json.loads(row or "{}")
    except Exception:  # an old catalog without the entry: the defaults
        info = {}
    return declare_imported(mid, revision=space.revision, dim=int(space.dim), metric=space.metric,
                            temporal=info.get("temporal", "composite"))
