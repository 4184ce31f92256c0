"""From rs-embed's arguments to this store's requests: model names, specs, the store, the provider.

Everything rs-embed's ``get_embedding`` takes is turned into one
:class:`~rsembed_store.keys.Request` per spatial, the way rs-embed 0.3.1's code
reads it (not its docs, where they differ):

- ``model``: rs-embed's ids and aliases (``gse_annual`` -> ``gse``, ...). A model this
  store has natively is used natively; any other (``galileo``, ...) goes through the
  ``rsembed:<name>`` bridge. ``BRIDGED`` names a native model that would compute
  something else than rs-embed's of the same name (none today: the native ``anysat``
  follows rs-embed's input contract, scripts/compare_rsembed.py).
- ``temporal=None``: on-the-fly models use rs-embed's default window
  2022-06-01..2022-09-01 and ``tessera`` the year 2021, each with rs-embed's
  UserWarning; ``gse`` and ``copernicus`` require a year, as in rs-embed.
- ``sensor`` (ours, rs-embed's, or an Earth Engine collection id with its band
  names, e.g. ``COPERNICUS/S2_SR_HARMONIZED``/``B4``) or ``fetch`` (overrides of the
  model's default sensor), not both.
- ``input_prep=None`` is rs-embed's package default, ``tile`` (with rs-embed's
  ``max_tiles=64``); strings ``"resize"``, ``"tile"``, ``"auto"`` are accepted.
- ``backend``: ``"auto"`` lets :mod:`.auto` choose the provider per request; any
  other value names a provider (``"gee"``, ``"local"``).
- ``device`` never changes an answer and is not part of a key; it is accepted and unused.
"""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from ..errors import SpecError
from ..specs import InputPrepSpec, OutputSpec, SensorSpec, TemporalSpec, coerce_spec
from .types import FetchSpec

# rs-embed 0.3.1's aliases (rs_embed.embedders.catalog.MODEL_ALIASES)
ALIASES = {
    "gse_annual": "gse",
    "remoteclip_s2rgb": "remoteclip",
    "copernicus_embed": "copernicus",
    "satmae_rgb": "satmae",
    "satmaepp_rgb": "satmaepp",
    "scalemae_rgb": "scalemae",
    "prithvi_eo_v2_s2_6b": "prithvi",
    "terrafm_b": "terrafm",
    "thor_1_0_base": "thor",
    "satvision_toa": "satvision",
}
# rs-embed names whose native model here computes something else: served by the bridge.
# Empty since anysat follows rs-embed's contract (docs/models.md, "Same name, same computation").
BRIDGED: frozenset = frozenset()
# rs-embed's default windows when temporal=None (rs_embed.embedders.meta / precomputed_tessera)
DEFAULT_WINDOW = ("2022-06-01", "2022-09-01")
TESSERA_DEFAULT_YEAR = 2021
# rs-embed's InputPrepSpec.max_tiles default (ours is 9): what its "tile"/"auto" strings and None mean
RS_MAX_TILES = 64

ENV_DB = "RSEMBED_STORE_DB"
ENV_STRICT = "RSEMBED_STORE_STRICT_PROVIDER"


# ------------------------------------------------------------------ the store


def default_store_uri() -> str:
    """``$RSEMBED_STORE_DB``, else a per-user cache directory (``$XDG_CACHE_HOME/rsembed-store``,
    ``~/.cache/rsembed-store``; ``%LOCALAPPDATA%\\rsembed-store`` on Windows)."""
    if os.environ.get(ENV_DB):
        return os.environ[ENV_DB]
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return str(Path(os.environ["LOCALAPPDATA"]) / "rsembed-store")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "rsembed-store")


_store_lock = threading.Lock()
_default_store = None


def set_default_store(store: Union[None, str, os.PathLike, Any]) -> None:
    """Use ``store`` (an open :class:`~rsembed_store.Store` or a URI) for calls that name none;
    ``None`` goes back to :func:`default_store_uri`."""
    global _default_store
    from ..store import Store

    with _store_lock:
        _default_store = store if store is None or isinstance(store, Store) else Store.open(store)


def get_store(store=None):
    """The store a call uses: the one passed, else the default (opened once per process)."""
    global _default_store
    from ..store import Store

    if store is not None:
        return store if isinstance(store, Store) else Store.open(store)
    with _store_lock:
        if _default_store is None:
            _default_store = Store.open(default_store_uri())
        return _default_store


# ------------------------------------------------------------------ models


def store_model_name(model: str) -> str:
    """The model of this store that answers rs-embed's ``model`` (an id, an alias, or ``rsembed:<id>``)."""
    from ..registry import _MODELS

    if not isinstance(model, str) or not model.strip():
        raise SpecError(f"model={model!r} must be a model id such as 'remoteclip' (see list_models())")
    name = model.strip()
    if name.startswith("rsembed:") or name in _MODELS and name not in BRIDGED:
        return name
    short = ALIASES.get(name.lower(), name.lower())
    if short in _MODELS and short not in BRIDGED:
        return short
    return f"rsembed:{short}"


# ------------------------------------------------------------------ specs


def temporal_for(info, temporal) -> Optional[TemporalSpec]:
    """rs-embed's reading of ``temporal``, with its default window and warning when None."""
    temporal = coerce_spec(temporal, TemporalSpec)
    if temporal is not None:
        return temporal
    if info.kind == "precomputed":
        if info.id == "tessera":
            warnings.warn(f"temporal=None: tessera defaults to year {TESSERA_DEFAULT_YEAR}. Pass "
                          "temporal=TemporalSpec.year(...) for reproducible results.", UserWarning, stacklevel=4)
            return TemporalSpec.year(TESSERA_DEFAULT_YEAR)
        return None  # gse, copernicus: the model refuses, naming what it needs (as rs-embed does)
    warnings.warn(
        f"temporal=None: using the package default window {DEFAULT_WINDOW[0]}..{DEFAULT_WINDOW[1]}. Pass "
        "temporal=TemporalSpec.range(...)/year(...) for reproducible, self-documented results.",
        UserWarning, stacklevel=4)
    return TemporalSpec.range(*DEFAULT_WINDOW)


def _ee_sensor(sensor: SensorSpec) -> SensorSpec:
    """An Earth Engine collection id and band names (rs-embed's spelling) in this store's vocabulary."""
    from ..ingest.providers.gee_collections import lookup
    from ..ingest.providers.local import canonical_band
    from ..errors import ProviderError

    try:
        collection = lookup(sensor.collection)
    except ProviderError:
        return sensor  # a collection of our own (or a local one): as it is
    if collection.name == sensor.collection:
        return sensor
    try:
        bands = tuple(canonical_band(collection.resolve_band(b).name) for b in sensor.bands)
    except ProviderError as exc:
        raise SpecError(str(exc)) from None
    return replace(sensor, collection=collection.name, bands=bands)


def _rs_sensor_fields(sensor) -> Mapping[str, Any]:
    """rs-embed's SensorSpec fields as ours (``modality`` and the Sentinel-1 switches only at their defaults)."""
    if type(sensor).__module__.split(".")[0] != "rs_embed":
        return sensor
    return coerce_spec(sensor, SensorSpec)


def sensor_for(info, sensor, fetch: Optional[FetchSpec]) -> Optional[SensorSpec]:
    """The sensor asked for: ``sensor`` as given, or the model's default with ``fetch``'s overrides."""
    if sensor is not None and fetch is not None:
        raise SpecError("Use either sensor=... or fetch=..., not both.")
    if sensor is not None:
        return _ee_sensor(coerce_spec(_rs_sensor_fields(sensor), SensorSpec))
    if fetch is None:
        return None
    fetch = _fetch(fetch)
    if info.kind == "precomputed" or info.default_sensor is None:
        return None  # rs-embed applies fetch overrides to a default sensor; a product has none
    overrides = {k: getattr(fetch, k) for k in ("scale_m", "cloudy_pct", "fill_value", "composite")
                 if getattr(fetch, k) is not None}
    return replace(info.default_sensor, **overrides)


def _fetch(fetch) -> FetchSpec:
    if isinstance(fetch, FetchSpec):
        return fetch
    if type(fetch).__name__ == "FetchSpec":  # rs-embed's own
        return FetchSpec(fetch.scale_m, fetch.cloudy_pct, fetch.fill_value, fetch.composite)
    raise SpecError(f"fetch={fetch!r} must be a FetchSpec")


def output_for(output) -> OutputSpec:
    return coerce_spec(output, OutputSpec) or OutputSpec.pooled()


def input_prep_for(input_prep) -> InputPrepSpec:
    """rs-embed's input prep: None is its package default ``tile``; a string names the mode."""
    if input_prep is None:
        return InputPrepSpec(mode="tile", max_tiles=RS_MAX_TILES)
    if isinstance(input_prep, str):
        mode = input_prep.strip().lower()
        if mode not in ("resize", "tile", "auto"):
            raise SpecError(f"input_prep={input_prep!r} is not accepted; use 'resize', 'tile', 'auto', "
                            "an InputPrepSpec or None")
        return InputPrepSpec(mode=mode, max_tiles=RS_MAX_TILES)
    return coerce_spec(input_prep, InputPrepSpec)


def check_unsupported(model: str, modality: Optional[str], model_kwargs: Mapping[str, Any]) -> None:
    """Refuse what this store cannot yet put in a key, rather than compute something else silently."""
    if modality is not None:
        raise SpecError(f"modality={modality!r} is not supported by the store's rs-embed calls yet; "
                        "accepted: None (the model's default input). Name extra inputs with the store's "
                        "Request(modalities=...) instead")
    if model_kwargs and not routing_is_bridged(model):
        raise SpecError(f"model settings {sorted(model_kwargs)} for {model!r} are not supported by this store's "
                        f"native {store_model_name(model)!r}; accepted: none (settings pass to models bridged "
                        "from rs-embed, e.g. 'rsembed:<name>')")


def routing_is_bridged(model: str) -> bool:
    return store_model_name(model).startswith("rsembed:")


def with_settings(name: str, model_kwargs: Mapping[str, Any]) -> str:
    """A bridged model's id with rs-embed's ``**model_kwargs`` in it (they enter every key)."""
    if not model_kwargs:
        return name
    from ..ingest.models.rsembed_bridge import settings_suffix, split_name

    base, old = split_name(name)
    return base + settings_suffix({**(old or {}), **dict(model_kwargs)})


def backend_provider(backend: Optional[str]) -> Optional[str]:
    """``backend`` as a provider name, or None for ``auto``."""
    name = str(backend if backend is not None else "auto").strip().lower()
    return None if name in ("auto", "") else name


def strict_default() -> bool:
    return os.environ.get(ENV_STRICT, "").strip().lower() in ("1", "true", "yes")


__all__ = [
    "default_store_uri",
    "get_store",
    "set_default_store",
    "store_model_name",
]
