"""Same name, same computation: a native model that rs-embed also has gives rs-embed's vector for
the same pixels and weights (scripts/compare_rsembed.py, whose table is in docs/models.md).

Runs in the models environment (torch and rs-embed 0.3.1); elsewhere it skips, saying why.
Each case builds a seeded random checkpoint in the published format; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch", reason="torch lives in the models venv")
pytest.importorskip("rs_embed", reason="rs-embed is not importable here (it lives in the models venv)")

from scripts import compare_rsembed as cmp  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
#: the models docs/models.md marks "same": each must stay within the tolerance
SAME = ("anysat", "copernicus", "terramind")
#: the models whose vectors differ only by the input prep: given rs-embed's prepared input, the
#: store's network must give rs-embed's vector
DIFFER_BY_PREP = ("dofa", "prithvi", "remoteclip")


@pytest.mark.parametrize("model", SAME)
def test_the_native_model_gives_rs_embeds_vector(model, tmp_path):
    row = cmp.CASES[model](tmp_path)
    assert row.verdict == "same", row
    assert row.max_abs_diff <= cmp.TOLERANCE and row.cosine > 0.9999


@pytest.mark.parametrize("model", DIFFER_BY_PREP)
def test_where_the_vectors_differ_the_networks_still_agree(model, tmp_path):
    if model == "remoteclip":
        pytest.importorskip("rshf.remoteclip", reason="rs-embed loads RemoteCLIP through rshf (pip install rshf "
                                                      "transformers), not installed here")
    row = cmp.CASES[model](tmp_path)
    assert row.verdict == "differs" and row.reason, row
    assert row.networks_diff is not None and row.networks_diff <= cmp.TOLERANCE, row


def test_the_table_in_the_docs_says_what_the_cases_say():
    text = (ROOT / "docs" / "models.md").read_text()
    block = text.split(cmp.BEGIN, 1)[1].split(cmp.END, 1)[0]
    for model in SAME:
        assert f"| `{model}` | same |" in block
    for model in DIFFER_BY_PREP:
        assert f"| `{model}` | differs |" in block and "the networks agree" in block.split(f"`{model}`")[1]
    for model in cmp.NOT_COMPARED:
        assert f"| `{model}` | not compared |" in block
    assert set(cmp.CASES) | set(cmp.NOT_COMPARED) == {
        "anysat", "dofa", "remoteclip", "prithvi", "terramind", "gse", "tessera", "copernicus"}
