"""rsembed_store: an embedding cache and vector-search database for remote-sensing models.

>>> from rsembed_store import Store, PointBuffer, TemporalSpec, OutputSpec
"""

from .embedding import Embedding
from .errors import (
    ApiError,
    ComputeError,
    CorruptTierError,
    LimitError,
    MissingExtraError,
    NoImageryError,
    NoProviderError,
    NoStoreError,
    NotStoredError,
    ProviderError,
    RealDataUnavailable,
    RsEmbedStoreError,
    SpecError,
    SqlError,
    StoreError,
    UnknownModelError,
    UnknownProviderError,
    UnknownSpaceError,
    VectorError,
    WeightsError,
)
from .keys import Request, ResolvedRequest, key_of, resolve
from .specs import BBox, H3Cell, InputPrepSpec, OutputSpec, PointBuffer, SensorSpec, TemporalSpec
from .store import Store

__version__ = "0.1.0"

# What users need from the wings, importable from here without importing the wings up front
# (``import rsembed_store`` stays light; the name is loaded on first use, PEP 562).
_LAZY = {
    "Plan": "rsembed_store.ingest.plan:Plan",
    "plan": "rsembed_store.ingest.plan:plan",
    "IngestSummary": "rsembed_store.ingest.engine:IngestSummary",
    "LocalExecutor": "rsembed_store.ingest.engine:LocalExecutor",
    "RayExecutor": "rsembed_store.ingest.ray_executor:RayExecutor",
    "use_weights": "rsembed_store.ingest.models.weights:use_weights",
    "use_published": "rsembed_store.ingest.models.weights:use_published",
    "SearchResult": "rsembed_store.query.results:SearchResult",
    "register_model": "rsembed_store.registry:register_model",
    "register_provider": "rsembed_store.registry:register_provider",
    "register_resolver": "rsembed_store.registry:register_resolver",
    "Resolver": "rsembed_store.registry:Resolver",
    "model_names": "rsembed_store.registry:model_names",
    "describe_models": "rsembed_store.registry:describe_models",
}


def __getattr__(name: str):
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'rsembed_store' has no attribute {name!r}")
    import importlib

    module, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))

__all__ = [
    "ApiError",
    "BBox",
    "ComputeError",
    "CorruptTierError",
    "Embedding",
    "H3Cell",
    "InputPrepSpec",
    "LimitError",
    "MissingExtraError",
    "NoImageryError",
    "NoProviderError",
    "NoStoreError",
    "NotStoredError",
    "OutputSpec",
    "PointBuffer",
    "ProviderError",
    "RealDataUnavailable",
    "Request",
    "ResolvedRequest",
    "RsEmbedStoreError",
    "SensorSpec",
    "SpecError",
    "SqlError",
    "Store",
    "StoreError",
    "TemporalSpec",
    "UnknownModelError",
    "UnknownProviderError",
    "UnknownSpaceError",
    "VectorError",
    "WeightsError",
    "key_of",
    "resolve",
    *_LAZY,
]
