"""What a model declares, and how a request for it is resolved.

Every model declares its identity and contract up front in a :class:`ModelInfo`
(id, revision, kind, embedding dimension, metric, outputs, default sensor, how it
reads a TemporalSpec, ...): nothing is discovered by running it. Resolution
turns what a caller asked into exactly what will be computed (defaults filled
in, the window interpreted as this model interprets it); the content key is
taken from the resolved request, so two ways of asking for the same computation
share one cache entry.

Time series and several sensors (see ``docs/timeseries.md``): a model that reads T
frames declares ``ModelInfo.frames = T``; resolution splits the half-open window
into T sub-windows (:class:`FramePlan`) and the plan enters the key. A model that
can take more sensors than its primary one declares them in
``ModelInfo.modalities`` (name -> default SensorSpec); a request names the extra
modalities it wants, and they are fetched on the primary sensor's grid.

Model classes subclass :class:`Model` and live in ``rsembed_store.ingest.models``;
the registry (``rsembed_store.registry``) maps names to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .errors import SpecError
from .specs import H3Cell, InputPrepSpec, OutputSpec, SensorSpec, TemporalSpec, coerce_spec

if TYPE_CHECKING:  # pragma: no cover
    from .limits import Footprint

KINDS = ("on_the_fly", "precomputed")
METRICS = ("cosine", "l2", "dot")
# "composite": the window is used as given (a year means Jan 1 .. next Jan 1);
# "year": the model reads one annual layer, a range resolves to the year it starts in.
TEMPORAL_MODES = ("composite", "year")
#: Rough wall seconds of one request by model kind, for models that declare no figure of
#: their own (``ModelInfo.seconds_per_request``): reading a product is cheap; fetching
#: imagery and running a network is not.
SECONDS_PER_REQUEST_BY_KIND: Dict[str, float] = {"precomputed": 0.02, "on_the_fly": 2.0}


@dataclass(frozen=True)
class FramePlan:
    """How a half-open window ``[start, end)`` is split into ``count`` frames.

    ``edges`` holds ``count + 1`` ISO dates; frame ``k`` is ``[edges[k], edges[k+1])``.
    :meth:`split` puts the edges at whole days: with ``N`` days in the window, edge
    ``k`` is ``start + floor(k * N / count)`` days, so the frames tile the window with
    no gap or overlap, every frame has ``floor(N / count)`` or ``ceil(N / count)``
    days, and the same window and count always give the same edges.
    """

    count: int
    edges: Tuple[str, ...]

    def __post_init__(self):
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise SpecError(f"FramePlan.count={self.count!r} must be an integer >= 1")
        edges = tuple(str(e) for e in self.edges)
        if len(edges) != self.count + 1:
            raise SpecError(f"FramePlan.edges has {len(edges)} dates; {self.count} frames need {self.count + 1}")
        try:
            days = [date.fromisoformat(e) for e in edges]
        except ValueError:
            raise SpecError(f"FramePlan.edges={list(edges)!r} must be ISO dates 'YYYY-MM-DD'") from None
        if any(a >= b for a, b in zip(days, days[1:])):
            raise SpecError(f"FramePlan.edges={list(edges)!r} must be strictly increasing")
        object.__setattr__(self, "edges", edges)

    @classmethod
    def split(cls, temporal: TemporalSpec, count: int) -> "FramePlan":
        """``count`` frames of whole days over ``temporal.window()`` (see the class docstring)."""
        start, end = temporal.window()
        days = (end - start).days
        if days < count:
            raise SpecError(
                f"the window [{start.isoformat()}, {end.isoformat()}) has {days} day(s), fewer than the "
                f"{count} frames the model reads; give a window of at least {count} days"
            )
        edges = tuple((start + timedelta(days=(k * days) // count)).isoformat() for k in range(count + 1))
        return cls(count=count, edges=edges)

    def windows(self) -> List[Tuple[date, date]]:
        """The frames as half-open ``(start, end)`` date pairs, in time order."""
        days = [date.fromisoformat(e) for e in self.edges]
        return list(zip(days[:-1], days[1:]))

    def to_dict(self) -> dict:
        return {"count": self.count, "edges": list(self.edges)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FramePlan":
        if not isinstance(data, Mapping) or set(data) != {"count", "edges"}:
            raise SpecError(f"frames must be an object with 'count' and 'edges', got {data!r}")
        return cls(count=data["count"], edges=tuple(data["edges"]))


#: A request's extra modalities: names (each gets the model's declared default sensor),
#: or a mapping name -> SensorSpec (its dict form, or None for the default).
ModalitiesArg = Union[Sequence[str], Mapping[str, Any], None]


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
    frames: Optional[int] = None  # T equal sub-windows of the window; None: one composite
    modalities: Mapping[str, SensorSpec] = field(default_factory=dict)  # extra sensors it can take
    text: bool = False  # a text tower: ``embed_text(phrases) -> (n, dim)`` in the same space (text search)
    description: str = ""
    citation: str = ""
    params: Dict[str, Any] = field(default_factory=dict)
    # rough wall seconds to compute one request (plan estimates only); None: the kind's default
    seconds_per_request: Optional[float] = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"ModelInfo.kind={self.kind!r}; use one of {KINDS}")
        if self.metric not in METRICS:
            raise ValueError(f"ModelInfo.metric={self.metric!r}; use one of {METRICS}")
        if self.temporal not in TEMPORAL_MODES:
            raise ValueError(f"ModelInfo.temporal={self.temporal!r}; use one of {TEMPORAL_MODES}")
        if self.frames is not None:
            if isinstance(self.frames, bool) or not isinstance(self.frames, int) or self.frames < 1:
                raise ValueError(f"ModelInfo.frames={self.frames!r}; use an integer >= 1 or None (one composite)")
            if self.temporal != "composite" or self.kind != "on_the_fly":
                raise ValueError("ModelInfo.frames needs an on_the_fly model with temporal='composite'")
        cost = self.seconds_per_request
        if cost is not None and (isinstance(cost, bool) or not isinstance(cost, (int, float)) or not cost >= 0):
            raise ValueError(f"ModelInfo.seconds_per_request={cost!r}; use a number of seconds >= 0 or None")

    def cost_per_request(self) -> float:
        """Rough wall seconds to compute one request: the declared figure, else the kind's default.

        Used for plan estimates (``Plan.summary``); it ignores parallelism, caches and network speed.
        """
        if self.seconds_per_request is not None:
            return float(self.seconds_per_request)
        return SECONDS_PER_REQUEST_BY_KIND[self.kind]

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
            "frames": self.frames,
            "modalities": {name: sensor.to_dict() for name, sensor in self.modalities.items()},
            "seconds_per_request": self.cost_per_request(),
            "text": self.text,
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
    def resolve_frames(cls, temporal: Optional[TemporalSpec]) -> Optional[FramePlan]:
        """The frame plan of a resolved window: None for a one-composite model."""
        if cls.info.frames is None or temporal is None:
            return None
        return FramePlan.split(temporal, cls.info.frames)

    @classmethod
    def resolve_modalities(
        cls, modalities: ModalitiesArg, sensor: Optional[SensorSpec]
    ) -> Optional[Tuple[Tuple[str, SensorSpec], ...]]:
        """The extra modalities a request asks for, as sorted ``(name, sensor)`` pairs, or None.

        Each name must be one the model declares; a missing sensor gets the declared
        default. Every modality is fetched on the primary sensor's grid, so its
        ``scale_m`` is set to the primary one's (the key says what is computed).
        """
        if not modalities:
            return None
        info = cls.info
        if isinstance(modalities, str):
            modalities = (modalities,)
        items = modalities.items() if isinstance(modalities, Mapping) else ((m, None) for m in modalities)
        out: Dict[str, SensorSpec] = {}
        for name, spec in items:
            if name not in info.modalities:
                raise SpecError(
                    f"model {info.id!r} takes no modality {name!r}; accepted: {sorted(info.modalities)}"
                )
            if name in out:
                raise SpecError(f"modality {name!r} is named twice")
            spec = coerce_spec(spec, SensorSpec) or info.modalities[name]
            cls.check_modality(name, spec)
            if sensor is not None:
                spec = replace(spec, scale_m=sensor.scale_m)
            out[name] = replace(spec, check_input=False, check_raise=True, check_save_dir=None)
        return tuple(sorted(out.items()))

    @classmethod
    def check_modality(cls, name: str, sensor: SensorSpec) -> None:
        """Refuse an extra-modality sensor this model cannot read (override to check bands)."""

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

    # ------------------------------------------------------------ size

    @classmethod
    def footprint(cls, request) -> Optional["Footprint"]:
        """How large computing ``request`` is, estimated from the ROI and the declared scale
        without building anything; the size limits (``rsembed_store.limits``) are checked on it.

        On-the-fly models: the imagery fetched, ``C x T`` float32 values per pixel (the
        sensor's bands and those of each extra modality, times the frames) at the
        sensor's ``scale_m``. Precomputed models: ``dim`` float32 values per pixel at the
        grid's ``scale_m``, or for a pooled answer at ``params["native_m"]``. None when
        the model declares no scale (nothing is checked); products with another reading
        rule override this.
        """
        from .limits import Footprint, roi_pixels

        info = cls.info
        if info.kind == "on_the_fly":
            sensor = request.sensor
            if sensor is None:
                return None
            channels = len(sensor.bands) + sum(len(s.bands) for _, s in request.modalities or ())
            frames = request.frames.count if request.frames is not None else 1
            return Footprint(roi_pixels(request.spatial, sensor.scale_m), channels * frames, 4,
                             float(sensor.scale_m), f"{sensor.collection!r} imagery")
        scale = request.output.scale_m if request.output.mode == "grid" else info.params.get("native_m")
        if not scale:
            return None
        return Footprint(roi_pixels(request.spatial, scale), int(info.dim), 4, float(scale),
                         f"{info.id} embeddings")

    # ------------------------------------------------------------ compute

    def embed(self, pixels, request, meta=None) -> "Any":  # pragma: no cover - interface
        """Compute one answer from pixels (on-the-fly models; see ``ingest.models.base``)."""
        raise NotImplementedError

    def read(self, request) -> "Any":  # pragma: no cover - interface
        """Read one answer from a precomputed product (precomputed models)."""
        raise NotImplementedError
