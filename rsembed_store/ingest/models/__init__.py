"""On-the-fly embedders: models that turn provider pixels into embeddings.

:class:`~rsembed_store.ingest.models.base.OnTheFlyModel` is the shared compute
path (band selection, masks, resize/tile input prep, pooling, north-up grids);
``spectral`` (robust band statistics and spectral indices) and ``mosaiks``
(random convolutional features) are the built-in featurisers. The registry
(``rsembed_store.registry``) maps model names to these classes.
"""

from .base import OnTheFlyModel

__all__ = ["OnTheFlyModel"]
