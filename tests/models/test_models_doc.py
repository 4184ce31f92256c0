"""docs/models.md carries the table that scripts/models_table.py generates from the
registry, so the documented input contracts cannot drift from the declarations."""

from __future__ import annotations

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
script = runpy.run_path(str(ROOT / "scripts" / "models_table.py"))


def test_the_doc_table_matches_the_registry():
    assert script["main"](["--check"]) == 0, "run: python scripts/models_table.py"


def test_every_deep_model_has_a_row_and_a_stale_table_is_detected():
    text = (ROOT / "docs" / "models.md").read_text()
    ids = [cls.info.id for cls in script["deep_models"]()]
    assert {"remoteclip", "ssl4eo-s2", "dofa"} <= set(ids)
    for cls in script["deep_models"]():
        assert f"| `{cls.info.id}` |" in text and cls.info.revision in text
    stale = text.replace("| 224 | 32 |", "| 256 | 32 |")
    assert stale != text and script["render"](stale) == text
