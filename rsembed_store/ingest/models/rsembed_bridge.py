"""rs-embed bridge: every on-the-fly model of the rs-embed library, by the name ``rsembed:<name>``.

When the ``rs_embed`` package is installed (extra ``rsembed``), ``rsembed:remoteclip``,
``rsembed:galileo``, ... and any embedder registered with rs-embed's own
``rs_embed.core.registry.register`` decorator are models of this store: they get its
cache, its keys and its search. This module builds, per rs-embed model, a
:class:`~rsembed_store.model.Model` subclass whose :class:`ModelInfo` is read from what
rs-embed declares (``describe_model`` and its default sensor); nothing is discovered by
running the model, except the dimension of a model that does not declare one (see
:func:`_probe_dim`).

The pixels path
===============
rs-embed fetches imagery only through its own Earth Engine provider; it has no reader
for local files. So the bridge fetches pixels with this store's providers (``local``
or ``gee``, named in the key's ``provider`` field as for every other model) and hands
them to rs-embed's bring-your-own-data entry point,
``rs_embed.get_embeddings_batch_from_data``, which matches bands, applies rs-embed's
input prep, normalisation and pooling, and runs the model. The stored answer is thus
exactly what rs-embed returns for those pixels, that ROI and that window. The pixels
are given in rs-embed's units (raw provider numbers: Sentinel-2 DN = reflectance /
1e-4, from the collection table of the ``gee`` provider), on our north-up grid of
``scale_m`` ground metres, without a CRS (rs-embed then takes the array as it is
rather than re-gridding it to Web Mercator); pixels without data get the sensor's
``fill_value``, as rs-embed's own fetch does.

Model settings
==============
rs-embed's ``**model_kwargs`` (``variant="large"``, a model key, ...) are part of the model id:
``rsembed:dofa[{"variant":"large"}]`` (canonical JSON, :func:`settings_suffix`), passed to
rs-embed on every call. Settings name their own space (a variant may change the dimension) and
enter every key through the model id; ``rsembed_store.compat`` builds the id from the keywords.

Keys and revision
=================
The sensor of a key is written in this store's vocabulary (``s2-l2a``, ``B04``); an
rs-embed ``SensorSpec`` (``COPERNICUS/S2_SR_HARMONIZED``, ``B4``) resolves to the same
one, so both spellings share a cache entry. The revision is
``rs-embed-<version>+<weights>+<describe hash>``: rs-embed's version, the weights the
model declares (its checkpoint / hub id, or ``no-weights`` for a model that says it
has none, or ``weights-undeclared``), and the first 10 hex digits of the SHA-256 of
its whole ``describe()`` so a change of declared defaults starts a new space.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import replace
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ...embedding import Embedding
from ...errors import ComputeError, MissingExtraError, ProviderError, SpecError, UnknownModelError, require
from ...keys import ResolvedRequest
from ...model import Model, ModelInfo
from ...specs import BBox, H3Cell, InputPrepSpec, OutputSpec, PointBuffer, SensorSpec
from .outcomes import attempt, settle

PREFIX = "rsembed:"
EXTRA = "rsembed"
# describe()["defaults"] keys that name a model's weights, most specific first
_WEIGHT_KEYS = ("weights", "ckpt", "checkpoint", "model_id", "hf_repo", "weights_url", "revision", "variant")
_DIM_KEYS = ("dim", "embedding_dim", "embed_dim")
_PROBE_PX = 32
_PRECOMPUTED = (" (rs-embed serves it as a precomputed product, which the bridge does not take: use this "
                "store's own gse, tessera or copernicus models)")


# ------------------------------------------------------------------ rs-embed access


def installed() -> bool:
    """Whether rs-embed can be imported (checked without importing it, or torch)."""
    return importlib.util.find_spec("rs_embed") is not None


def _rs():
    return require("rs_embed", EXTRA, "the rs-embed bridge (models named 'rsembed:<name>')")


def _rs_model_ids() -> List[str]:
    """rs-embed's on-the-fly models: its catalog plus embedders registered at run time."""
    _rs()
    from rs_embed.core.registry import get_embedder_cls, list_models
    from rs_embed.embedders.catalog import MODEL_SPECS

    catalog = {name for name, (module, _) in MODEL_SPECS.items() if not module.startswith("precomputed_")}
    runtime = {name for name in list_models() if not getattr(get_embedder_cls(name), "_is_precomputed", False)}
    return sorted(catalog | runtime)


def model_names() -> List[str]:
    """``rsembed:<name>`` for every rs-embed on-the-fly model; empty when rs-embed is not installed."""
    return [PREFIX + name for name in _rs_model_ids()] if installed() else []


def settings_suffix(model_config: Optional[Mapping[str, Any]]) -> str:
    """How model settings (rs-embed's ``**model_kwargs``, e.g. ``variant="large"``) are written in a
    bridged model's id: ``[<canonical JSON>]``, so they name the space and enter every key.

    >>> settings_suffix({"variant": "large"})
    '[{"variant":"large"}]'
    """
    if not model_config:
        return ""
    try:
        return "[" + json.dumps(dict(model_config), sort_keys=True, separators=(",", ":"), allow_nan=False) + "]"
    except (TypeError, ValueError) as exc:
        raise SpecError(f"model settings {dict(model_config)!r} must be JSON values (strings, numbers, "
                        f"booleans, lists): {exc}") from None


def split_name(name: str) -> Tuple[str, Optional[Dict[str, Any]]]:
    """``rsembed:<name>[<JSON settings>]`` as (``rsembed:<name>``, settings or None)."""
    base, sep, rest = name.partition("[")
    if not sep:
        return name, None
    try:
        config = json.loads("[" + rest) if rest.endswith("]") else None
    except ValueError:
        config = None
    if not (isinstance(config, list) and len(config) == 1 and isinstance(config[0], dict) and config[0]):
        raise _unknown(name, " (model settings are written rsembed:<name>[{\"key\": value}], a JSON object)")
    return base, config[0]


def _unknown(name: str, why: str = "") -> UnknownModelError:
    return UnknownModelError(
        f"unknown model {name!r}{why}; rs-embed models: {model_names()} (see `rsembed-store models`)"
    )


# ------------------------------------------------------------------ what a model declares


def _describe(short: str) -> dict:
    rs = _rs()
    from rs_embed.embedders.catalog import MODEL_SPECS

    if MODEL_SPECS.get(short, ("",))[0].startswith("precomputed_"):
        raise _unknown(PREFIX + short, _PRECOMPUTED)
    try:
        desc = rs.describe_model(short)
    except rs.core.errors.ModelError as exc:
        if short not in _rs_model_ids():
            raise _unknown(PREFIX + short) from None
        raise MissingExtraError(
            f"rs-embed cannot load model {short!r}: {exc}. Install the dependencies of that "
            "rs-embed model (see rs-embed's documentation)"
        ) from exc
    if "precomputed" in str(desc.get("type", "")).lower():
        raise _unknown(PREFIX + short, _PRECOMPUTED)
    return desc


def weights_identity(desc: Mapping[str, Any]) -> str:
    """The weights a model declares: ``describe()["weights"]`` (None: ``no-weights``), else the
    first checkpoint-like default (``ckpt``, ``model_id``, ``hf_repo``, ...), else ``weights-undeclared``."""
    if "weights" in desc:
        return str(desc["weights"]) if desc["weights"] not in (None, "", "none") else "no-weights"
    defaults = desc.get("defaults") or {}
    for key in _WEIGHT_KEYS:
        if defaults.get(key) not in (None, ""):
            return str(defaults[key])
    return "weights-undeclared"


def revision_of(version: str, desc: Mapping[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"rs-embed-{version}+{weights_identity(desc)}+{digest}"


def declared_dim(desc: Mapping[str, Any]) -> Optional[int]:
    """The embedding dimension if ``describe()`` states it (top level or in ``defaults``)."""
    for where in (desc, desc.get("defaults") or {}):
        for key in _DIM_KEYS:
            value = where.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def _collection_of(rs_collection: str):
    """Our declared collection (units, band names) for an rs-embed collection id or alias."""
    from rs_embed.tools.user_data import normalize_collection_id

    from ..providers.gee_collections import lookup

    for candidate in (rs_collection, normalize_collection_id(rs_collection)):
        try:
            return lookup(candidate)
        except ProviderError:
            continue
    raise SpecError(
        f"collection {rs_collection!r} is not one this store's providers declare; accepted: the "
        "collections of rsembed_store.ingest.providers.gee_collections (e.g. 's2-l2a' / "
        "'COPERNICUS/S2_SR_HARMONIZED')"
    )


def _our_band(collection, band: str) -> str:
    from ..providers.bands import canonical_band

    try:
        return canonical_band(collection.resolve_band(band).name)
    except ProviderError as exc:
        raise SpecError(str(exc)) from None


def _our_sensor(rs_sensor, short: str) -> Tuple[SensorSpec, Any]:
    """rs-embed's default SensorSpec in our vocabulary, and our collection declaration."""
    if rs_sensor is None:
        raise SpecError(f"rs-embed model {short!r} declares no input sensor, so the bridge cannot feed it")
    from rs_embed.tools.user_data import canonical_band_names

    collection = _collection_of(rs_sensor.collection)
    provider_bands = canonical_band_names(collection.id, tuple(rs_sensor.bands))  # rs-embed's aliases resolved
    sensor = SensorSpec(
        collection.name,
        tuple(_our_band(collection, b) for b in provider_bands),
        scale_m=rs_sensor.scale_m,
        cloudy_pct=rs_sensor.cloudy_pct,
        fill_value=rs_sensor.fill_value,
        composite=rs_sensor.composite,
    )
    return sensor, collection


def _declare(name: str):
    """``(ModelInfo, rs-embed id, rs-embed default SensorSpec, our collection)`` of
    ``rsembed:<name>``, read from what rs-embed declares; ``dim`` is 0 when undeclared."""
    if not name.startswith(PREFIX) or not name[len(PREFIX):].strip():
        raise _unknown(name)
    base, settings = split_name(name)
    rs = _rs()
    from rs_embed.embedders.catalog import canonical_model_id
    from rs_embed.tools.model_defaults import default_sensor_for_model

    short = canonical_model_id(base[len(PREFIX):])
    desc = _describe(short)
    rs_sensor = default_sensor_for_model(short)
    sensor, collection = _our_sensor(rs_sensor, short)
    image_size = (desc.get("defaults") or {}).get("image_size")
    frames = _declared_frames(short)
    info = ModelInfo(
        id=PREFIX + short + settings_suffix(settings),
        revision=revision_of(rs.__version__, desc),
        kind="on_the_fly",
        dim=declared_dim(desc) or 0,
        outputs=tuple(m for m in ("pooled", "grid") if m in (desc.get("output") or ("pooled", "grid"))),
        temporal="composite",
        default_sensor=sensor,
        providers=("local", "gee"),
        input_size=image_size if isinstance(image_size, int) else None,
        frames=frames,
        description=_notes(desc, short),
        params={
            "rs_embed_model": short,
            "rs_embed_version": rs.__version__,
            "weights": weights_identity(desc),
            "rs_embed_sensor": {"collection": rs_sensor.collection, "bands": list(rs_sensor.bands)},
            "pixels": "this store's provider -> rs_embed.get_embeddings_batch_from_data",
            **({"model_config": settings} if settings else {}),
        },
    )
    return info, short, rs_sensor, collection


def _declared_frames(short: str) -> Optional[int]:
    """T for an rs-embed model whose input contract is a time series (``input_spec.temporal_mode
    == "multi"``: galileo, agrifm, olmoearth, ...), None for one composite. The store then
    fetches T frames of the window (a ``frames`` entry in every key) and hands rs-embed a
    ``(T, C, H, W)`` array, as rs-embed's own fetch does."""
    from rs_embed.core.registry import get_embedder_cls

    spec = getattr(get_embedder_cls(short), "input_spec", None)
    if spec is None or getattr(spec, "temporal_mode", "single") != "multi":
        return None
    return int(spec.n_frames or 8)  # rs-embed's fetch_input default


def build(name: str) -> type:
    """The model class of ``rsembed:<name>`` (the registry caches it); an undeclared
    dimension is measured here (:func:`_probe_dim`)."""
    info, short, rs_sensor, collection = _declare(name)
    cls = type(f"RsEmbed_{short}", (RsEmbedModel,), {
        "info": info, "rs_name": short, "rs_bands": tuple(rs_sensor.bands), "collection": collection,
        "model_config": dict(info.params.get("model_config") or {}),
    })
    if info.dim == 0:
        cls.info = replace(info, dim=_probe_dim(cls))
    return cls


def describe(name: str) -> dict:
    """The listing entry of ``rsembed:<name>`` (``ModelInfo.to_dict()``) without running
    anything: an undeclared dimension is None (it is measured when the model is first
    used), and a model the bridge cannot feed is listed with the reason."""
    try:
        info = _declare(name)[0]
    except (SpecError, MissingExtraError) as exc:
        return {"id": name, "error": str(exc)}
    return {**info.to_dict(), "dim": info.dim or None}


def _notes(desc: Mapping[str, Any], short: str) -> str:
    notes = desc.get("notes")
    if isinstance(notes, (list, tuple)):
        notes = " ".join(str(n) for n in notes)
    return str(notes or f"rs-embed model {short!r}")


def _probe_dim(cls) -> int:
    """Run the model once on a blank ``_PROBE_PX`` (or native-size) square of the sensor's fill
    value and return the length of the pooled vector. This is the first call any request would
    make (rs-embed keeps the loaded model for the next one); a vector's length does not depend on
    the pixels, so one call fixes the dimension of the space."""
    rs = _rs()
    size = cls.info.input_size or _PROBE_PX
    sensor = cls.info.default_sensor
    data = rs.UserData(
        data=np.full((len(cls.rs_bands), size, size), sensor.fill_value, np.float32),
        collection=cls.collection.id,
        bands=cls.rs_bands,
        spatial=rs.PointBuffer(lon=0.0, lat=0.0, buffer_m=size * sensor.scale_m / 2),
        temporal=rs.TemporalSpec.range("2020-06-01", "2020-07-01"),
    )
    try:
        vector = np.asarray(rs.get_embedding_from_data(cls.rs_name, data, output=rs.OutputSpec.pooled(),
                                                       **cls.model_config).data)
    except Exception as exc:
        raise ComputeError(
            f"model {cls.info.id!r} declares no embedding dimension and a probe call to measure it "
            f"failed: {type(exc).__name__}: {exc}"
        ) from exc
    return int(vector.reshape(-1).shape[0])


# ------------------------------------------------------------------ the model


class RsEmbedModel(Model):
    """Base of the generated ``rsembed:<name>`` classes; see the module docstring."""

    rs_name: ClassVar[str]
    rs_bands: ClassVar[Tuple[str, ...]]  # rs-embed's band names, in the model's order
    collection: ClassVar[Any]  # our declaration of the collection: ids, band units
    model_config: ClassVar[Dict[str, Any]] = {}  # rs-embed's **model_kwargs, part of the model id

    def __init__(self, config: Optional[Mapping] = None):
        self.config = dict(config or {})
        self.device = str(self.config.get("device", "auto"))  # machine-specific: never in a key

    # ------------------------------------------------------------ resolution

    @classmethod
    def required_bands(cls) -> Tuple[str, ...]:
        return tuple(cls.info.default_sensor.bands)

    @classmethod
    def resolve_sensor(cls, sensor: Optional[SensorSpec]) -> Optional[SensorSpec]:
        """Our default sensor, or the given one (ours or rs-embed's spelling) in our vocabulary,
        keeping only the model's bands in its order (extra bands change nothing computed)."""
        if sensor is not None:
            collection = _collection_of(sensor.collection)
            if collection.id != cls.collection.id:
                raise SpecError(
                    f"model {cls.info.id!r} reads collection {cls.info.default_sensor.collection!r} "
                    f"({cls.collection.id}); SensorSpec.collection={sensor.collection!r} is another one"
                )
            sensor = replace(sensor, collection=collection.name,
                             bands=tuple(_our_band(collection, b) for b in sensor.bands))
        resolved = super().resolve_sensor(sensor)
        return replace(resolved, bands=cls.required_bands())

    @classmethod
    def check_sensor(cls, sensor: SensorSpec) -> None:
        missing = [b for b in cls.required_bands() if b not in sensor.bands]
        if missing:
            raise SpecError(
                f"model {cls.info.id!r} needs band(s) {missing} that SensorSpec.bands={list(sensor.bands)} "
                f"lacks; it reads {list(cls.required_bands())}"
            )

    @classmethod
    def resolve_output(cls, output: Optional[OutputSpec]) -> OutputSpec:
        """As :meth:`Model.resolve_output`; a grid's cell size is rs-embed's own (set by the
        sensor's scale and the model), so ``OutputSpec.scale_m`` is left at its default."""
        resolved = super().resolve_output(output)
        if resolved.mode == "grid":
            return OutputSpec(mode="grid", grid_orientation=resolved.grid_orientation)
        return resolved

    # ------------------------------------------------------------ compute

    def embed(self, pixels, request: ResolvedRequest, meta: Optional[dict] = None) -> Embedding:
        emb = self.embed_batch([(pixels, request)])[0]
        emb.meta.update(meta or {})
        return emb

    def embed_batch(self, items: Sequence, *, return_exceptions: bool = False) -> list:
        """One rs-embed call per (output, input prep) group; when a group call fails, its items
        are retried one by one so each failure is reported against its own request."""
        results: List[Any] = [None] * len(items)
        groups: Dict[tuple, List[int]] = {}
        for i, (pixels, request) in enumerate(items):
            results[i] = attempt(self.user_data, pixels, request, return_exceptions=True)
            if not isinstance(results[i], Exception):
                groups.setdefault((request.output, request.input_prep), []).append(i)
        for indices in groups.values():
            for i, out in zip(indices, self._run_group([results[i] for i in indices], [items[i][1] for i in indices])):
                results[i] = out
        return settle(results, return_exceptions=return_exceptions)

    def _run_group(self, datas: list, requests: List[ResolvedRequest]) -> list:
        try:
            answers = self.call(datas, requests[0])
        except Exception:  # noqa: BLE001 - find out which item failed
            if len(datas) == 1:
                raise
            return [self._one(d, r) for d, r in zip(datas, requests)]
        return [self.to_embedding(a, r) for a, r in zip(answers, requests)]

    def _one(self, data, request: ResolvedRequest):
        return attempt(lambda: self.to_embedding(self.call([data], request)[0], request), return_exceptions=True)

    def call(self, datas: list, request: ResolvedRequest) -> list:
        """rs-embed's own bring-your-own-data API, with rs-embed's spec objects."""
        rs = _rs()
        return rs.get_embeddings_batch_from_data(
            self.rs_name, datas, output=rs_output(request.output),
            input_prep=rs_input_prep(request.input_prep), device=self.device, **self.model_config,
        )

    def user_data(self, pixels, request: ResolvedRequest):
        """The ``rs_embed.UserData`` for one request: our pixels in rs-embed's units and band names."""
        rs = _rs()
        if (request.model, request.revision) != (self.info.id, self.info.revision):
            raise ComputeError(
                f"request {request.key[:12]} is for {request.model!r} revision {request.revision!r}; "
                f"this model is {self.info.id!r} revision {self.info.revision!r}"
            )
        return rs.UserData(
            data=to_raw_units(pixels, self.required_bands(), self.collection, request.sensor.fill_value,
                              request.key),
            collection=self.collection.id,
            bands=self.rs_bands,
            spatial=rs_spatial(request.spatial),
            temporal=rs.TemporalSpec.range(*(d.isoformat() for d in request.temporal.window())),
        )

    def to_embedding(self, answer, request: ResolvedRequest) -> Embedding:
        data = np.asarray(getattr(answer, "data", answer), dtype=np.float32)
        meta = {"rs_embed": _json_safe({k: v for k, v in (answer.meta or {}).items() if k != "user_input"})}
        if request.output.mode == "pooled":
            if data.ndim != 1 or not np.all(np.isfinite(data)):
                raise ComputeError(
                    f"request {request.key[:12]} ({self.info.id}): rs-embed returned a pooled answer of "
                    f"shape {data.shape} with {int(np.count_nonzero(~np.isfinite(data)))} non-finite values; "
                    "expected a finite (D,) vector"
                )
            return Embedding(request=request, vector=data, meta=meta)
        if data.ndim != 3:
            raise ComputeError(
                f"request {request.key[:12]} ({self.info.id}): rs-embed returned a grid of shape {data.shape}; "
                "expected (D, H, W)"
            )
        return Embedding.from_grid(request, data, meta=meta)


# ------------------------------------------------------------------ our specs -> rs-embed's


def rs_spatial(spatial):
    """rs-embed's spatial spec for ours; an H3 cell becomes its lon/lat bounding box."""
    rs = _rs()
    if isinstance(spatial, PointBuffer):
        return rs.PointBuffer(lon=spatial.lon, lat=spatial.lat, buffer_m=spatial.buffer_m)
    if isinstance(spatial, (BBox, H3Cell)):
        return rs.BBox(*spatial.bounds())
    raise SpecError(f"the rs-embed bridge cannot pass spatial spec {spatial!r}; accepted: PointBuffer, BBox, H3Cell")


def rs_output(output: OutputSpec):
    rs = _rs()
    if output.mode == "pooled":
        return rs.OutputSpec.pooled(output.pooling)
    return rs.OutputSpec.grid(grid_orientation=output.grid_orientation)


def rs_input_prep(prep: Optional[InputPrepSpec]):
    rs = _rs()
    if prep is None or prep.mode == "resize":
        return rs.InputPrepSpec.resize()
    return rs.InputPrepSpec(mode=prep.mode, tile_size=prep.tile_size, tile_stride=prep.tile_stride,
                            max_tiles=prep.max_tiles, max_tiles_hard=max(1024, prep.max_tiles),
                            pad_edges=prep.pad_edges)


def to_raw_units(pixels, bands: Sequence[str], collection, fill_value: float, key: str) -> np.ndarray:
    """``(C, H, W)`` float32 in the collection's stored units (``(value - offset) / scale``), in
    ``bands`` order; pixels without data in any band get ``fill_value``. The whole square is
    kept (an H3 cell's covering square is real imagery); at least one pixel of the ROI must have data."""
    arr = np.asarray(pixels.array)
    if arr.ndim not in (3, 4):
        raise ComputeError(f"request {key[:12]}: the rs-embed bridge takes (C, H, W) or (T, C, H, W), got {arr.shape}")
    missing = [b for b in bands if b not in pixels.bands]
    if missing:
        raise ComputeError(f"request {key[:12]}: the pixels lack band(s) {missing}; got {list(pixels.bands)}")
    band_axis = arr.ndim - 3  # a time series keeps its frames first
    x = np.take(arr, [pixels.bands.index(b) for b in bands], axis=band_axis).astype(np.float64)
    valid = np.asarray(pixels.valid, bool) & np.isfinite(x).all(axis=band_axis)
    if not (valid & np.asarray(pixels.roi_mask, bool)).any():
        raise ComputeError(f"request {key[:12]}: no pixel inside the ROI has data in every band {list(bands)}")
    for i, band in enumerate(bands):
        unit = collection.resolve_band(band)
        index = (slice(None), i) if band_axis else (i,)
        x[index] = (x[index] - unit.offset) / unit.scale
    return np.where(np.expand_dims(valid, band_axis), x, fill_value).astype(np.float32)


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _resolver():
    from ...registry import Resolver

    return Resolver(PREFIX, build=build, names=model_names, describe=describe)


RESOLVER = _resolver()  # what the registry serves ``rsembed:<name>`` ids with (registry._RESOLVERS)

__all__ = ["PREFIX", "RESOLVER", "RsEmbedModel", "build", "describe", "installed", "model_names", "weights_identity"]
