"""Entry point: ``python -m scripts.bench [--quick] [--only SECTION ...] [--out DIR] [--runs N]``.

Runs the sections in a fixed order (so the big space built for ``search`` is
reused by ``filtered``, ``retrieval`` and ``sql``), writes ``report.json`` and
``report.md`` to ``--out`` (default ``bench-results``), and exits non-zero when a
section failed (its error is in the report; the other sections still run).
"""

from __future__ import annotations

import os

# Set before numpy and faiss load. One BLAS thread: the baselines answer one query at a time, and a
# multi-threaded matrix-vector product is slower than one thread on a small, shared machine. Passive
# OpenMP waits: FAISS builds then do not spin on cores that other processes need.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from dataclasses import asdict, replace  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from typing import List, Optional  # noqa: E402

from . import config as configs  # noqa: E402
from . import filtered, ingest, retrieval, search, serving, sql  # noqa: E402
from .machine import loadavg, machine  # noqa: E402
from .render import render  # noqa: E402
from .workspace import Workspace, log  # noqa: E402

ORDER = (("search", search.run), ("filtered", filtered.run), ("retrieval", retrieval.run),
         ("sql", sql.run), ("ingest", ingest.run), ("serving", serving.run))  # serving adds rows: last


def point(text: str) -> tuple:
    """``"100000x64"`` -> ``(100000, 64)``."""
    try:
        rows, dim = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not ROWSxDIM, e.g. 100000x64") from None
    if rows < 1000 or dim < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: use at least 1000 rows and 2 dimensions")
    return rows, dim


def parse(argv: Optional[List[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m scripts.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 1 run: CI's smoke run (well under 2 minutes)")
    ap.add_argument("--only", nargs="+", metavar="SECTION", help=f"run only these of {list(configs.SECTIONS)}")
    ap.add_argument("--out", default="bench-results",
                    help="directory for report.json and report.md (default bench-results, which git ignores)")
    ap.add_argument("--runs", type=int, help="runs per figure (default 3; 1 with --quick)")
    ap.add_argument("--matrix", nargs="+", metavar="ROWSxDIM", type=point,
                    help="search matrix points instead of the default, e.g. 100000x64 1000000x128")
    ap.add_argument("--big-space", metavar="ROWSxDIM", type=point,
                    help="the space filtered, retrieval and sql run over (default 1000000x64; 20000x64 with --quick)")
    ap.add_argument("--workdir", help="where data and stores are built (default: a temp dir, deleted afterwards)")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.only or ()) - set(configs.SECTIONS))
    if unknown:
        ap.error(f"unknown section(s) {unknown}; choose from {list(configs.SECTIONS)}")
    if args.runs is not None and args.runs < 1:
        ap.error(f"--runs {args.runs} must be at least 1")
    return args


def mode(args: argparse.Namespace) -> str:
    """"quick", "full" (every section at the default sizes) or "partial" (anything narrowed or resized)."""
    if args.quick:
        return "quick"
    return "partial" if (args.only or args.matrix or args.big_space) else "full"


def main(argv: Optional[List[str]] = None) -> int:
    args = parse(argv)
    cfg = configs.quick() if args.quick else configs.full()
    if args.runs:
        cfg = replace(cfg, runs=args.runs)
    if args.matrix:
        cfg = replace(cfg, search_matrix=tuple(args.matrix))
    if args.big_space:
        cfg = replace(cfg, big_space=args.big_space)
    wanted = set(args.only or configs.SECTIONS)
    os.makedirs(args.out, exist_ok=True)
    work = args.workdir or tempfile.mkdtemp(prefix="rsembed-bench-")
    os.makedirs(work, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind, so the temp dir is removed
    t0 = time.perf_counter()
    report = {"command": "python -m scripts.bench " + " ".join(argv if argv is not None else sys.argv[1:]),
              "mode": mode(args), "config": asdict(cfg),
              "machine": {**machine(), "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
                          "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")},
              "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "sections": {}}
    failed = False
    try:
        ws = Workspace(work, cfg)
        for name, fn in ORDER:
            if name not in wanted:
                continue
            log(f"section {name} ...")
            t = time.perf_counter()
            try:
                report["sections"][name] = fn(ws)
            except Exception as exc:  # recorded; the other sections still run
                traceback.print_exc()
                report["sections"][name] = {"error": f"{type(exc).__name__}: {exc}"}
                failed = True
            report["sections"][name]["seconds"] = round(time.perf_counter() - t, 1)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["loadavg_end"] = loadavg()
    report["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(render(report))
    log(f"wrote {args.out}/report.json and report.md in {report['seconds']} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
