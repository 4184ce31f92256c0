"""A tiny declared model for core tests: the store and keys need a registered model,
and the built-in featurisers belong to the ingest wing."""

import numpy as np

from rsembed_store.model import Model, ModelInfo
from rsembed_store.registry import register_model
from rsembed_store.specs import SensorSpec


class ToyModel(Model):
    info = ModelInfo(
        id="toy",
        revision="toy-v1",
        kind="on_the_fly",
        dim=8,
        metric="cosine",
        default_sensor=SensorSpec("s2-l2a", ("B04", "B08")),
        input_size=32,
        description="test model: the mean of each band repeated",
    )


class ToyYearModel(Model):
    info = ModelInfo(
        id="toyyear",
        revision="2024.1",
        kind="precomputed",
        dim=4,
        temporal="year",
        providers=("product",),
        years=(2017, 2024),
    )


class ToyFramesModel(Model):
    """Reads its window as 4 frames, so plans and keys carry a frame plan."""

    info = ModelInfo(
        id="toyframes",
        revision="frames-v1",
        kind="on_the_fly",
        dim=4,
        default_sensor=SensorSpec("s2-l2a", ("B04", "B08")),
        input_size=32,
        frames=4,
    )


class ToyMultimodalModel(Model):
    """Takes Sentinel-1 beside its Sentinel-2 bands when a request asks for it."""

    info = ModelInfo(
        id="toymm",
        revision="mm-v1",
        kind="on_the_fly",
        dim=4,
        default_sensor=SensorSpec("s2-l2a", ("B04", "B08")),
        input_size=32,
        modalities={"s1": SensorSpec("s1-grd", ("VV", "VH"))},
    )


register_model("toy", ToyModel)
register_model("toymm", ToyMultimodalModel)
register_model("toyyear", ToyYearModel)
register_model("toyframes", ToyFramesModel)


def toy_embedding(request, seed=0, grid=False):
    from rsembed_store import Embedding

    rng = np.random.default_rng(seed)
    dim = 8 if request.model == "toy" else 4
    if grid:
        return Embedding.from_grid(request, rng.standard_normal((dim, 3, 4)).astype(np.float32), compute_s=0.01)
    return Embedding(request=request, vector=rng.standard_normal(dim).astype(np.float32), compute_s=0.01)
