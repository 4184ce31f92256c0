"""Packaging rules: the core imports no optional dependency; a missing extra names itself."""

import subprocess
import sys

import pytest

from rsembed_store.errors import MissingExtraError, require

OPTIONAL = ("fastapi", "uvicorn", "torch", "ee", "faiss", "matplotlib", "ray")


def test_core_import_pulls_in_no_optional_dependency():
    code = (
        "import sys, rsembed_store, rsembed_store.cli, rsembed_store.ingest.engine, rsembed_store.query.get\n"
        f"print(','.join(m for m in {OPTIONAL!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_missing_extra_names_the_pip_line():
    with pytest.raises(MissingExtraError) as info:
        require("surely_not_installed_pkg", "gee", "The Earth Engine provider")
    msg = str(info.value)
    assert "pip install 'rsembed-store[gee]'" in msg and "surely_not_installed_pkg" in msg
    assert isinstance(info.value, ImportError)


def test_extras_are_declared():
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    data = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    extras = data["project"]["optional-dependencies"]
    for name in ("gee", "serve", "torch", "test", "all"):
        assert name in extras
    core = " ".join(data["project"]["dependencies"])
    for dep in ("lancedb", "pyarrow", "duckdb", "numpy", "h3", "click", "rasterio", "tqdm"):
        assert dep in core
    assert "torch" not in core
