"""The shared base of deep (PyTorch) embedders: weights, device, batching, normalisation, tokens.

Every deep model subclasses :class:`TorchModel`, which is an
:class:`~rsembed_store.ingest.models.base.OnTheFlyModel`: band selection, usable
masks, resize/tile input prep and the pooled/grid assembly come from there; this
module adds what every network shares. torch (and each model's library) is
imported only when a model is built, so resolving keys and listing models never
imports it; a missing library raises MissingExtraError naming the extra.

Contract of a subclass (declare, then implement two methods)
============================================================
Class attributes:

* ``info``: ModelInfo with ``revision = published.revision``, ``input_size`` S,
  ``default_sensor`` whose ``bands`` are the model's input channels, in order;
* ``published``: :class:`~.weights.PublishedWeights` (file name, URL, pinned SHA-256);
* ``extra``: the pip extra that installs its library (``pip install 'rsembed-store[extra]'``);
* ``patch_px``: input pixels per token side; the token grid is ``S/patch_px`` square;
* ``norm_mean`` / ``norm_std``: per input channel, in the units :meth:`to_model_units`
  returns (reflectance 0..1 unless overridden): the statistics the weights were trained with;
* ``pooled_head``: False -> pooled = mean or max of the usable patch tokens (CLS
  dropped); True -> pooled = the network's own pooled embedding (its published
  embedding, e.g. CLIP's image embedding), and only ``pooling="mean"`` is accepted;
* ``batch_cpu`` / ``batch_gpu``: the largest batch on each kind of device.

Methods:

* ``architecture(self) -> torch.nn.Module``: the network, randomly initialised, built
  through the library the model is published with;
* ``build(self, weights_file) -> torch.nn.Module``: ``architecture()`` with the
  checkpoint's state dict loaded (a WeightsError when it does not fit), usually
  through :meth:`TorchModel.load_checkpoint`;
* ``forward(self, net, x) -> (tokens, pooled)``: ``x`` is float32 ``(B, C, S, S)``,
  already normalised, on ``self.device``; ``tokens`` is ``(B, N, D)`` patch tokens
  (CLS and other prefix tokens dropped) in row-major order, north row first,
  ``N = (S/patch_px)**2``; ``pooled`` is ``(B, D)`` when ``pooled_head`` else None.
* optionally ``to_model_units(self, x)``: numpy ``(C, h, w)`` reflectance -> the units
  the network was trained on (e.g. a display stretch for RGB models).

What the base does with them, for each piece (a resized ROI or one tile, always
``S x S`` because ``fixed_input`` is True):

1. ``to_model_units``, unusable pixels set to ``norm_mean`` (so they are 0 after
   normalisation and carry no signal), ``(x - norm_mean) / norm_std``;
2. batches the pieces of *all* requests given to :meth:`embed_batch` together, in
   ``inference_mode`` with the network in eval mode, on the chosen device:
   ``config["device"]``, else ``$RSEMBED_DEVICE``, else cuda when available, else cpu.
   The batch starts at ``config["batch_size"]`` or ``batch_gpu``/``batch_cpu``; on a
   CUDA out-of-memory error it halves and retries, and keeps the smaller size;
3. grid: tokens reshaped to ``(D, S/patch_px, S/patch_px)``, channel-first, north-up;
   a cell is NaN when no usable pixel lies under its patch. pooled: the head, or
   the masked mean/max over the usable cells (the base combines tiles).

Weights: the variant's ``weights_path`` (see :func:`~.weights.use_weights`), else
``config["weights"]`` (which must give the revision the requests were keyed for),
else :func:`~.weights.locate` (``config["download"] = False`` forbids downloading).
:meth:`TorchModel.with_random_weights` gives a class that loads no checkpoint
(revision ``random-init``), for benchmarks where only the architecture matters.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import ClassVar, List, Optional, Sequence, Tuple

import numpy as np

from ...errors import ComputeError, SpecError, require
from ...specs import OutputSpec
from . import weights as wts
from .base import OnTheFlyModel, masked_pool
from .outcomes import attempt, outcomes

ENV_DEVICE = "RSEMBED_DEVICE"

Piece = Tuple[np.ndarray, np.ndarray]  # (x (C, S, S) reflectance, usable mask (S, S))


def import_torch(extra: str = "torch"):
    """torch, or MissingExtraError naming the extra that installs it."""
    return require("torch", extra, "deep models")


def pick_device(requested: Optional[str] = None) -> str:
    """``requested``, else ``$RSEMBED_DEVICE``, else ``cuda`` when available, else ``cpu``."""
    torch = import_torch()
    name = requested or os.environ.get(ENV_DEVICE) or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise SpecError(f"device {name!r} is not a torch device; use 'cpu', 'cuda' or 'cuda:N'") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SpecError(f"device {name!r} was asked for but torch sees no CUDA GPU; use 'cpu'")
    return str(device)


class TorchModel(OnTheFlyModel):
    """Base of the PyTorch embedders; the module docstring is the subclass contract."""

    published: ClassVar[wts.PublishedWeights]
    extra: ClassVar[str] = "torch"
    patch_px: ClassVar[int] = 16
    norm_mean: ClassVar[Tuple[float, ...]] = ()
    norm_std: ClassVar[Tuple[float, ...]] = ()
    pooled_head: ClassVar[bool] = False
    batch_cpu: ClassVar[int] = 8
    batch_gpu: ClassVar[int] = 64
    fixed_input = True
    #: set on variants made by weights.use_weights: the custom checkpoint they load
    weights_path: ClassVar[Optional[str]] = None
    #: set by with_random_weights: keep the architecture's random initialisation
    random_init: ClassVar[bool] = False

    def __init__(self, config=None):
        super().__init__(config)
        self.torch = import_torch(self.extra)
        self.device = pick_device(self.config.get("device"))
        default = self.batch_gpu if self.device.startswith("cuda") else self.batch_cpu
        self.batch_size = int(self.config.get("batch_size") or default)
        if self.batch_size < 1:
            raise SpecError(f"{self.info.id}: batch_size={self.batch_size}; give a positive integer")
        self.weights_file = None if self.random_init else self._weights_file()
        net = self.architecture() if self.random_init else self.build(self.weights_file)
        self.net = net.to(self.device).eval()
        self._mean = np.asarray(self.norm_mean, np.float32)[:, None, None]
        self._std = np.asarray(self.norm_std, np.float32)[:, None, None]
        self._local = threading.local()

    # ------------------------------------------------------------ resolution

    @classmethod
    def settle(cls) -> type:
        """Called by the registry on first look-up: the variant named by ``$RSEMBED_WEIGHTS``, if any."""
        return wts.settle(cls)

    @classmethod
    def with_random_weights(cls) -> type:
        """A subclass that loads no checkpoint and keeps the random initialisation; its revision
        ``random-init`` keeps its answers apart from every real space (benchmarks only)."""
        base = wts.published_class(cls)
        info = replace(base.info, revision="random-init")
        return type(f"{base.__name__}_random", (base,), {"info": info, "random_init": True, "__module__": base.__module__})

    @classmethod
    def resolve_output(cls, output: Optional[OutputSpec]) -> OutputSpec:
        resolved = super().resolve_output(output)
        if cls.pooled_head and resolved.mode == "pooled" and resolved.pooling != "mean":
            raise SpecError(
                f"model {cls.info.id!r}: pooled output is the network's own embedding, so "
                f"pooling={resolved.pooling!r} does not apply; use OutputSpec.pooled() (mean), or "
                "OutputSpec.grid() for the patch tokens"
            )
        return resolved

    # ------------------------------------------------------------ subclass hooks

    def architecture(self):  # pragma: no cover - interface
        """The network, randomly initialised (see the module docstring)."""
        raise NotImplementedError

    def build(self, weights_file: Path):  # pragma: no cover - interface
        """The network with the checkpoint loaded (see the module docstring); usually
        ``self.load_checkpoint(self.architecture(), weights_file, what)``."""
        raise NotImplementedError

    def load_checkpoint(self, net, weights_file: Path, what: str, *, select=None, may_miss=()):
        """Load the state dict in ``weights_file`` into ``net`` and return ``net``.

        ``select(state) -> state`` keeps or renames the entries the network uses
        (a checkpoint may hold more, e.g. other sensors' inputs); ``may_miss`` names
        parameters the file may lack (a classification head the embedding does not
        use). Anything else that does not fit -- not a state dict, a missing or
        unexpected key, a tensor of the wrong shape -- is a WeightsError naming the
        file and ``what`` it should be (e.g. ``"a DOFA ViT-B/16 state dict"``).
        """
        where = f"{str(weights_file)!r} is not {what}"
        state = self.torch.load(weights_file, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise wts.WeightsError(f"{where}: it holds a {type(state).__name__}, not a state dict")
        try:
            state = select(state) if select is not None else state
            missing, unexpected = net.load_state_dict(state, strict=False)
        except Exception as exc:  # noqa: BLE001 - wrong shapes (RuntimeError), a library's filter failing
            raise wts.WeightsError(f"{where}: {exc}") from exc
        missing = sorted(set(missing) - set(may_miss))
        if missing or unexpected:
            raise wts.WeightsError(f"{where}: missing {missing[:5]}, unexpected {sorted(unexpected)[:5]}")
        return net

    def forward(self, net, x):  # pragma: no cover - interface
        """``(tokens (B, N, D), pooled (B, D) | None)`` for a normalised batch."""
        raise NotImplementedError

    def to_model_units(self, x: np.ndarray) -> np.ndarray:
        """Reflectance -> the units of ``norm_mean``/``norm_std`` (identity by default)."""
        return x

    # ------------------------------------------------------------ weights

    def _weights_file(self) -> Path:
        cls, info = type(self), self.info
        if cls.weights_path:
            return Path(cls.weights_path)
        explicit = self.config.get("weights")
        if explicit:
            file = wts.custom_file(info.id, explicit, self.published)
            rev = wts.revision_of(file, self.published)
            if rev != info.revision:
                raise SpecError(
                    f"model {info.id!r}: config weights {str(explicit)!r} are revision {rev}, but requests "
                    f"for this model are keyed for {info.revision}; call use_weights({info.id!r}, "
                    f"{str(explicit)!r}) (or set RSEMBED_WEIGHTS={info.id}={explicit}) before resolving "
                    "requests, so that their keys name these weights"
                )
            return file
        return wts.locate(info.id, self.published, allow_download=bool(self.config.get("download", True)))

    # ------------------------------------------------------------ inference

    def normalise(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """One piece -> the network's input: model units, unusable pixels neutral, standardised."""
        z = np.where(mask, self.to_model_units(x), self._mean)
        return ((z - self._mean) / self._std).astype(np.float32)

    def cell_usable(self, mask: np.ndarray) -> np.ndarray:
        """``(gh, gw)``: patches holding at least one usable pixel."""
        g = mask.shape[0] // self.patch_px
        return mask[: g * self.patch_px, : g * self.patch_px].reshape(g, self.patch_px, g, self.patch_px).any(axis=(1, 3))

    def infer(self, pieces: Sequence[Piece]) -> List[Tuple[np.ndarray, Optional[np.ndarray]]]:
        """``[(grid (D, gh, gw) with NaN cells, head (D,) | None)]`` for the pieces, batched."""
        out: List[Tuple[np.ndarray, Optional[np.ndarray]]] = []
        start = 0
        while start < len(pieces):
            chunk = pieces[start:start + self.batch_size]
            try:
                tokens, pooled = self._run(chunk)
            except Exception as exc:  # noqa: BLE001 - only CUDA OOM is retried
                if not self._is_oom(exc) or self.batch_size == 1:
                    raise
                self.batch_size = max(1, self.batch_size // 2)
                self.torch.cuda.empty_cache()
                continue
            for i, (_, mask) in enumerate(chunk):
                out.append(self._piece_output(tokens[i], None if pooled is None else pooled[i], mask))
            start += len(chunk)
        return out

    def _run(self, chunk: Sequence[Piece]):
        torch = self.torch
        batch = np.stack([self.normalise(x, m) for x, m in chunk])
        with torch.inference_mode():
            tokens, pooled = self.forward(self.net, torch.from_numpy(batch).to(self.device))
            tokens = tokens.float().cpu().numpy()
            pooled = None if pooled is None else pooled.float().cpu().numpy()
        return tokens, pooled

    def _is_oom(self, exc: BaseException) -> bool:
        oom = getattr(self.torch.cuda, "OutOfMemoryError", ())
        return isinstance(exc, oom) or "out of memory" in str(exc).lower()

    def _piece_output(self, tokens: np.ndarray, pooled: Optional[np.ndarray], mask: np.ndarray):
        ok = self.cell_usable(mask)
        gh, gw = ok.shape
        if tokens.shape[0] != gh * gw:
            raise ComputeError(
                f"{self.info.id}: the network gave {tokens.shape[0]} patch tokens for a {mask.shape[0]} px "
                f"input with {self.patch_px} px patches; expected {gh}x{gw}={gh * gw}"
            )
        grid = tokens.T.reshape(tokens.shape[1], gh, gw).astype(np.float32)
        grid[:, ~ok] = np.nan
        return grid, pooled

    # ------------------------------------------------------------ the OnTheFlyModel hooks

    def _result(self, x: np.ndarray, mask: np.ndarray):
        ready = getattr(self._local, "ready", None) or {}
        hit = ready.get(id(x))
        return hit if hit is not None else self.infer([(x, mask)])[0]

    def features(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if not mask.any():  # e.g. a tile outside the ROI: nothing to run
            g = mask.shape[0] // self.patch_px
            return np.full((self.info.dim, g, g), np.nan, np.float32)
        return self._result(x, mask)[0]

    def pool(self, x: np.ndarray, mask: np.ndarray, pooling: str) -> Optional[np.ndarray]:
        if not mask.any():
            return None
        grid, head = self._result(x, mask)
        return head.astype(np.float32) if self.pooled_head else masked_pool(grid, pooling)

    def embed_batch(self, items, *, return_exceptions: bool = False) -> list:
        """Embed many ``(pixels, request)`` items, running the pieces of all of them through the
        network in shared batches; with ``return_exceptions`` a failed item yields its exception."""
        t0 = time.perf_counter()
        plans = outcomes(items, lambda item: self._plan(*item), return_exceptions=return_exceptions)
        pieces = [p for plan in plans if not isinstance(plan, BaseException) for p in plan[0] if p[1].any()]
        results = self.infer([(p[0], p[1]) for p in pieces])
        self._local.ready = {id(p[0]): r for p, r in zip(pieces, results)}
        share = (time.perf_counter() - t0) / max(len(items), 1)
        def finish(plan, request):
            emb = self._assemble(*plan, request, None, time.perf_counter())
            emb.compute_s += share
            return emb

        out = []
        try:
            for plan, (_, request) in zip(plans, items):
                if isinstance(plan, BaseException):
                    out.append(plan)
                else:
                    out.append(attempt(finish, plan, request, return_exceptions=return_exceptions))
        finally:
            self._local.ready = None
        return out

    def embed(self, pixels, request, meta=None):
        emb = self.embed_batch([(pixels, request)])[0]
        emb.meta.update(meta or {})
        return emb
