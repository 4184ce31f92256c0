"""Model and provider registries: a name -> the class that implements it.

The registries are the single source of truth for what exists: ``models --json``,
the docs table and the parametrised tests are all generated from them. Entries
are ``"module:Class"`` strings imported on first use, so listing models never
imports a heavy dependency, and a model whose optional extra is missing fails
only when it is used, with an error naming the extra.

Adding a model is one module plus one line here (or a call to
:func:`register_model` from a plugin). A family of models named by a prefix
(``rsembed:<name>``, built on demand from rs-embed) comes in through
:func:`register_resolver`, the same door a plugin would use; the registry
itself imports no model module.

Custom weights given to one store (``Store.open(config={"models": {id:
{"weights": path}}})``) do not change this process's registry: the store puts
its own classes in scope (:func:`models_in_scope`) around each of its calls,
and :func:`model_class` answers from the innermost scope first, so two stores
with different weights in one process never see each other's.
"""

from __future__ import annotations

import contextvars
import importlib
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Mapping, Optional

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


@dataclass(frozen=True)
class Resolver:
    """Models named ``<prefix><rest>`` built on demand: ``build(name) -> class``, ``names()`` for
    listings, ``describe(name) -> dict`` for ``models --json`` (default: the class's ModelInfo)."""

    prefix: str
    build: Callable[[str], type]
    names: Callable[[], List[str]] = list
    describe: Optional[Callable[[str], dict]] = None


# prefix -> a Resolver, or "module:attribute" naming one (imported on first use)
_RESOLVERS: Dict[str, object] = {
    "rsembed:": "rsembed_store.ingest.models.rsembed_bridge:RESOLVER",
}

_lock = threading.Lock()
_model_classes: Dict[str, type] = {}
_provider_classes: Dict[str, type] = {}
_scope: contextvars.ContextVar = contextvars.ContextVar("rsembed_store_model_scope", default={})


def register_resolver(resolver: Resolver) -> None:
    """Serve every model id starting with ``resolver.prefix`` from ``resolver`` (a plugin door)."""
    with _lock:
        _RESOLVERS[resolver.prefix] = resolver
        for name in [n for n in _model_classes if n.startswith(resolver.prefix) and n not in _MODELS]:
            del _model_classes[name]


def _resolvers() -> List[Resolver]:
    with _lock:
        for prefix, entry in list(_RESOLVERS.items()):
            if isinstance(entry, str):
                _RESOLVERS[prefix] = _load(entry)
        return list(_RESOLVERS.values())


def _resolver_for(name: str) -> Optional[Resolver]:
    if name in _MODELS:
        return None
    return next((r for r in _resolvers() if name.startswith(r.prefix)), None)


@contextmanager
def models_in_scope(classes: Mapping[str, type]) -> Iterator[None]:
    """Within the block (this thread or task only), :func:`model_class` answers ``classes[name]``
    for the names given, before the registry. Scopes nest; the innermost wins."""
    if not classes:
        yield
        return
    token = _scope.set({**_scope.get(), **classes})
    try:
        yield
    finally:
        _scope.reset(token)


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
    """Registered models, then the models each resolver lists (``rsembed:<name>`` for rs-embed's
    models when rs-embed is installed)."""
    return sorted(_MODELS) + [n for r in _resolvers() for n in r.names()]


def provider_names() -> List[str]:
    return sorted(_PROVIDERS)


def model_class(name: str) -> type:
    """The class registered as ``name`` (or in scope: :func:`models_in_scope`, or built by the
    resolver of its prefix); raises :class:`UnknownModelError` listing what exists."""
    scoped = _scope.get().get(name) if isinstance(name, str) else None
    if scoped is not None:
        return scoped
    resolver = _resolver_for(name) if isinstance(name, str) else None
    if resolver is not None:
        with _lock:
            cls = _model_classes.get(name)
        if cls is None:
            cls = resolver.build(name)  # outside the lock: a build may look up other models
            with _lock:
                cls = _model_classes.setdefault(name, cls)
        return cls
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
            resolver = _resolver_for(name)
            if resolver is not None and resolver.describe is not None:
                out.append(resolver.describe(name))
            else:
                out.append(model_info(name).to_dict())
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
