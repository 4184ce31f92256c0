"""``rsembed-store --help``, ``models`` and ``stats`` answer without importing the heavy libraries
(LanceDB alone takes one to several seconds to import). Checked through ``sys.modules`` in a fresh
interpreter, not by timing, so the test holds on a loaded machine."""

import json
import os
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]

HEAVY = ("lancedb", "torch", "rasterio", "duckdb", "fastapi", "pandas", "numpy", "pyarrow", "lance")

PROBE = """
import json, sys
from rsembed_store.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    sys.stdout.flush()
    print("\\nMODULES " + json.dumps(sorted(m for m in {heavy} if m in sys.modules)), file=sys.stderr)
"""


def imported_by(*args) -> list:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], capture_output=True, text=True,
                         env=env, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    line = [x for x in res.stderr.splitlines() if x.startswith("MODULES ")][-1]
    return json.loads(line[len("MODULES "):])


def test_help_imports_nothing_heavy():
    assert imported_by("--help") == []  # not even numpy: the package imports its parts on first use
    assert imported_by("search", "--help") == []


def test_models_imports_no_model_library():
    assert [m for m in imported_by("models", "--json") if m not in ("numpy", "pyarrow")] == []


def test_stats_reads_a_local_store_without_lancedb(tmp_path):
    from toy import toy_embedding

    from rsembed_store import PointBuffer, Request, Store, TemporalSpec, resolve

    store = Store.open(tmp_path / "db")
    store.put_many([toy_embedding(resolve(Request("toy", PointBuffer(11 + i / 100, 46, 100), TemporalSpec.year(2021))),
                                  seed=i) for i in range(5)])
    assert imported_by("stats", "--json", "--db", str(tmp_path / "db")) == ["lance", "numpy", "pyarrow"]
