"""Huge pages for a tier's graph: asked for safely, and the graph answers the same afterwards."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from rsembed_store.query.serving import hugepages

faiss = pytest.importorskip("faiss")


def test_the_graph_answers_the_same_after_its_pages_are_collapsed():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30_000, 32)).astype(np.float32)  # ~4 MB of vectors: two whole huge pages at least
    index = faiss.IndexHNSWFlat(32, 16)
    index.add(X)
    before = index.search(X[:50], 5)
    hugepages.advise_graph(index, background=False)
    after = index.search(X[:50], 5)
    assert np.array_equal(before[1], after[1])


def test_advice_on_memory_smaller_than_a_huge_page_is_declined_without_a_call():
    buf = np.zeros(1000, dtype=np.uint8)
    assert hugepages.advise(int(buf.ctypes.data), buf.nbytes) is False


def test_turned_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("RSEMBED_STORE_HUGEPAGES", "0")
    assert hugepages.enabled() is False
    monkeypatch.setenv("RSEMBED_STORE_HUGEPAGES", "1")
    assert hugepages.enabled() is sys.platform.startswith("linux")


def _thp_can_collapse() -> bool:
    import os
    import platform

    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled", encoding="ascii") as f:
            mode = f.read()
        major, minor = (int(x) for x in platform.release().split(".")[:2])
    except (OSError, ValueError):
        return False
    return "[never]" not in mode and (major, minor) >= (6, 1) and os.environ.get("RSEMBED_STORE_HUGEPAGES") != "0"


@pytest.mark.skipif(not _thp_can_collapse(), reason="needs Linux >= 6.1 with transparent huge pages not 'never'")
def test_resident_memory_is_collapsed_into_huge_pages_where_the_kernel_offers_them():
    buf = np.ones(8 << 20, dtype=np.uint8)  # touched: resident
    assert hugepages.advise(int(buf.ctypes.data), buf.nbytes) is True
