"""A small, seeded store for the viewer's tests: one toy space of H3 cells in two years.

About 400 res-8 cells around a point in the Alps, each in one of four classes
laid out as patches (so the PCA picture has areas of different colour and a
search has same-class places to find), stored for 2021 and 2022; in 2022 the
cells of one patch change class, so the change layer has somewhere to light up.
"""

from __future__ import annotations

from typing import Dict, Tuple

import h3
import numpy as np

import toy  # noqa: F401  registers the toy model
from rsembed_store.model import Model, ModelInfo
from rsembed_store.registry import register_model
from rsembed_store.specs import SensorSpec

CENTRE = (11.30, 46.50)  # lon, lat
RES = 8
RADIUS = 11  # grid_disk rings: 1 + 3*11*12 = 397 cells
YEARS = (2021, 2022)


def cells_and_classes(seed: int = 5) -> Tuple[list, Dict[str, int]]:
    """The cells (hex strings, sorted) and the class of each in 2021."""
    rng = np.random.default_rng(seed)
    cells = sorted(h3.grid_disk(h3.latlng_to_cell(CENTRE[1], CENTRE[0], RES), RADIUS))
    seeds = rng.choice(len(cells), 6, replace=False)  # patch centres; patches are their Voronoi regions
    centres = np.array([h3.cell_to_latlng(cells[i]) for i in seeds])
    klass = {}
    for c in cells:
        lat, lon = h3.cell_to_latlng(c)
        nearest = int(np.argmin(((centres - (lat, lon)) ** 2).sum(axis=1)))
        klass[c] = nearest % 4
    return cells, klass


def vectors(seed: int = 5) -> Dict[Tuple[str, int], np.ndarray]:
    """(cell, year) -> an 8-d vector: its class's centroid plus a little noise; patch 0's cells turn to
    class 3 in 2022."""
    cells, klass = cells_and_classes(seed)
    rng = np.random.default_rng(seed + 1)
    centres = rng.standard_normal((4, 8)) * 2.0  # = centroids(seed)
    out = {}
    for year in YEARS:
        for c in cells:
            k = klass[c]
            if year == 2022 and k == 0:
                k = 3
            out[(c, year)] = (centres[k] + 0.35 * rng.standard_normal(8)).astype(np.float32)
    return out


def centroids(seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed + 1).standard_normal((4, 8)) * 2.0


class ToyTextModel(Model):
    """The toy space with a text tower: the phrase "class K" is class K's centroid (anything else: zeros)."""

    info = ModelInfo(id="toytext", revision="text-v1", kind="on_the_fly", dim=8, text=True,
                     default_sensor=SensorSpec("s2-l2a", ("B04", "B08")), input_size=32,
                     description="test model: a text tower that names the viewer scene's classes")

    def __init__(self, config=None):
        self.config = config

    def embed_text(self, phrases):
        out = np.zeros((len(phrases), 8), np.float32)
        for i, phrase in enumerate(phrases):
            if phrase.startswith("class ") and phrase[6:].isdigit() and int(phrase[6:]) < 4:
                out[i] = centroids()[int(phrase[6:])]
        return out


register_model("toytext", ToyTextModel)


def fill(store, seed: int = 5, text: bool = False) -> str:
    """Write the rows into ``store`` (and, with ``text``, the 2021 rows again in the ``toytext`` space);
    returns the toy space's name."""
    from rsembed_store import Embedding, H3Cell, Request, TemporalSpec, resolve

    embs = [Embedding(request=resolve(Request("toy", H3Cell(c), TemporalSpec.year(y))), vector=v)
            for (c, y), v in vectors(seed).items()]
    if text:
        embs += [Embedding(request=resolve(Request("toytext", H3Cell(c), TemporalSpec.year(y))), vector=v)
                 for (c, y), v in vectors(seed).items() if y == 2021]
    store.put_many(embs)
    return store.space_for("toy").space
