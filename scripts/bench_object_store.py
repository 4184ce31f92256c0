#!/usr/bin/env python
"""Look-up latency and upsert throughput of the store on an S3-compatible server.

The server is moto's S3 on loopback (started in this process), so the figures
measure the store's own work plus one HTTP round trip per object-store request
on 127.0.0.1, with no network latency, bandwidth limit or throttling. They are
NOT figures for real S3: there every request adds tens of milliseconds. What
carries over is the request count, printed beside each figure: multiply it by
your store's round-trip time to estimate real latency.

What it does, in order:

1. builds a space of ``--rows`` toy-like 64-d rows with ``Store.put_many`` in
   batches of ``--batch`` (new keys), timing each upsert;
2. upserts ``--batch`` rows again, half new keys, half existing (``--runs`` times);
3. times ``--lookups`` single-key look-ups (``lookup_many([key], space=...)``)
   and cache-first hits (``store.get(request, compute=False)``): p50 and p99;
4. times batch look-ups of 100 keys (half misses), ``--runs`` times;
5. runs ``store.maintain`` (compaction, scalar indexes; no vector index) and
   times the single-key look-ups again.

    python scripts/bench_object_store.py                       # 2,000 rows, about a minute on 2 cores
    python scripts/bench_object_store.py --rows 500 --lookups 50 --json out.json

Needs ``moto[server]`` and ``boto3`` (the ``test`` extra). Results and their
reading: ``docs/object-storage.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import threading
import time
from collections import Counter

import numpy as np

from rsembed_store import Embedding, PointBuffer, Request, Store, TemporalSpec, resolve
from rsembed_store.model import Model, ModelInfo
from rsembed_store.registry import register_model
from rsembed_store.specs import SensorSpec

BUCKET = "rsembed-bench"
DIM = 64


class CountingApp:
    """WSGI middleware counting the requests the store sends, by HTTP method."""

    def __init__(self, app):
        self.app = app
        self.counts: Counter = Counter()
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self._lock:
            self.counts[environ.get("REQUEST_METHOD", "?")] += 1
        return self.app(environ, start_response)

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())


def start_moto():
    """moto's S3 on a free loopback port, with one bucket; returns (app, storage_options, server)."""
    import boto3
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = CountingApp(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    creds = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench-secret"}
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **creds).create_bucket(Bucket=BUCKET)
    options = {**creds, "aws_endpoint": endpoint, "aws_region": "us-east-1", "allow_http": "true"}
    return app, options, server


class BenchS3Model(Model):
    """A 64-d model id for benchmarks; it never computes (every row is written directly)."""

    info = ModelInfo(id="bench-s3", revision="bench-s3-v1", kind="on_the_fly", dim=DIM, metric="cosine",
                     default_sensor=SensorSpec("s2-l2a", ("B04", "B08")), input_size=32,
                     description="object-store benchmark rows, never computed")


def embeddings(start: int, count: int, rng) -> list:
    out = []
    for i in range(start, start + count):
        request = resolve(Request("bench-s3", PointBuffer((i % 3000) * 0.001, (i // 3000) * 0.001, 100),
                                  TemporalSpec.year(2023)))
        out.append(Embedding(request=request, vector=rng.standard_normal(DIM).astype(np.float32)))
    return out


def machine() -> dict:
    from importlib.metadata import version

    return {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_start": list(os.getloadavg()),
            **{name: version(name) for name in ("lancedb", "pylance", "moto")}}


def timed(fn, app: CountingApp):
    before = app.total()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0, app.total() - before


def percentile(values, q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def summary(samples) -> dict:
    secs = [s for s, _ in samples]
    return {"p50_ms": round(1e3 * statistics.median(secs), 2), "p99_ms": round(1e3 * percentile(secs, 0.99), 2),
            "requests_per_call": round(statistics.mean(n for _, n in samples), 1), "calls": len(samples)}


def run(args) -> dict:
    app, options, server = start_moto()
    register_model("bench-s3", BenchS3Model)
    rng = np.random.default_rng(0)
    store = Store.open(f"s3://{BUCKET}/bench", storage_options=options)
    out = {"machine": machine(), "rows": args.rows, "batch": args.batch,
           "note": "moto S3 server on loopback: not real S3 figures"}
    built = []
    for start in range(0, args.rows, args.batch):
        batch = embeddings(start, min(args.batch, args.rows - start), rng)
        built.append((len(batch),) + timed(lambda b=batch: store.put_many(b), app))
    out["build"] = {"rows_per_s": round(sum(n for n, _, _ in built) / sum(s for _, s, _ in built), 1),
                    "requests_per_upsert": round(statistics.mean(r for _, _, r in built), 1)}
    mixed = []
    for run_no in range(args.runs):
        half = args.batch // 2
        batch = embeddings(args.rows + run_no * half, half, rng) + embeddings(run_no * half, half, rng)
        mixed.append(timed(lambda b=batch: store.put_many(b), app))
    out["upsert_half_new"] = {"rows_per_s": round(args.batch * len(mixed) / sum(s for s, _ in mixed), 1),
                              "requests_per_upsert": round(statistics.mean(n for _, n in mixed), 1)}
    space = store.spaces()[0].space
    probe = embeddings(0, args.lookups, np.random.default_rng(1))  # same keys as the first rows built
    store.lookup_many([probe[0].key], space=space)  # open the dataset once, outside the clock
    out["lookup_one"] = summary([timed(lambda e=e: store.lookup_many([e.key], space=space), app) for e in probe])
    out["get_hit"] = summary([timed(lambda e=e: store.get(e.request, compute=False), app) for e in probe])
    keys = [e.key for e in probe[:50]] + [f"{i:064x}" for i in range(50)]
    out["lookup_100"] = summary([timed(lambda: store.lookup_many(keys, space=space), app) for _ in range(args.runs)])
    # compaction and fresh scalar indexes (no vector index): fewer, larger files to read
    out["maintain_s"] = round(timed(lambda: store.maintain(min_rows_for_index=10**9), app)[0], 2)
    out["lookup_one_maintained"] = summary([timed(lambda e=e: store.lookup_many([e.key], space=space), app)
                                            for e in probe])
    out["loadavg_end"] = list(os.getloadavg())
    server.shutdown()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--lookups", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", help="write every figure and the machine description here")
    args = parser.parse_args()
    res = run(args)
    print("| figure (moto S3 on loopback, not real S3) | value | object-store requests |")
    print("|---|---|---|")
    print(f"| build upsert, new keys, batches of {args.batch} | {res['build']['rows_per_s']} rows/s | "
          f"{res['build']['requests_per_upsert']} per upsert |")
    print(f"| upsert, half new half existing | {res['upsert_half_new']['rows_per_s']} rows/s | "
          f"{res['upsert_half_new']['requests_per_upsert']} per upsert |")
    for name, label in (("lookup_one", "lookup_many, 1 key"), ("get_hit", "store.get hit (compute=False)"),
                        ("lookup_100", "lookup_many, 100 keys (half misses)"),
                        ("lookup_one_maintained", "lookup_many, 1 key, after maintain")):
        r = res[name]
        print(f"| {label} | p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms | {r['requests_per_call']} per call |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2, default=str)


if __name__ == "__main__":
    main()
