"""Benchmark of the deep models: images/s at batch 1 and at the adaptive batch size.

For each model (default: every registered model with published weights), builds it
on the automatically chosen device (``--device`` or ``$RSEMBED_DEVICE`` to force
one), then times ``embed_batch`` end to end (band pick, normalisation, forward,
token grid, pooling) on pooled requests whose input is already ``input_size``
square, so no resampling is timed:

* batch 1: one request per call, ``--images`` calls;
* adaptive: ``--images`` requests in one call, which the model runs in batches of its
  adaptive size (the CPU maximum, or the GPU maximum halved on out-of-memory).

The published weights are used when they are on the machine (``$RSEMBED_WEIGHTS_DIR``
or the cache); otherwise a random initialisation of the same architecture, since speed
does not depend on the values (the ``weights`` column says which). One warm-up call
per mode is not timed. The same script runs unchanged on a GPU machine.

    python scripts/bench_models.py                       # all deep models, 32 images per mode
    python scripts/bench_models.py remoteclip --images 8 --json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from rsembed_store.ingest.models.torch_base import TorchModel  # noqa: E402
from rsembed_store.ingest.models.weights import WeightsError, published_class  # noqa: E402
from rsembed_store.ingest.providers.base import Pixels  # noqa: E402
from rsembed_store.keys import ResolvedRequest  # noqa: E402
from rsembed_store.registry import model_class, model_names  # noqa: E402
from rsembed_store.specs import OutputSpec, PointBuffer, TemporalSpec  # noqa: E402


def deep_model_ids():
    """Registered TorchModels with pinned published weights (those can be built with random weights)."""
    return [n for n in model_names()
            if issubclass(model_class(n), TorchModel) and getattr(model_class(n), "published", None) is not None]


def build(name: str, device):
    """``(model, "published" | "random-init")``."""
    cls = published_class(model_class(name))
    config = {"download": False, "device": device}
    try:
        return cls(config), "published"
    except WeightsError:
        return cls.with_random_weights()(config), "random-init"


def items(model, n: int, seed: int = 0):
    """``n`` pooled requests over random reflectance of ``input_size`` px in the model's bands."""
    cls, size = type(model), model.info.input_size
    bands = tuple(cls.info.default_sensor.bands)
    rng = np.random.default_rng(seed)
    ones = np.ones((size, size), bool)
    out = []
    for i in range(n):
        request = ResolvedRequest(
            model=cls.info.id, revision=cls.info.revision, provider=cls.resolve_provider(None),
            spatial=PointBuffer(11.0 + i * 1e-3, 46.0, size * 5), temporal=cls.resolve_temporal(TemporalSpec.year(2022)),
            sensor=cls.resolve_sensor(None), output=cls.resolve_output(OutputSpec.pooled()),
            input_prep=cls.resolve_input_prep(None),
        )
        arr = (rng.random((len(bands), size, size)) * 0.3).astype(np.float32)
        out.append((Pixels(arr, bands, ones, ones, "EPSG:32632", (0, 10, 0, 0, 0, -10)), request))
    return out


def _sync(model):
    if model.device.startswith("cuda"):
        model.torch.cuda.synchronize()


def time_batch1(model, work) -> float:
    model.embed_batch(work[:1])
    _sync(model)
    t0 = time.perf_counter()
    for item in work:
        model.embed_batch([item])
    _sync(model)
    return len(work) / (time.perf_counter() - t0)


def time_adaptive(model, work) -> float:
    model.embed_batch(work[: model.batch_size])
    _sync(model)
    t0 = time.perf_counter()
    model.embed_batch(work)
    _sync(model)
    return len(work) / (time.perf_counter() - t0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="model ids (default: every deep model)")
    parser.add_argument("--images", type=int, default=32, help="images per mode (default 32)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--json", action="store_true", help="one JSON object per model")
    args = parser.parse_args(argv)
    rows = []
    for name in args.models or deep_model_ids():
        model, weights = build(name, args.device)
        work = items(model, max(args.images, 1))
        row = {"model": name, "device": model.device, "weights": weights, "input_px": model.info.input_size,
               "batch1_img_s": round(time_batch1(model, work), 2)}
        row.update(adaptive_batch=model.batch_size, adaptive_img_s=round(time_adaptive(model, work), 2))
        rows.append(row)
        print(json.dumps(row) if args.json else
              f"{name:12s} {row['device']:7s} {weights:11s} batch 1: {row['batch1_img_s']:8.2f} img/s   "
              f"batch {row['adaptive_batch']:3d}: {row['adaptive_img_s']:8.2f} img/s", flush=True)
    if not args.json:
        print(f"({args.images} images per mode; {platform.processor() or platform.machine()}, "
              f"torch threads {model.torch.get_num_threads()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
