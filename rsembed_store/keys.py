"""Content keys: what is computed -> a stable SHA-256 name.

A :class:`Request` is what a caller asks. :func:`resolve` turns it into a
:class:`ResolvedRequest` (the model's own resolver fills defaults and interprets
the window), whose canonical JSON is hashed:

1. the resolved request as a dict, with the schema tag :data:`SCHEMA`;
2. floats rounded (degrees to 1e-7, metres to 1e-3, everything else to 1e-6),
   ``-0.0`` folded into ``0.0``, NaN and infinities refused;
3. serialised with sorted keys and no spaces (``json.dumps(..., sort_keys=True,
   separators=(",", ":"))``);
4. SHA-256 of the UTF-8 bytes, as 64 hex digits.

The key includes the model's id AND revision and the provider, and nothing
machine-specific (paths, devices, worker counts, credentials). Changing this
recipe means bumping :data:`SCHEMA`; golden tests pin a dozen keys.

Two entries are written only when set, so every key from before they existed is
unchanged: ``frames`` (the :class:`~rsembed_store.model.FramePlan` of a model that
reads T frames) and ``modalities`` (extra sensors, name -> SensorSpec).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from .errors import SpecError
from .model import FramePlan, ModalitiesArg
from .specs import (
    InputPrepSpec,
    OutputSpec,
    SensorSpec,
    SpatialSpec,
    TemporalSpec,
    coerce_spec,
)

SCHEMA = "rsembed-key/1"

# decimals kept per field name; any other float keeps 6
_DEGREE_FIELDS = {"lon", "lat", "minlon", "minlat", "maxlon", "maxlat"}
_METRE_FIELDS = {"buffer_m", "scale_m"}


def _round(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise SpecError(f"{name}={value!r} is not a finite number and cannot be part of a key")
    digits = 7 if name in _DEGREE_FIELDS else 3 if name in _METRE_FIELDS else 6
    out = round(value, digits)
    return 0.0 if out == 0 else out


def canonicalize(value: Any, name: str = "") -> Any:
    """Return ``value`` as JSON-ready data with every float rounded by its field name."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return _round(name, value)
    if isinstance(value, Mapping):
        return {str(k): canonicalize(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonicalize(v, name) for v in value]
    if hasattr(value, "to_dict"):
        return canonicalize(value.to_dict(), name)
    try:  # numpy scalars
        import numpy as np

        if isinstance(value, np.generic):
            return canonicalize(value.item(), name)
    except ImportError:  # pragma: no cover
        pass
    raise SpecError(f"{name or 'value'}={value!r} of type {type(value).__name__} cannot be part of a key")


def canonical_json(data: Mapping[str, Any]) -> str:
    return json.dumps(canonicalize(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def hash_json(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_HEX_DIGITS = frozenset("0123456789abcdef")


def check_key(key: Any, name: str = "key") -> str:
    """``key`` if it is a content key (64 lower-case hex digits), else :class:`SpecError`.

    >>> check_key("ab" * 32) == "ab" * 32
    True
    """
    if not isinstance(key, str) or len(key) != 64 or not _HEX_DIGITS.issuperset(key):
        raise SpecError(f"{name}={key!r} is not a content key; a key is 64 lower-case hex digits "
                        "(the SHA-256 of a canonical request, e.g. resolve(request).key)")
    return key


_HEX_BYTES = b"0123456789abcdef"


def check_keys(keys: Iterable[Any], name: str = "key") -> List[str]:
    """``keys`` as a list if every one is a content key, else :func:`check_key`'s error for the first
    that is not. A batch is checked in a few C-level passes over the keys joined (about 0.1 us a key,
    against 1 us for a loop of :func:`check_key`).

    >>> check_keys(["ab" * 32, "cd" * 32]) == ["ab" * 32, "cd" * 32]
    True
    """
    keys = list(keys)
    try:
        joined = "".join(keys)
    except TypeError:  # something that is not a string: the loop below names it
        joined = None
    # n keys of 64 characters in all, none longer than 64: each is exactly 64
    if (joined is not None and len(joined) == 64 * len(keys) and joined.isascii()
            and max(map(len, keys), default=64) == 64 and not joined.encode("ascii").translate(None, _HEX_BYTES)):
        return keys
    return [check_key(k, name) for k in keys]


@dataclass(frozen=True)
class Request:
    """One question: this model, this place, this window, these pixels, this output."""

    model: str
    spatial: SpatialSpec
    temporal: Optional[TemporalSpec] = None
    sensor: Optional[SensorSpec] = None
    output: OutputSpec = field(default_factory=OutputSpec.pooled)
    input_prep: Optional[InputPrepSpec] = None
    provider: Optional[str] = None
    modalities: ModalitiesArg = None  # extra sensors by name, e.g. ("s1",) or {"s1": SensorSpec(...)}

    def __post_init__(self):
        if not isinstance(self.model, str) or not self.model:
            raise SpecError(f"model={self.model!r} must be a model id such as 'spectral'")
        object.__setattr__(self, "spatial", coerce_spec(self.spatial, SpatialSpec))
        if self.spatial is None:
            raise SpecError("spatial is required: a PointBuffer, BBox or H3Cell")
        object.__setattr__(self, "temporal", coerce_spec(self.temporal, TemporalSpec))
        object.__setattr__(self, "sensor", coerce_spec(self.sensor, SensorSpec))
        object.__setattr__(self, "output", coerce_spec(self.output, OutputSpec) or OutputSpec.pooled())
        object.__setattr__(self, "input_prep", coerce_spec(self.input_prep, InputPrepSpec))
        if self.provider is not None and not isinstance(self.provider, str):
            raise SpecError(f"provider={self.provider!r} must be a provider name such as 'local'")
        object.__setattr__(self, "modalities", _coerce_modalities(self.modalities))

    def to_dict(self) -> dict:
        out = {
            "model": self.model,
            "spatial": self.spatial.to_dict(),
            "temporal": self.temporal.to_dict() if self.temporal else None,
            "sensor": self.sensor.to_dict() if self.sensor else None,
            "output": self.output.to_dict(),
            "input_prep": self.input_prep.to_dict() if self.input_prep else None,
            "provider": self.provider,
        }
        if self.modalities:
            out["modalities"] = {k: v.to_dict() if v is not None else None for k, v in self.modalities}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Request":
        if not isinstance(data, Mapping):
            raise SpecError(f"a request must be an object, got {data!r}")
        accepted = {"model", "spatial", "temporal", "sensor", "output", "input_prep", "provider", "modalities"}
        unknown = sorted(set(data) - accepted)
        if unknown:
            raise SpecError(f"request has unknown field(s) {unknown}; accepted: {sorted(accepted)}")
        if "model" not in data or "spatial" not in data:
            raise SpecError("request needs at least 'model' and 'spatial'")
        return cls(**{k: v for k, v in data.items() if v is not None or k in ("model", "spatial")})


def _coerce_modalities(value: ModalitiesArg) -> Optional[Tuple[Tuple[str, Optional[SensorSpec]], ...]]:
    """A request's modalities as sorted ``(name, SensorSpec or None)`` pairs (None: the model's
    default), or None; a tuple keeps the frozen Request hashable."""
    if value is None:
        return None
    if isinstance(value, str):
        value = (value,)
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, (list, tuple)):  # names, or the (name, sensor) pairs of a coerced request
        pairs = [item if isinstance(item, tuple) and len(item) == 2 else (item, None) for item in value]
    else:
        raise SpecError(
            f"modalities={value!r} must be a list of modality names such as ['s1'] or a mapping "
            "name -> SensorSpec"
        )
    out: Dict[str, Optional[SensorSpec]] = {}
    for name, spec in pairs:
        if not isinstance(name, str) or not name:
            raise SpecError(f"modality name {name!r} must be a non-empty string such as 's1'")
        if name in out:
            raise SpecError(f"modality {name!r} is named twice in modalities={value!r}")
        out[name] = coerce_spec(spec, SensorSpec)
    return tuple(sorted(out.items())) or None


@dataclass(frozen=True)
class ResolvedRequest:
    """A request with every default filled in, as the model will compute it, and its key.

    ``frames`` and ``modalities`` come after ``key`` so that positional construction
    (the planner's fast path) keeps its meaning; they enter the key only when set.
    """

    model: str
    revision: str
    provider: Optional[str]
    spatial: SpatialSpec
    temporal: Optional[TemporalSpec]
    sensor: Optional[SensorSpec]
    output: OutputSpec
    input_prep: Optional[InputPrepSpec]
    canonical: str = field(default="", compare=False)
    key: str = field(default="", compare=False)
    frames: Optional[FramePlan] = None
    modalities: Optional[Tuple[Tuple[str, SensorSpec], ...]] = None

    def __post_init__(self):
        if not self.canonical:
            text = canonical_json(self.key_dict())
            object.__setattr__(self, "canonical", text)
            object.__setattr__(self, "key", hash_json(text))

    def key_dict(self) -> dict:
        """The dict that is hashed: everything that determines the answer, nothing else."""
        out = {
            "schema": SCHEMA,
            "model": {"id": self.model, "revision": self.revision},
            "provider": self.provider,
            "spatial": self.spatial.to_dict(),
            "temporal": self.temporal.to_dict() if self.temporal else None,
            "sensor": self.sensor.to_dict() if self.sensor else None,
            "output": self.output.to_dict(),
            "input_prep": self.input_prep.to_dict() if self.input_prep else None,
        }
        if self.frames is not None:
            out["frames"] = self.frames.to_dict()
        if self.modalities:
            out["modalities"] = {name: sensor.to_dict() for name, sensor in self.modalities}
        return out

    @property
    def space(self) -> str:
        from .space import space_name

        return space_name(self.model, self.revision)

    def to_request(self) -> Request:
        return Request(
            model=self.model,
            spatial=self.spatial,
            temporal=self.temporal,
            sensor=self.sensor,
            output=self.output,
            input_prep=self.input_prep,
            provider=self.provider,
            modalities=dict(self.modalities) if self.modalities else None,
        )

    @classmethod
    def from_canonical(cls, text: str) -> "ResolvedRequest":
        """Rebuild a resolved request from the canonical JSON stored beside its key."""
        from .specs import spatial_from_dict

        d = json.loads(text)
        if d.get("schema") != SCHEMA:
            raise SpecError(f"key schema {d.get('schema')!r} is not {SCHEMA!r}")
        return cls(
            model=d["model"]["id"],
            revision=d["model"]["revision"],
            provider=d["provider"],
            spatial=spatial_from_dict(d["spatial"]),
            temporal=TemporalSpec.from_dict(d["temporal"]) if d["temporal"] else None,
            sensor=SensorSpec.from_dict(d["sensor"]) if d["sensor"] else None,
            output=OutputSpec.from_dict(d["output"]),
            input_prep=InputPrepSpec.from_dict(d["input_prep"]) if d["input_prep"] else None,
            frames=FramePlan.from_dict(d["frames"]) if d.get("frames") else None,
            modalities=tuple(sorted((k, SensorSpec.from_dict(v)) for k, v in d["modalities"].items()))
            if d.get("modalities") else None,
            canonical=text,
            key=hash_json(text),
        )


_LAZY_FIELDS = ("provider", "spatial", "temporal", "sensor", "output", "input_prep", "frames", "modalities")


def _has_series_fields(canonical: str) -> bool:
    """Whether a canonical JSON has a ``frames`` or ``modalities`` entry (keys are quoted names;
    a value cannot contain an unescaped quote, so the substrings cannot occur elsewhere)."""
    return '"frames":' in canonical or '"modalities":' in canonical


class StoredRequest(ResolvedRequest):
    """A resolved request read back from the store, parsed only when needed.

    Reading thousands of rows should not pay for re-validating every spec: the
    key, the canonical JSON, the model and the revision are at hand; the specs
    are rebuilt from the canonical JSON on first access to any of them. It
    compares and hashes like the ResolvedRequest it stands for.
    """

    def __init__(self, canonical: str, key: str, model: str, revision: str):  # noqa: D107
        object.__setattr__(self, "canonical", canonical)
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "revision", revision)
        # frames and modalities have class-level defaults (None), which would hide them from
        # __getattr__: set them here, parsing only the rare rows that carry them
        full = ResolvedRequest.from_canonical(canonical) if _has_series_fields(canonical) else None
        object.__setattr__(self, "frames", full.frames if full else None)
        object.__setattr__(self, "modalities", full.modalities if full else None)

    def __getattr__(self, name):
        if name not in _LAZY_FIELDS:
            raise AttributeError(name)
        full = ResolvedRequest.from_canonical(self.canonical)
        for f in _LAZY_FIELDS:
            object.__setattr__(self, f, getattr(full, f))
        return getattr(self, name)

    def _fields(self) -> tuple:
        return (self.model, self.revision) + tuple(getattr(self, f) for f in _LAZY_FIELDS)

    def __eq__(self, other):
        if not isinstance(other, ResolvedRequest):
            return NotImplemented
        return self.canonical == other.canonical if other.canonical else self._fields() == (
            other.model, other.revision, *(getattr(other, f) for f in _LAZY_FIELDS))

    def __hash__(self):
        return hash(self._fields())

    def __repr__(self) -> str:
        return f"StoredRequest(model={self.model!r}, revision={self.revision!r}, key={self.key[:12]!r}…)"


def resolve(request: Request | Mapping[str, Any]) -> ResolvedRequest:
    """Resolve a request with its model's own resolver and key it."""
    from .registry import model_class

    if isinstance(request, Mapping):
        request = Request.from_dict(request)
    cls = model_class(request.model)
    info = cls.info
    cls.check_spatial(request.spatial)
    temporal = cls.resolve_temporal(request.temporal)
    sensor = cls.resolve_sensor(request.sensor)
    return ResolvedRequest(
        model=info.id,
        revision=info.revision,
        provider=cls.resolve_provider(request.provider),
        spatial=request.spatial,
        temporal=temporal,
        sensor=sensor,
        output=cls.resolve_output(request.output),
        input_prep=cls.resolve_input_prep(request.input_prep),
        frames=cls.resolve_frames(temporal),
        modalities=cls.resolve_modalities(dict(request.modalities or ()), sensor),
    )


def key_of(request: Request | Mapping[str, Any]) -> str:
    """The content key of a request (resolving it first)."""
    return resolve(request).key


__all__ = [
    "SCHEMA",
    "Request",
    "ResolvedRequest",
    "canonical_json",
    "canonicalize",
    "hash_json",
    "key_of",
    "resolve",
]
