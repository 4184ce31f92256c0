"""The answer to a request: a pooled vector, optionally a grid, and where it came from."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Dict, Optional

import numpy as np

from .errors import VectorError
from .keys import ResolvedRequest

# How a stored grid is turned back into float32. "raw" grids are stored exactly
# as produced; quantised products register their own recipe (e.g. int8 + scale).
GRID_CODECS: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "raw": lambda a: a.astype(np.float32, copy=False),
}


def register_grid_codec(name: str, decode: Callable[[np.ndarray], np.ndarray]) -> None:
    """Register how grids stored with codec ``name`` are decoded to float32."""
    GRID_CODECS[name] = decode


def grid_codec(name: str, model: Optional[str] = None) -> Callable[[np.ndarray], np.ndarray]:
    """The decoder of codec ``name``. A product registers its codec when its model
    module is imported, so an unknown codec first imports ``model``'s class."""
    if name not in GRID_CODECS and model:
        from .registry import model_class

        try:
            model_class(model)
        except Exception:  # an unknown model: fall through to the clear error below
            pass
    try:
        return GRID_CODECS[name]
    except KeyError:
        raise VectorError(f"unknown grid codec {name!r}; known: {sorted(GRID_CODECS)}") from None


def pool_grid(grid: np.ndarray, pooling: str = "mean") -> np.ndarray:
    """Pool a ``(D, H, W)`` grid to ``(D,)`` ignoring NaN cells (nan-mean or nan-max)."""
    flat = np.asarray(grid, dtype=np.float32).reshape(grid.shape[0], -1)
    valid = ~np.isnan(flat)
    if not valid.any():
        raise VectorError("grid has no valid (non-NaN) cell to pool")
    if pooling == "max":
        return np.where(valid, flat, -np.inf).max(axis=1).astype(np.float32)
    counts = valid.sum(axis=1)
    sums = np.where(valid, flat, 0.0).sum(axis=1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = sums / counts
    return out.astype(np.float32)


_F32_MAX = float(np.finfo(np.float32).max)


def check_float32(values: np.ndarray, what: str) -> None:
    """Refuse finite values that become inf when cast to float32 (|x| > 3.4e38), naming one."""
    if not np.issubdtype(values.dtype, np.floating) or values.dtype.itemsize <= 4:
        return  # integers (even int64) and float16/float32 always fit
    with np.errstate(over="ignore", invalid="ignore"):
        overflow = np.isfinite(values) & ~np.isfinite(values.astype(np.float32))
    if overflow.any():
        first = np.unravel_index(int(np.argmax(overflow)), values.shape)
        raise VectorError(
            f"{what} has {int(overflow.sum())} value(s) beyond the float32 range (|x| <= {_F32_MAX:.4g}), e.g. "
            f"{values[first].item()!r} at index {tuple(int(i) for i in first)}, which would be stored as inf; "
            "scale the values into the float32 range"
        )


@dataclass
class Embedding:
    """One stored or computed answer.

    ``vector`` is the pooled ``(D,)`` float32 vector; for grid answers it is the
    nan-mean of the grid so that grids are searchable too. ``grid`` is the
    ``(D, H, W)`` array as the model produced it (decode with :meth:`grid_f32`).
    ``cached`` says whether it was read from the store rather than computed now.
    """

    request: ResolvedRequest
    vector: np.ndarray
    grid: Optional[np.ndarray] = None
    grid_codec: str = "raw"
    meta: dict = field(default_factory=dict)
    compute_s: float = 0.0
    created_at: Optional[datetime] = None
    cached: bool = False

    @classmethod
    def from_grid(cls, request: ResolvedRequest, grid: np.ndarray, **kwargs) -> "Embedding":
        """Build a grid answer; its pooled vector is the nan-mean of the decoded grid."""
        codec = kwargs.get("grid_codec", "raw")
        vector = pool_grid(grid_codec(codec, request.model)(np.asarray(grid)), "mean")
        return cls(request=request, vector=vector, grid=np.asarray(grid), **kwargs)

    @property
    def key(self) -> str:
        return self.request.key

    @property
    def model(self) -> str:
        return self.request.model

    @property
    def space(self) -> str:
        return self.request.space

    @property
    def dim(self) -> int:
        return int(np.asarray(self.vector).shape[-1])

    def grid_f32(self) -> Optional[np.ndarray]:
        if self.grid is None:
            return None
        return grid_codec(self.grid_codec, self.model)(self.grid)

    def validate(self, dim: Optional[int] = None) -> None:
        """Refuse wrong shapes, wrong dimensions and non-finite values (nothing is written)."""
        v = np.asarray(self.vector)
        where = f"embedding {self.key[:12]}… of model {self.model!r}"
        if v.ndim != 1:
            raise VectorError(f"{where}: vector must have shape (D,), got {v.shape}")
        if dim is not None and v.shape[0] != dim:
            raise VectorError(f"{where}: vector has dimension {v.shape[0]}, the space holds dimension {dim}")
        if not np.issubdtype(v.dtype, np.number):
            raise VectorError(f"{where}: vector dtype {v.dtype} is not numeric")
        if not np.all(np.isfinite(v)):
            bad = int(np.size(v) - np.count_nonzero(np.isfinite(v)))
            raise VectorError(f"{where}: vector has {bad} NaN/inf value(s); only finite vectors are stored")
        # vectors are stored as float32: a finite float64 beyond its range would be stored as inf
        check_float32(v, f"{where}: vector")
        if self.output_mode == "grid":
            if self.grid is None:
                raise VectorError(f"{where}: output mode is 'grid' but no grid was given")
            g = np.asarray(self.grid)
            if g.ndim != 3 or g.shape[0] != v.shape[0]:
                raise VectorError(f"{where}: grid must have shape (D={v.shape[0]}, H, W), got {g.shape}")
            try:
                grid_codec(self.grid_codec, self.model)
            except VectorError as exc:
                raise VectorError(f"{where}: {exc}") from None
            if np.issubdtype(g.dtype, np.floating):
                if np.isinf(g).any():
                    raise VectorError(f"{where}: grid has infinite values (NaN marks no-data; inf is refused)")
                with np.errstate(over="ignore", invalid="ignore"):
                    decoded = grid_codec(self.grid_codec, self.model)(g)  # how it is read back: float32
                if np.isinf(decoded).any():
                    check_float32(g, f"{where}: grid")
                    raise VectorError(f"{where}: grid decodes (codec {self.grid_codec!r}) to infinite values; "
                                      "only grids with finite values (NaN for no data) are stored")
        elif self.grid is not None:
            raise VectorError(f"{where}: output mode is 'pooled' but a grid was given")
        if not isinstance(self.compute_s, (int, float)) or not math.isfinite(self.compute_s) or self.compute_s < 0:
            raise VectorError(f"{where}: compute_s={self.compute_s!r} must be a finite number >= 0")

    @property
    def output_mode(self) -> str:
        return self.request.output.mode

    def to_dict(self, *, with_grid: bool = False) -> dict:
        d = {
            "key": self.key,
            "model": self.model,
            "revision": self.request.revision,
            "request": self.request.key_dict(),
            "vector": np.asarray(self.vector, dtype=np.float32).tolist(),
            "dim": self.dim,
            "output": self.output_mode,
            "cached": self.cached,
            "meta": self.meta,
            "compute_s": self.compute_s,
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }
        if self.grid is not None:
            d["grid_shape"] = list(np.asarray(self.grid).shape)
            if with_grid:
                d["grid"] = self.grid_f32().tolist()
        return d
