"""Load the HTTP service with concurrent clients: requests/s, p50/p99 and every non-2xx answer.

``python -m scripts.load_service [--rows 1800] [--clients 1 4 8] [--requests 200] [--runs 3] [--workers 1]``

Writes a benchmark space (the seeded clustered vectors of ``scripts.bench``) to a
fresh store and builds its serving tier (as ``maintain`` would), starts ``rsembed-store serve`` on a free loopback port in its own
process, and sends valid ``POST /search`` requests (by stored key and by vector,
alternating) from N client threads at once, each on its own keep-alive
connection. Prints one JSON line per client count and exits non-zero if any
answer was not a 2xx or a connection failed. The clients share this process, so
at high rates their own Python overhead is part of the figure; the server
process is what is measured otherwise.

:func:`hammer` and :func:`served_in_thread` are also used by the test suite
(``tests/test_concurrency.py``) on a few hundred requests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Callable, Iterator, List, Optional, Sequence

import numpy as np


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base: str, timeout_s: float = 60.0, alive: Callable[[], bool] = lambda: True) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or not alive():
            raise RuntimeError(f"the service at {base} did not answer /health within {timeout_s:.0f} s")
        time.sleep(0.1)


@contextlib.contextmanager
def served_in_thread(app) -> Iterator[str]:
    """Serve an ASGI ``app`` with uvicorn on a free loopback port in a thread; yields its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_healthy(base, 30, thread.is_alive)
        yield base
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextlib.contextmanager
def served_in_process(db: str, workers: int = 1) -> Iterator[str]:
    """``rsembed-store serve --db DB --workers N`` on a free loopback port in its own process(es); yields its
    base URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "rsembed_store", "--db", db, "serve", "--port", str(port), "--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, 120, lambda: proc.poll() is None)
        yield base
    except RuntimeError:
        proc.kill()
        raise RuntimeError(f"serve failed: {proc.communicate()[1][-2000:]}") from None
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def run_together(work: Callable[[int, threading.Barrier], None], n: int) -> float:
    """Run ``work(i, start)`` in ``n`` threads that each wait on ``start`` before their first call; the wall
    seconds from the moment all are released to the last one's end."""
    start = threading.Barrier(n + 1)
    threads = [threading.Thread(target=work, args=(i, start)) for i in range(n)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def hammer(base: str, path: str, bodies: Sequence[dict], *, clients: int, total: int,
           check: Optional[Callable[[dict, dict], None]] = None) -> dict:
    """Send ``total`` POSTs of ``bodies`` (cycled) to ``base + path`` from ``clients`` threads at once.

    Returns requests/s, latency percentiles and every failure by kind (HTTP status
    or exception class). ``check(body, answer)`` may raise to count a 2xx whose
    content is wrong as a failure too.
    """
    import httpx

    per_client = [total // clients + (1 if c < total % clients else 0) for c in range(clients)]
    latencies: List[float] = []
    failures: Counter = Counter()
    lock = threading.Lock()

    def client(c: int, start: threading.Barrier) -> None:
        mine, bad = [], Counter()
        with httpx.Client(base_url=base, timeout=60) as http:
            start.wait()
            for i in range(per_client[c]):
                body = bodies[(c * 7919 + i) % len(bodies)]
                t0 = time.perf_counter()
                try:
                    res = http.post(path, json=body)
                    took = time.perf_counter() - t0
                    if res.status_code // 100 != 2:
                        bad[f"HTTP {res.status_code}: {res.text[:120]}"] += 1
                    elif check is not None:
                        check(body, res.json())
                    mine.append(took)
                except Exception as exc:  # a dropped connection or a wrong answer: counted, not raised
                    bad[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
        with lock:
            latencies.extend(mine)
            failures.update(bad)

    wall = run_together(client, clients)
    ms = np.asarray(latencies) * 1e3
    return {
        "clients": clients,
        "requests": total,
        "failed": int(sum(failures.values())),
        "failures": dict(failures),
        "wall_s": round(wall, 3),
        "requests_per_s": round(total / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
    }


def build_store(path: str, rows: int, dim: int, seed: int = 0):
    """A store at ``path`` holding ``rows`` benchmark vectors of ``dim``; returns (model, keys, queries)."""
    from rsembed_store import Store
    from rsembed_store.registry import model_info

    from .bench.data import BLOCK, RowWriter, VectorData, model_id

    model = model_id(dim)
    data = VectorData(rows, dim, n_queries=200, seed=seed)
    X = data.matrix()
    store = Store.open(path)
    writer = RowWriter(model, dim, store.h3_res)
    info = model_info(model)
    store.ensure_space(model, writer.revision, dim, metric=info.metric, kind=info.kind)
    table = store.table(writer.space)
    keys: List[str] = []
    for start in range(0, rows, BLOCK):  # the benchmark's own row writer: Arrow batches straight in
        batch = writer.table(data, X, start, min(rows, start + BLOCK))
        keys.extend(batch.column("key").to_pylist())
        table.add(batch)
    store.serving.build(writer.space)  # saved beside the space: the server loads it, as after `maintain`
    return model, keys, data.queries


def search_bodies(model: str, keys: Sequence[str], queries: np.ndarray, n: int = 200) -> List[dict]:
    """Valid /search bodies, alternating a stored key and a held-out query vector."""
    out = []
    for i in range(n):
        like = ({"key": keys[(i * 104729) % len(keys)]} if i % 2 == 0
                else {"vector": [float(x) for x in queries[i % len(queries)]]})
        out.append({"model": model, "like": like, "k": 10})
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scripts.load_service", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1800, help="rows in the benchmark space (default 1800)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--requests", type=int, default=200, help="requests per client count (default 200)")
    ap.add_argument("--runs", type=int, default=3, help="runs per client count; the median run is reported")
    ap.add_argument("--workers", type=int, default=1, help="uvicorn worker processes of the server (default 1)")
    ap.add_argument("--db", help="use this store directory (kept) instead of a temporary one")
    args = ap.parse_args(argv)
    with contextlib.ExitStack() as stack:
        db = args.db or stack.enter_context(tempfile.TemporaryDirectory(prefix="rsembed-load-"))
        t0 = time.perf_counter()
        model, keys, queries = build_store(os.path.join(db, "store"), args.rows, args.dim)
        print(f"# wrote {args.rows:,} x {args.dim} in {time.perf_counter() - t0:.1f} s; "
              f"load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
        bodies = search_bodies(model, keys, queries)
        failed = 0
        with served_in_process(os.path.join(db, "store"), args.workers) as base:
            hammer(base, "/search", bodies[:20], clients=1, total=20)  # warm-up: open the space, load caches
            for clients in args.clients:
                runs = sorted((hammer(base, "/search", bodies, clients=clients, total=args.requests)
                               for _ in range(args.runs)), key=lambda r: r["requests_per_s"])
                fig = {**runs[len(runs) // 2], "rows": args.rows, "dim": args.dim, "workers": args.workers,
                       "runs_rps": [r["requests_per_s"] for r in runs], "loadavg": round(os.getloadavg()[0], 2)}
                failed += sum(r["failed"] for r in runs)
                print(json.dumps(fig), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
