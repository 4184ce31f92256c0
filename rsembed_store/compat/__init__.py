"""rs-embed's own calls over the store's cache: switch an rs-embed script with one import line.

    import rs_embed                               # before
    from rsembed_store import compat as rs_embed  # after

or ``from rsembed_store.compat import get_embedding, PointBuffer, TemporalSpec, ...``.
The names, signatures and defaults are rs-embed 0.3.1's; every call looks the
answer up in the store first, computes only what is missing and keeps every
answer. See docs/rs-embed-users.md for what changes and what does not.

rs-embed need not be installed; where it is, its spec objects are accepted too.
"""

from ..specs import BBox, InputPrepSpec, OutputSpec, PointBuffer, SensorSpec, TemporalSpec
from .api import describe_model, get_embedding, get_embeddings_batch, list_models
from .export import ExportResult, ModelResult, export_batch, load_export
from .routing import default_store_uri, get_store, set_default_store
from .types import Embedding, ExportConfig, ExportLayout, ExportModelRequest, ExportTarget, FetchSpec
from ..errors import NoProviderError

__all__ = [
    "BBox",
    "Embedding",
    "ExportConfig",
    "ExportLayout",
    "ExportModelRequest",
    "ExportResult",
    "ExportTarget",
    "FetchSpec",
    "InputPrepSpec",
    "ModelResult",
    "NoProviderError",
    "OutputSpec",
    "PointBuffer",
    "SensorSpec",
    "TemporalSpec",
    "default_store_uri",
    "describe_model",
    "export_batch",
    "get_embedding",
    "get_embeddings_batch",
    "get_store",
    "list_models",
    "load_export",
    "set_default_store",
]
