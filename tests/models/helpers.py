"""Helpers of the deep-model tests: hand-made Pixels, requests resolved from a class, and a
deterministic test scene (import as ``from tests.models.helpers import ...``)."""

from __future__ import annotations

import numpy as np

from rsembed_store.ingest.providers.base import Pixels
from rsembed_store.keys import ResolvedRequest
from rsembed_store.specs import PointBuffer, TemporalSpec


def make_pixels(arr, bands, valid=None, roi=None) -> Pixels:
    h, w = arr.shape[1:]
    ones = np.ones((h, w), bool)
    return Pixels(
        array=np.asarray(arr, np.float32),
        bands=tuple(bands),
        valid=ones if valid is None else valid,
        roi_mask=ones.copy() if roi is None else roi,
        crs="EPSG:32632",
        transform=(500000.0, 10.0, 0.0, 5100000.0, 0.0, -10.0),
    )


def make_request(cls, output=None, prep=None, sensor=None, lon=11.0) -> ResolvedRequest:
    """Resolve with the class's own classmethods (variants need no registry entry)."""
    return ResolvedRequest(
        model=cls.info.id,
        revision=cls.info.revision,
        provider=cls.resolve_provider(None),
        spatial=PointBuffer(lon, 46.0, 1120),
        temporal=cls.resolve_temporal(TemporalSpec.year(2022)),
        sensor=cls.resolve_sensor(sensor),
        output=cls.resolve_output(output),
        input_prep=cls.resolve_input_prep(prep),
    )


def reflectance(bands, size, seed=1):
    """A deterministic land-like scene: smooth per-band gradients plus seeded texture, 0.01..0.45."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    layers = [0.05 + 0.2 * (0.5 + 0.5 * np.sin(3 * xx + i)) * (0.6 + 0.4 * yy) for i in range(len(bands))]
    arr = np.stack(layers) * (1 + 0.15 * rng.standard_normal((len(bands), size, size)))
    return np.clip(arr, 0.01, 0.45).astype(np.float32)
