#!/usr/bin/env python
"""Schema-driven fuzzing of ``rsembed-store serve``: schemathesis over the server's own OpenAPI document.

    python scripts/fuzz_service.py                       # 5,000 cases over a small generated store
    python scripts/fuzz_service.py --cases 500 --json fuzz.json

A real uvicorn server on 127.0.0.1 (an ephemeral port) serves a small store:
a generated 256 px scene and its H3 cells ingested with the ``spectral`` model.
schemathesis reads ``/openapi.json`` from that server and generates requests
for every operation, valid-shaped (positive) and schema-violating (negative)
ones, one client at a time. Every answer is checked against the house rules:
no 5xx, no dropped connection or time-out, and every error in the one JSON
shape ``{"error": {"code", "message", "field"}}``. The server has a token
and the fuzzer does not send it, so computing on a miss and ``POST /ingest``
are fuzzed up to the token check only (size limits for computation are
another issue's work). Prints a summary; ``--json`` writes it; exits 1 when
any answer broke a rule.

The suite runs a bounded version of this (tests/query/test_service.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

TOKEN = "fuzz-token-never-sent"
YEAR = {"mode": "year", "year": 2023}


def _h3_request(cell) -> dict:
    return {"model": "spectral", "spatial": {"type": "H3Cell", "cell": cell}, "temporal": YEAR}


# Bodies that once broke the service (issue 17), sent before the generated cases.
KNOWN_CASES: List[Tuple[str, str, Any]] = [
    *[(m, p, b) for cell in (2**64, -1, "-1", "ffffffffffffffffff") for m, p, b in (
        ("POST", "/embeddings", {"request": _h3_request(cell), "compute": False}),
        ("POST", "/embeddings/lookup", {"items": [_h3_request(cell)]}),
        ("POST", "/search", {"model": "spectral", "like": {"request": _h3_request(cell)}}),
        ("POST", "/search", {"model": "spectral", "like": {"vector": [0.5] * 44}, "within": {"cells": [cell]}}),
    )],
    *[("POST", "/sql", {"query": q, "format": f}) for f in ("json", "arrow") for q in (
        "SELECT 'infinity'::DATE", "SELECT '-infinity'::TIMESTAMP", "SELECT '294247-01-10'::DATE",
        "UPDATE EXTENSIONS")],
    ("POST", "/search", {"model": "spectral", "like": {"vector": [0.5] * 44}, "k": 10**30}),
    ("POST", "/search", {"model": "spectral", "like": {"vector": [0.5] * 44},
                         "within": {"geojson": {"type": "Polygon", "coordinates": [[[0, 0], [10**400, 0], [1, 1],
                                                                                     [0, 0]]]}}}),
    ("POST", "/embeddings/lookup", {"items": [{"model": "spectral", "temporal": YEAR, "spatial": {
        "type": "PointBuffer", "lon": 10**400, "lat": 0, "buffer_m": 100}}]}),
]


# ---------------------------------------------------------------- the report


@dataclass
class FuzzReport:
    """What one run sent and got: counts by status class and operation, and every broken rule."""

    cases: int = 0
    seconds: float = 0.0
    status_classes: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    operations: Counter = field(default_factory=Counter)
    error_codes: Counter = field(default_factory=Counter)  # (operation, code) of 4xx answers
    server_errors: List[dict] = field(default_factory=list)  # 5xx answers
    dropped: List[dict] = field(default_factory=list)  # no answer: reset, closed, timed out
    bad_shape: List[dict] = field(default_factory=list)  # 4xx not in the one error shape

    @property
    def failures(self) -> int:
        return len(self.server_errors) + len(self.dropped) + len(self.bad_shape)

    def to_dict(self) -> dict:
        return {
            "cases": self.cases,
            "seconds": round(self.seconds, 1),
            "status_classes": dict(sorted(self.status_classes.items())),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "operations": dict(sorted(self.operations.items())),
            "error_codes": {f"{op} {code}": n for (op, code), n in sorted(self.error_codes.items())},
            "server_errors_5xx": len(self.server_errors),
            "dropped_connections": len(self.dropped),
            "bad_error_shape": len(self.bad_shape),
            "examples": (self.server_errors + self.dropped + self.bad_shape)[:20],
        }

    def summary(self) -> str:
        classes = ", ".join(f"{k}: {v}" for k, v in sorted(self.status_classes.items()))
        return (f"{self.cases} cases in {self.seconds:.0f} s ({classes}); 5xx: {len(self.server_errors)}, "
                f"dropped connections: {len(self.dropped)}, errors not in the one shape: {len(self.bad_shape)}")

    def record(self, label: str, status: Optional[int], body: bytes, content_type: str, sent: Any) -> None:
        self.cases += 1
        self.operations[label] += 1
        if status is None:
            self.status_classes["no answer"] += 1
            self.dropped.append({"operation": label, "sent": _short(sent), "error": body.decode(errors="replace")})
            return
        self.statuses[status] += 1
        self.status_classes[f"{status // 100}xx"] += 1
        if status >= 500:
            self.server_errors.append({"operation": label, "status": status, "sent": _short(sent),
                                       "answer": body[:300].decode(errors="replace")})
        elif status >= 400 and _one_error_shape(body, content_type):
            self.error_codes[(label, json.loads(body)["error"]["code"])] += 1
        elif status >= 400:
            self.bad_shape.append({"operation": label, "status": status, "sent": _short(sent),
                                   "answer": body[:300].decode(errors="replace")})


def _one_error_shape(body: bytes, content_type: str) -> bool:
    if not content_type.startswith("application/json"):
        return False
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    err = doc.get("error") if isinstance(doc, dict) else None
    return (set(doc) == {"error"} and isinstance(err, dict) and set(err) == {"code", "message", "field"}
            and isinstance(err["code"], str) and isinstance(err["message"], str) and bool(err["message"]))


def _short(value: Any, limit: int = 400) -> str:
    try:
        text = json.dumps(value, default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------- a store and a server


def small_store(root: Path):
    """A store over a generated 256 px scene, its H3 cells (res 8) ingested with ``spectral``; and its config."""
    from rsembed_store import BBox, Store, TemporalSpec
    from rsembed_store.ingest.engine import Engine
    from rsembed_store.ingest.plan import plan
    from rsembed_store.ingest.regions import region_cells
    from rsembed_store.testing.scenes import SceneSpec, ensure_scene

    manifest = ensure_scene(root / "scene", SceneSpec(size_px=256, n_dates=3, n_patches=12, seed=3))
    config = {"sources": {"s2-l2a": str(root / "scene" / "scenes")}}
    store = Store.open(root / "db", config=config)
    w, s, e, n = manifest["bounds_lonlat"]
    cells = region_cells(BBox(w + 0.003, s + 0.003, e - 0.003, n - 0.003), 8)
    summary = Engine(store, store.config).run(plan("spectral", cells, 8, [TemporalSpec.year(2023)]).requests,
                                              progress=False)
    if summary.failed:
        raise RuntimeError(f"the fuzz store's ingest failed: {summary.failures[:3]}")
    return store


@contextmanager
def serving(app, host: str = "127.0.0.1") -> Iterator[str]:
    """Run ``app`` with uvicorn on ``host`` (an ephemeral port) in a thread; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="off"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


# ---------------------------------------------------------------- fuzzing


def focus_models(doc: Any, models: Sequence[str]) -> Any:
    """``doc`` with every string ``model`` property narrowed to the registered ``models``.

    The service takes any model id and answers an unknown one with 404; left
    free, almost every generated request would stop there. Negative cases
    still send other ids.
    """
    if isinstance(doc, dict):
        props = doc.get("properties")
        if isinstance(props, dict) and isinstance(props.get("model"), dict) and models:
            if props["model"].get("type") == "string":
                props["model"] = {**props["model"], "enum": sorted(models)}
        for value in doc.values():
            focus_models(value, models)
    elif isinstance(doc, list):
        for value in doc:
            focus_models(value, models)
    return doc


def fuzz(base_url: str, *, cases: int, seed: int = 0, time_limit_s: Optional[float] = None,
         known: Sequence[Tuple[str, str, Any]] = KNOWN_CASES, log=None) -> FuzzReport:
    """Send ``known`` bodies, then about ``cases`` schemathesis cases spread over every operation.

    Each round gives every operation x generation mode (positive, negative) an
    equal share; operations whose inputs are soon exhausted (``GET /health``)
    give their share back to the next round, which runs with another seed,
    until ``cases`` were sent or ``time_limit_s`` passed.
    """
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis.errors import Unsatisfiable

    report = FuzzReport()
    started = time.monotonic()
    session = requests.Session()

    def out_of_time() -> bool:
        return time_limit_s is not None and time.monotonic() - started > time_limit_s

    def send(label: str, call) -> None:
        sent, response = call()
        if isinstance(response, Exception):
            report.record(label, None, f"{type(response).__name__}: {response}".encode(), "", sent)
        else:
            content_type = response.headers.get("content-type") or ""
            if isinstance(content_type, list):  # schemathesis keeps every value of a header
                content_type = content_type[0] if content_type else ""
            report.record(label, response.status_code, response.content, content_type, sent)

    for method, path, body in known:
        def direct(method=method, path=path, body=body):
            try:
                data = None if body is None else json.dumps(body)
                return body, session.request(method, base_url + path, data=data,
                                             headers={"content-type": "application/json"}, timeout=60)
            except requests.RequestException as exc:
                return body, exc

        send(f"{method} {path}", direct)

    if cases <= 0:
        report.seconds = time.monotonic() - started
        return report
    doc = session.get(f"{base_url}/openapi.json", timeout=60).json()
    models = [m.get("id") for m in
              session.get(f"{base_url}/models", timeout=60).json()["models"]]
    schema = schemathesis.openapi.from_dict(focus_models(doc, [m for m in models if m]))
    operations = [result.ok() for result in schema.get_all_operations()]
    modes = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
    want = report.cases + cases
    round_no = 0
    while report.cases < want and not out_of_time():
        before = report.cases
        share = max(1, math.ceil((want - report.cases) / (len(operations) * len(modes))))
        for op in operations:
            for mode in modes:
                if report.cases >= want or out_of_time():
                    break

                @hypothesis_seed(seed * 1_000 + round_no)
                @settings(max_examples=share, database=None, deadline=None, derandomize=False,
                          suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
                @given(case=op.as_strategy(generation_mode=mode))
                def one(case):
                    if report.cases >= want or out_of_time():
                        return
                    label = f"{case.method.upper()} {case.operation.path}"

                    def call():
                        sent = {"path": case.formatted_path, "query": case.query, "body": case.body}
                        try:
                            return sent, case.call(base_url=base_url, session=session, timeout=60)
                        except requests.RequestException as exc:
                            return sent, exc

                    send(label, call)

                try:
                    one()
                except Unsatisfiable:  # e.g. negative cases of GET /health, which takes no input
                    pass
        round_no += 1
        if log:
            log(f"round {round_no}: {report.cases} cases, {len(report.server_errors)} 5xx, "
                f"{len(report.dropped)} dropped")
        if report.cases == before:  # nothing left to generate
            break
    report.seconds = time.monotonic() - started
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=5_000, help="generated cases to send (default 5,000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", dest="json_out", help="write the report here")
    args = ap.parse_args(argv)

    from rsembed_store.query.service import create_app

    with tempfile.TemporaryDirectory(prefix="rsembed-fuzz-") as tmp:
        store = small_store(Path(tmp))
        with serving(create_app(store, token=TOKEN)) as base_url:
            report = fuzz(base_url, cases=args.cases, seed=args.seed,
                          log=lambda line: print(line, file=sys.stderr, flush=True))
    print(report.summary())
    for example in (report.server_errors + report.dropped + report.bad_shape)[:20]:
        print("  ", json.dumps(example)[:600])
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
