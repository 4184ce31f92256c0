"""rsembed_store: an embedding cache and vector-search database for remote-sensing models.

>>> from rsembed_store import Store, PointBuffer, TemporalSpec, OutputSpec
"""

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

__version__ = "0.1.0"

# What users need, importable from here without importing it up front (PEP 562): the core's
# names (so that the command line's --help, `models` and `stats` do not pay for numpy, pyarrow
# and h3 before they need them) and the wings' (which would import the wings).
_LAZY = {
    "Embedding": "rsembed_store.embedding:Embedding",
    "Request": "rsembed_store.keys:Request",
    "ResolvedRequest": "rsembed_store.keys:ResolvedRequest",
    "key_of": "rsembed_store.keys:key_of",
    "resolve": "rsembed_store.keys:resolve",
    "BBox": "rsembed_store.specs:BBox",
    "H3Cell": "rsembed_store.specs:H3Cell",
    "InputPrepSpec": "rsembed_store.specs:InputPrepSpec",
    "OutputSpec": "rsembed_store.specs:OutputSpec",
    "PointBuffer": "rsembed_store.specs:PointBuffer",
    "SensorSpec": "rsembed_store.specs:SensorSpec",
    "TemporalSpec": "rsembed_store.specs:TemporalSpec",
    "Store": "rsembed_store.store:Store",
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
