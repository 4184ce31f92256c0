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
