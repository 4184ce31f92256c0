"""rs-embed 0.3.1's request and export types, under its names and with its defaults.

:class:`FetchSpec`, :class:`ExportTarget`, :class:`ExportConfig`,
:class:`ExportModelRequest` and :class:`ExportLayout` are field-for-field copies of
rs-embed's (``rs_embed.core.specs`` / ``rs_embed.core.types``), so a script that
builds them keeps working after the import switch. :class:`Embedding` is the result
of :func:`~rsembed_store.compat.get_embedding`: rs-embed's ``.data`` and ``.meta``,
plus what the store knows (``key``, ``cached``, ``provider``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

from ..errors import SpecError


@dataclass(frozen=True)
class FetchSpec:
    """Overrides of the model's default sensor (rs-embed's ``FetchSpec``); cannot be combined with ``sensor``."""

    scale_m: Optional[int] = None
    cloudy_pct: Optional[int] = None
    fill_value: Optional[float] = None
    composite: Optional[str] = None

    def __post_init__(self):
        if self.composite not in (None, "median", "mosaic"):
            raise SpecError(f"FetchSpec.composite={self.composite!r} is not accepted; use 'median', 'mosaic' or None")


class ExportLayout(enum.Enum):
    """Batch export layout policy."""

    COMBINED = "combined"
    PER_ITEM = "per_item"


@dataclass(frozen=True)
class ExportTarget:
    """Where an export goes: one combined file, or one file per spatial in a directory."""

    layout: ExportLayout
    out_file: Optional[str] = None
    out_dir: Optional[str] = None
    names: Optional[List[str]] = None

    @classmethod
    def combined(cls, out_file: str) -> "ExportTarget":
        return cls(layout=ExportLayout.COMBINED, out_file=out_file)

    @classmethod
    def per_item(cls, out_dir: str, *, names: Optional[List[str]] = None) -> "ExportTarget":
        return cls(layout=ExportLayout.PER_ITEM, out_dir=out_dir, names=names)


@dataclass(frozen=True)
class ExportConfig:
    """rs-embed's export flags, same names and defaults.

    Honoured here: ``format`` (``npz`` | ``netcdf``), ``save_embeddings``,
    ``save_manifest``, ``continue_on_error``, ``max_retries``, ``retry_backoff_s``,
    ``resume``, ``input_prep``. ``save_inputs`` is accepted but no input patches are
    written (the store keeps answers, not pixels): see docs/rs-embed-users.md.
    ``chunk_size``, ``num_workers``, ``async_write``, ``writer_workers``,
    ``infer_batch_size``, ``show_progress`` and ``fail_on_bad_input`` change how
    rs-embed schedules work, not what is written, and are accepted and ignored.
    """

    format: str = "npz"
    save_inputs: bool = True
    save_embeddings: bool = True
    save_manifest: bool = True
    fail_on_bad_input: bool = False
    chunk_size: int = 16
    infer_batch_size: Optional[int] = None
    num_workers: int = 8
    continue_on_error: bool = False
    max_retries: int = 0
    retry_backoff_s: float = 0.0
    async_write: bool = True
    writer_workers: int = 2
    resume: bool = False
    show_progress: bool = True
    input_prep: Any = None

    @property
    def effective_infer_batch_size(self) -> int:
        return max(1, int(self.infer_batch_size or self.chunk_size))

    @property
    def effective_chunk_size(self) -> int:
        return max(1, int(self.chunk_size))


@dataclass(frozen=True)
class ExportModelRequest:
    """One model of an export with its own sensor, fetch override, modality or settings."""

    name: str
    sensor: Any = None
    fetch: Optional[FetchSpec] = None
    modality: Optional[str] = None
    model_config: Optional[Dict[str, Any]] = None

    @classmethod
    def configure(cls, name: str, *, sensor=None, fetch: Optional[FetchSpec] = None,
                  modality: Optional[str] = None, **model_kwargs: Any) -> "ExportModelRequest":
        return cls(name=name, sensor=sensor, fetch=fetch, modality=modality, model_config=model_kwargs or None)


@dataclass
class Embedding:
    """One answer, shaped like rs-embed's ``Embedding`` (``data``, ``meta``) plus the store's view.

    ``data`` is a float32 ``(D,)`` vector for pooled output, ``(D, H, W)`` for grid
    output. ``meta`` has rs-embed's standard keys (``model``, ``type``, ``backend``,
    ``source``, ``sensor``, ``temporal``, ``image_size``) and the store's (``key``,
    ``cached``, ``provider``, ``revision``). ``stored`` is the store's own
    :class:`rsembed_store.Embedding`.
    """

    data: np.ndarray
    meta: Dict[str, Any]
    key: str = ""
    cached: bool = False
    provider: Optional[str] = None
    stored: Any = field(default=None, repr=False)


__all__ = ["Embedding", "ExportConfig", "ExportLayout", "ExportModelRequest", "ExportTarget", "FetchSpec"]
