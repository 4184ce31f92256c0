"""rsembed_store: an embedding cache and vector-search database for remote-sensing models.

>>> from rsembed_store import Store, PointBuffer, TemporalSpec, OutputSpec
"""

from .embedding import Embedding
from .errors import (
    LimitError,
    MissingExtraError,
    NoStoreError,
    RsEmbedStoreError,
    SpecError,
    StoreError,
    UnknownModelError,
    UnknownSpaceError,
    VectorError,
)
from .keys import Request, ResolvedRequest, key_of, resolve
from .specs import BBox, H3Cell, InputPrepSpec, OutputSpec, PointBuffer, SensorSpec, TemporalSpec
from .store import Store

__version__ = "0.1.0"

__all__ = [
    "BBox",
    "Embedding",
    "H3Cell",
    "InputPrepSpec",
    "LimitError",
    "MissingExtraError",
    "NoStoreError",
    "OutputSpec",
    "PointBuffer",
    "Request",
    "ResolvedRequest",
    "RsEmbedStoreError",
    "SensorSpec",
    "SpecError",
    "Store",
    "StoreError",
    "TemporalSpec",
    "UnknownModelError",
    "UnknownSpaceError",
    "VectorError",
    "key_of",
    "resolve",
]
