"""Benchmark of the time-series and multimodal models: frames/s and requests/s.

For each case (``prithvi``: 4 frames of 6 bands; ``terramind``: Sentinel-2 alone;
``terramind+s1``: Sentinel-2 and Sentinel-1; ``anysat``: 8 frames of 10 bands),
builds the model at its native input size (224 px; anysat 24 px, rs-embed's contract) from a seeded
random checkpoint of the published architecture (speed does not depend on the
values, and this machine cannot download the published files), then times
``embed_batch`` end to end (packing, gap fill, normalisation, forward, token grid,
pooling) on pooled requests whose pixels are already at the input size, so no
resampling is timed. One warm-up call is not timed.

* requests/s: requests answered per second;
* frames/s: input images per second, i.e. requests x frames x modalities
  (prithvi: 4 per request; terramind: 1; terramind+s1: 2; anysat: 8).

    python scripts/bench_timeseries_models.py                     # every case, 4 requests each
    python scripts/bench_timeseries_models.py prithvi --requests 8 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from rsembed_store.ingest.models.weights import use_weights  # noqa: E402
from rsembed_store.ingest.providers.base import Pixels  # noqa: E402
from rsembed_store.keys import ResolvedRequest  # noqa: E402
from rsembed_store.specs import OutputSpec, PointBuffer, TemporalSpec  # noqa: E402

CASES = ("prithvi", "terramind", "terramind+s1", "anysat")


def random_checkpoint(model_id: str, folder: Path) -> Path:
    """A seeded random state dict in the published format of ``model_id``."""
    import torch

    torch.manual_seed(0)
    if model_id == "prithvi":
        from terratorch.models.backbones import prithvi_vit

        net = prithvi_vit.prithvi_eo_v2_100_tl_mae(pretrained=False, num_frames=4)
    elif model_id == "anysat":
        from rsembed_store.ingest.models.anysat import build_network

        net = build_network()  # the published names of the S2 branch and shared parts
    else:
        from terratorch.models.backbones.terramind.model import terramind_register

        net = terramind_register.terramind_v1_small(modalities=["S2L2A", "S1GRD"], pretrained=False)
    path = folder / f"{model_id}-random.pt"
    torch.save(net.state_dict(), path)
    return path


def items(cls, n: int, with_s1: bool, seed: int = 0):
    """``n`` pooled requests over random reflectance (and dB backscatter) of ``input_size`` px."""
    size, frames = cls.info.input_size, cls.info.frames or 1
    bands = tuple(cls.info.default_sensor.bands)
    rng = np.random.default_rng(seed)
    shape = (frames, len(bands), size, size) if cls.info.frames else (len(bands), size, size)
    valid = np.ones(shape[:1] + shape[2:] if cls.info.frames else (size, size), bool)
    roi = np.ones((size, size), bool)
    grid = dict(crs="EPSG:32632", transform=(0.0, 10.0, 0.0, 0.0, 0.0, -10.0))
    out = []
    for i in range(n):
        sensor = cls.resolve_sensor(None)
        temporal = cls.resolve_temporal(TemporalSpec.year(2023))
        request = ResolvedRequest(
            model=cls.info.id, revision=cls.info.revision, provider="local",
            spatial=PointBuffer(11.0 + i * 1e-3, 46.0, size * 5), temporal=temporal, sensor=sensor,
            output=cls.resolve_output(OutputSpec.pooled()), input_prep=cls.resolve_input_prep(None),
            frames=cls.resolve_frames(temporal),
            modalities=cls.resolve_modalities(("s1",) if with_s1 else None, sensor),
        )
        px = Pixels((rng.random(shape) * 0.3).astype(np.float32), bands, valid, roi, **grid)
        if with_s1:
            s1 = rng.uniform(-25, -5, (2, size, size)).astype(np.float32)
            px.modalities["s1"] = Pixels(s1, ("VV", "VH"), np.ones((size, size), bool), roi.copy(), **grid)
        out.append((px, request))
    return out


def run_case(case: str, n: int, device: str, folder: Path) -> dict:
    model_id, _, extra = case.partition("+")
    cls = use_weights(model_id, random_checkpoint(model_id, folder))
    model = cls({"device": device, "download": False})
    batch = items(cls, n, with_s1=extra == "s1")
    model.embed_batch(batch[:1])  # warm-up
    t0 = time.perf_counter()
    embs = model.embed_batch(batch)
    seconds = time.perf_counter() - t0
    per_request = (cls.info.frames or 1) * (2 if extra == "s1" else 1)
    return {
        "case": case, "device": model.device, "requests": n, "batch_size": model.batch_size,
        "frames_per_request": per_request, "dim": int(embs[0].vector.shape[0]), "seconds": round(seconds, 3),
        "requests_per_s": round(n / seconds, 3), "frames_per_s": round(n * per_request / seconds, 3),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", help=f"cases to run, of {list(CASES)} (default: all)")
    parser.add_argument("--requests", type=int, default=4, help="requests timed per case (default 4)")
    parser.add_argument("--device", default=os.environ.get("RSEMBED_DEVICE", "cpu"))
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; accepted: {list(CASES)}")
    import torch

    with tempfile.TemporaryDirectory(prefix="bench-ts-") as tmp:
        rows = [run_case(case, args.requests, args.device, Path(tmp)) for case in args.cases or CASES]
    report = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                          "loadavg": [round(x, 2) for x in os.getloadavg()]}, "results": rows}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        load = report["machine"]["loadavg"]
        print(f"{'case':<14} {'device':<6} {'req':>4} {'req/s':>8} {'frames/s':>9}  (load {load})")
        for r in rows:
            print(f"{r['case']:<14} {r['device']:<6} {r['requests']:>4} {r['requests_per_s']:>8} "
                  f"{r['frames_per_s']:>9}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
