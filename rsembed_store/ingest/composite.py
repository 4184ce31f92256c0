"""Compositing: many scenes of one time window on one grid -> one image and its valid mask.

Providers that read scenes themselves (the ``local`` provider) warp every scene onto
the request's target grid (:mod:`rsembed_store.ingest.grid`) and hand the stack here;
Earth Engine composites server-side with the same two rules, so both providers give
the same pixels for the same scenes.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from ..errors import ProviderError


def composite(stacks: Sequence[np.ndarray], how: str) -> Tuple[np.ndarray, np.ndarray]:
    """Composite scenes (each (C, H, W), NaN = no data, in date order) -> (array, valid).

    ``median``: per-band NaN-median over scenes (the mean of the two middle values for an
    even count). ``mosaic``: the latest scene with data at a pixel gives its whole spectrum.
    A scene pixel counts only where the scene has data in every band. ``valid`` marks
    pixels where at least one scene counts; elsewhere the array is NaN.
    """
    if how not in ("median", "mosaic"):
        raise ProviderError(f"composite={how!r} is not accepted; use 'median' or 'mosaic'")
    if not stacks:
        raise ProviderError("nothing to composite: no scene has data")
    cube = np.stack([np.asarray(d, dtype=np.float32) for d in stacks])  # (S, C, H, W), a copy
    cube[np.broadcast_to(np.isnan(cube).any(axis=1, keepdims=True), cube.shape)] = np.nan
    if how == "mosaic":
        out = np.full(cube.shape[1:], np.nan, dtype=np.float32)
        for data in cube:  # in date order: later scenes overwrite earlier ones
            ok = ~np.isnan(data[0])
            out[:, ok] = data[:, ok]
        return out, ~np.isnan(out[0])
    cube.sort(axis=0)  # NaN sorts last
    count = (~np.isnan(cube[:, 0])).sum(axis=0)  # scenes with data per pixel (same for every band)
    seen = count > 0
    lo = np.clip((count - 1) // 2, 0, None)[None, None]
    hi = np.clip(count // 2, 0, None)[None, None]
    shape = (1,) + cube.shape[1:]
    a = np.take_along_axis(cube, np.broadcast_to(lo, shape), axis=0)[0]
    b = np.take_along_axis(cube, np.broadcast_to(hi, shape), axis=0)[0]
    out = (0.5 * (a.astype(np.float64) + b)).astype(np.float32)
    out[:, ~seen] = np.nan
    return out, seen


__all__ = ["composite"]
