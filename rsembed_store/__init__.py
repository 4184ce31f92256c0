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

# name -> the module that defines it: imported on first use (PEP 562), so that importing the
# package (the command line's --help, `models`, `stats`) does not pay for numpy, pyarrow and h3
_LAZY = {
    "Embedding": "embedding",
    "Request": "keys", "ResolvedRequest": "keys", "key_of": "keys", "resolve": "keys",
    "BBox": "specs", "H3Cell": "specs", "InputPrepSpec": "specs", "OutputSpec": "specs", "PointBuffer": "specs",
    "SensorSpec": "specs", "TemporalSpec": "specs",
    "Store": "store",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rsembed_store' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

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
]
