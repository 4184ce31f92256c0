"""Model and provider registries: a name -> the class that implements it.

The registries are the single source of truth for what exists: ``models --json``,
the docs table and the parametrised tests are all generated from them. Entries
are ``"module:Class"`` strings imported on first use, so listing models never
imports a heavy dependency, and a model whose optional extra is missing fails
only when it is used, with an error naming the extra.

Adding a model is one module plus one line here (or a call to
:func:`register_model` from a plugin).
"""

from __future__ import annotations

import importlib
import threading
from typing import Dict, List

from .errors import UnknownModelError, UnknownProviderError

# name -> "module:Class"
_MODELS: Dict[str, str] = {
    "spectral": "rsembed_store.ingest.models.spectral:SpectralModel",
    "mosaiks": "rsembed_store.ingest.models.mosaiks:MosaiksModel",
    "gse": "rsembed_store.ingest.models.gse:GseModel",
    "gse-unit": "rsembed_store.ingest.models.gse:GseUnitModel",
    "tessera": "rsembed_store.ingest.models.tessera:TesseraModel",
    "copernicus": "rsembed_store.ingest.models.copernicus:CopernicusModel",
    "remoteclip": "rsembed_store.ingest.models.remoteclip:RemoteClipModel",
    "ssl4eo-s2": "rsembed_store.ingest.models.ssl4eo:Ssl4eoS2Model",
    "dofa": "rsembed_store.ingest.models.dofa:DofaModel",
    "prithvi": "rsembed_store.ingest.models.prithvi:PrithviModel",
    "terramind": "rsembed_store.ingest.models.terramind:TerraMindModel",
    "anysat": "rsembed_store.ingest.models.anysat:AnySatModel",
}

_PROVIDERS: Dict[str, str] = {
    "local": "rsembed_store.ingest.providers.local:LocalProvider",
    "gee": "rsembed_store.ingest.providers.gee:EarthEngineProvider",
}

_lock = threading.Lock()
_model_classes: Dict[str, type] = {}
_provider_classes: Dict[str, type] = {}


def _load(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def register_model(name: str, target) -> None:
    """Register a model class (or its ``"module:Class"`` path) under ``name``."""
    with _lock:
        if isinstance(target, str):
            _MODELS[name] = target
            _model_classes.pop(name, None)
        else:
            _MODELS[name] = f"{target.__module__}:{target.__qualname__}"
            _model_classes[name] = target


def register_provider(name: str, target) -> None:
    """Register a provider class (or its ``"module:Class"`` path) under ``name``.

    A class is kept as given (like a model class), so a provider defined where it
    cannot be imported by name (a notebook, a test) still resolves, and can be
    shipped to other processes (the Ray executor pickles it by value)."""
    with _lock:
        if isinstance(target, str):
            _PROVIDERS[name] = target
            _provider_classes.pop(name, None)
        else:
            _PROVIDERS[name] = f"{target.__module__}:{target.__qualname__}"
            _provider_classes[name] = target


def model_names() -> List[str]:
    """Registered models, then ``rsembed:<name>`` for rs-embed's models when rs-embed is installed."""
    return sorted(_MODELS) + _rsembed().model_names()


def _rsembed():
    """The rs-embed bridge module (light: it imports rs-embed only when a bridged model is used)."""
    from .ingest.models import rsembed_bridge

    return rsembed_bridge


def provider_names() -> List[str]:
    return sorted(_PROVIDERS)


def model_class(name: str) -> type:
    """The class registered as ``name``; raises :class:`UnknownModelError` listing what exists."""
    if isinstance(name, str) and name not in _MODELS and name.startswith(_rsembed().PREFIX):
        with _lock:
            if name not in _model_classes:
                _model_classes[name] = _rsembed().build(name)
            return _model_classes[name]
    if not isinstance(name, str) or name not in _MODELS:
        raise UnknownModelError(
            f"unknown model {name!r}; registered models: {model_names()} "
            "(see `rsembed-store models`)"
        )
    with _lock:
        cls = _model_classes.get(name)
        if cls is None:
            cls = _load(_MODELS[name])
            settle = getattr(cls, "settle", None)  # e.g. custom weights named by $RSEMBED_WEIGHTS
            cls = settle() if callable(settle) else cls
            _model_classes[name] = cls
    return cls


def model_info(name: str):
    """The declared :class:`~rsembed_store.model.ModelInfo` of model ``name``."""
    return model_class(name).info


def describe_models() -> List[dict]:
    """Every registered model's declared ModelInfo as a dict; a model whose optional
    extra is missing is listed with the error that names the extra."""
    out = []
    for name in model_names():
        try:
            bridged = name not in _MODELS and name.startswith(_rsembed().PREFIX)
            out.append(_rsembed().describe(name) if bridged else model_info(name).to_dict())
        except ImportError as exc:
            out.append({"id": name, "error": str(exc)})
    return out


def provider_class(name: str) -> type:
    """The class registered as ``name``; raises :class:`UnknownProviderError` listing what exists."""
    if not isinstance(name, str) or name not in _PROVIDERS:
        raise UnknownProviderError(f"unknown provider {name!r}; registered providers: {provider_names()}")
    with _lock:
        cls = _provider_classes.get(name)
        if cls is None:
            cls = _provider_classes[name] = _load(_PROVIDERS[name])
    return cls
