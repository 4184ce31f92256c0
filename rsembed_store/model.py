"""What a model declares, and how a request for it is resolved.

Every model declares its identity and contract up front in a :class:`ModelInfo`
(id, revision, kind, embedding dimension, metric, outputs, default sensor, how it
reads a TemporalSpec, ...): nothing is discovered by running it. Resolution
turns what a caller asked into exactly what will be computed (defaults filled
in, the window interpreted as this model interprets it); the content key is
taken from the resolved request, so two ways of asking for the same computation
share one cache entry.

Model classes subclass :class:`Model` and live in ``rsembed_store.ingest.models``;
the registry (``rsembed_store.registry``) maps names to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Dict, Optional, Tuple

from .errors import SpecError
from .specs import H3Cell, InputPrepSpec, OutputSpec, SensorSpec, TemporalSpec

KINDS = ("on_the_fly", "precomputed")
METRICS = ("cosine", "l2", "dot")
# "composite": the window is used as given (a year means Jan 1 .. next Jan 1);
# "year": the model reads one annual layer, a range resolves to the year it starts in.
TEMPORAL_MODES = ("composite", "year")


@dataclass(frozen=True)
class ModelInfo:
    """The declared contract of one model (one embedding space per id + revision)."""

    id: str
    revision: str
    kind: str
    dim: int
    metric: str = "cosine"
    outputs: Tuple[str, ...] = ("pooled", "grid")
    temporal: str = "composite"
    default_sensor: Optional[SensorSpec] = None
    providers: Tuple[str, ...] = ("local",)
    input_size: Optional[int] = None
    grid_dtype: str = "float32"
    years: Optional[Tuple[int, int]] = None  # inclusive coverage of a "year" model
    description: str = ""
    citation: str = ""
    params: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"ModelInfo.kind={self.kind!r}; use one of {KINDS}")
        if self.metric not in METRICS:
            raise ValueError(f"ModelInfo.metric={self.metric!r}; use one of {METRICS}")
        if self.temporal not in TEMPORAL_MODES:
            raise ValueError(f"ModelInfo.temporal={self.temporal!r}; use one of {TEMPORAL_MODES}")

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "revision": self.revision,
            "kind": self.kind,
            "dim": self.dim,
            "metric": self.metric,
            "outputs": list(self.outputs),
            "temporal": self.temporal,
            "default_sensor": self.default_sensor.to_dict() if self.default_sensor else None,
            "providers": list(self.providers),
            "input_size": self.input_size,
            "grid_dtype": self.grid_dtype,
            "years": list(self.years) if self.years else None,
            "description": self.description,
            "citation": self.citation,
            "params": dict(self.params),
        }


class Model:
    """Base class of every model. Subclasses set ``info`` and implement ``embed``.

    Resolution is a classmethod so that keys can be computed without building
    the model (which may load weights). Subclasses refine it by overriding
    :meth:`check_sensor` or :meth:`resolve_input_prep`.
    """

    info: ClassVar[ModelInfo]

    # ------------------------------------------------------------ resolution

    @classmethod
    def resolve_temporal(cls, temporal: Optional[TemporalSpec]) -> TemporalSpec:
        info = cls.info
        if temporal is None:
            raise SpecError(
                f"model {info.id!r} needs a time window: pass TemporalSpec.year(Y) or "
                "TemporalSpec.range(START, END)"
            )
        if info.temporal == "composite":
            start, end = temporal.window()
            return TemporalSpec.range(start.isoformat(), end.isoformat())
        year = temporal.year if temporal.mode == "year" else temporal.window()[0].year
        if info.years and not info.years[0] <= year <= info.years[1]:
            raise SpecError(
                f"model {info.id!r} has no layer for year {year}; its coverage is "
                f"{info.years[0]}..{info.years[1]}"
            )
        return TemporalSpec.year(year)

    @classmethod
    def resolve_sensor(cls, sensor: Optional[SensorSpec]) -> Optional[SensorSpec]:
        info = cls.info
        if info.kind == "precomputed":
            if sensor is not None:
                raise SpecError(
                    f"model {info.id!r} reads a precomputed product and takes no sensor; got {sensor!r}"
                )
            return None
        sensor = sensor if sensor is not None else info.default_sensor
        if sensor is None:
            raise SpecError(f"model {info.id!r} needs a SensorSpec and declares no default")
        cls.check_sensor(sensor)
        # inspection switches change nothing that is computed: keep them out of the key
        return replace(sensor, check_input=False, check_raise=True, check_save_dir=None)

    @classmethod
    def check_sensor(cls, sensor: SensorSpec) -> None:
        """Refuse a sensor this model cannot read (override to check bands)."""

    @classmethod
    def resolve_output(cls, output: Optional[OutputSpec]) -> OutputSpec:
        info = cls.info
        output = output if output is not None else OutputSpec.pooled()
        if output.mode not in info.outputs:
            raise SpecError(
                f"model {info.id!r} does not produce output mode {output.mode!r}; it produces {list(info.outputs)}"
            )
        if output.mode == "pooled":  # grid fields do not affect a pooled answer
            return OutputSpec(mode="pooled", pooling=output.pooling)
        return OutputSpec(mode="grid", scale_m=output.scale_m, grid_orientation=output.grid_orientation)

    @classmethod
    def resolve_input_prep(cls, input_prep: Optional[InputPrepSpec]) -> Optional[InputPrepSpec]:
        if cls.info.kind == "precomputed":
            return None
        prep = input_prep if input_prep is not None else InputPrepSpec()
        if prep.mode == "resize":  # tiling fields do not affect a resized input
            return InputPrepSpec(mode="resize")
        size = prep.tile_size or cls.info.input_size
        if size is None:
            raise SpecError(f"model {cls.info.id!r} has no native input size: give InputPrepSpec.tile_size")
        return replace(prep, tile_size=size, tile_stride=prep.tile_stride or size)

    @classmethod
    def resolve_provider(cls, provider: Optional[str]) -> Optional[str]:
        info = cls.info
        if provider is None:
            return info.providers[0] if info.providers else None
        if provider not in info.providers:
            raise SpecError(f"model {info.id!r} cannot use provider {provider!r}; accepted: {list(info.providers)}")
        return provider

    @classmethod
    def check_spatial(cls, spatial) -> None:
        """Refuse a spatial spec this model cannot serve (override where needed)."""
        if not isinstance(spatial, (H3Cell,)) and not hasattr(spatial, "bounds"):
            raise SpecError(f"model {cls.info.id!r} cannot read spatial spec {spatial!r}")

    # ------------------------------------------------------------ compute

    def embed(self, pixels, request, meta=None) -> "Any":  # pragma: no cover - interface
        """Compute one answer from pixels (on-the-fly models; see ``ingest.models.base``)."""
        raise NotImplementedError

    def read(self, request) -> "Any":  # pragma: no cover - interface
        """Read one answer from a precomputed product (precomputed models)."""
        raise NotImplementedError
