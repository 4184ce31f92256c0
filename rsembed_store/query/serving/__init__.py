"""The serving tier: per-space rows, keys and an ANN graph in memory, in step with Lance.

Lance holds every row, version and tag; the tier is derived from it, saved
beside it, and rebuilt when stale. See :mod:`.manager` for its lifecycle,
:mod:`.tier` for what one holds, :mod:`.delta` for how it stays current, and
docs/search.md for the measurements behind its choices.
"""

from .filters import Filters, plan
from .manager import Serving
from .tier import Tier
from .view import View

__all__ = ["Filters", "Serving", "Tier", "View", "plan"]
