#!/usr/bin/env python
"""Kept for docs/search.md: the search and filtered-search sections of ``python -m scripts.bench``.

    python scripts/bench_search.py                       # 1,000,000 x 64
    python scripts/bench_search.py --rows 20000          # small, under a minute
    python scripts/bench_search.py --json bench-search.json

is ``python -m scripts.bench --only search filtered --matrix ROWSxDIM
--big-space ROWSxDIM``, with report.json copied to ``--json``. The
measurements themselves live in ``scripts/bench/`` (one implementation).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--json", dest="json_out", help="copy report.json here")
    args = ap.parse_args(argv)
    from scripts.bench.__main__ import main as bench

    point = f"{args.rows}x{args.dim}"
    out = tempfile.mkdtemp(prefix="rsembed-bench-search-")
    try:
        code = bench(["--only", "search", "filtered", "--matrix", point, "--big-space", point,
                      "--runs", str(args.runs), "--out", out])
        with open(os.path.join(out, "report.md")) as f:
            sys.stdout.write(f.read())
        if args.json_out:
            shutil.copyfile(os.path.join(out, "report.json"), args.json_out)
        return code
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
