"""What every imagery provider delivers, and the interface it implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Mapping, Optional, Tuple

import numpy as np

from ...errors import ProviderError
from ...keys import ResolvedRequest


@dataclass
class Pixels:
    """Imagery for one request on one north-up grid.

    ``array`` is float32 ``(C, H, W)`` in physical units (surface reflectance
    0..1 for optical bands), ``fill_value`` where there is no data. ``valid``
    marks pixels with data in every band; ``roi_mask`` marks pixels inside the
    ROI (the hexagon of an H3Cell; everything for a square ROI). ``transform``
    is the GDAL geotransform of the grid in ``crs``: ``(x0, xres, 0, y0, 0, -yres)``;
    read it back with ``affine.Affine.from_gdal(*transform)``.
    """

    array: np.ndarray
    bands: Tuple[str, ...]
    valid: np.ndarray
    roi_mask: np.ndarray
    crs: str
    transform: Tuple[float, float, float, float, float, float]
    fill_value: float = 0.0
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> Tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    def usable(self) -> np.ndarray:
        """Pixels that have data and lie inside the ROI."""
        return self.valid & self.roi_mask


class Provider:
    """Base class of imagery providers (``local``, ``gee``, ...).

    A provider is built once per run from configuration (which never enters a
    key: paths, credentials, endpoints) and then serves many requests, possibly
    from several threads at once.
    """

    name: ClassVar[str] = ""

    def __init__(self, config: Optional[Mapping] = None):
        self.config = dict(config or {})

    def inputs(self, request: ResolvedRequest):
        """``(sensor, temporal, spatial)`` of a request, refusing one without a sensor or window."""
        if request.sensor is None:
            raise ProviderError(f"the {self.name} provider needs a SensorSpec (collection, bands, scale_m, ...)")
        if request.temporal is None:
            raise ProviderError(f"the {self.name} provider needs a temporal window (TemporalSpec.range)")
        return request.sensor, request.temporal, request.spatial

    def fetch(self, request: ResolvedRequest) -> Pixels:  # pragma: no cover - interface
        """Pixels for ``request`` (its sensor, spatial and temporal specs).

        Raises :class:`~rsembed_store.errors.NoImageryError` when no scene passes
        the filters, :class:`~rsembed_store.errors.ProviderError` for other
        failures; never returns an all-fill array as if it were data.
        """
        raise NotImplementedError
