"""``backend="auto"``: choose, per request and before keying, the first provider that can serve it.

For an on-the-fly model the providers are tried in the model's declared order
(``local``, then ``gee``):

- ``local`` serves a request when a configured source directory of the sensor's
  collection (store config ``sources`` or ``$RSEMBED_SOURCES``) holds a scene dated
  inside the window whose footprint contains the whole ROI and has every band;
- ``gee`` serves it when Earth Engine is configured (a project, a service-account key
  or a URL, from the store config ``providers.gee`` or ``EE_PROJECT`` & co.) and its
  client is installed.

``gse`` tries ``cog`` first: a configured COG root (``products.gse.root`` or
``$RSEMBED_GSE_ROOT``) holding a file of the year that covers the ROI; then ``mirror``,
the public COG mirror on Source Cooperative (HTTPS, no credentials; see
:mod:`rsembed_store.ingest.models.gse_catalog`), for the years it holds; else Earth
Engine as above. The other product providers
(``geotessera``, ``geotiff``) are taken as declared.
The chosen provider is part of the key, as for any request, and of the meta.

Cache-first across providers: a stored answer to the same question from ANY of the
model's providers is a hit (one batch look-up of every candidate key), unless
``strict`` (or ``$RSEMBED_STORE_STRICT_PROVIDER=1``), which looks up only the chosen
provider's key. When no provider can serve a request, :class:`NoProviderError` lists
each one tried and why it declined.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from ..errors import NoProviderError, ProviderError, SpecError
from ..keys import Request, ResolvedRequest, resolve
from ..registry import model_class

AUTO = "auto"


def _provider_config(config: Mapping, name: str) -> dict:
    return {**config, **(config.get("providers", {}) or {}).get(name, {})}


def _contains(outer: Sequence[float], inner: Sequence[float]) -> bool:
    w, s, e, n = outer
    if w > e:  # a footprint across the antimeridian: not judged here
        return False
    return w <= inner[0] and s <= inner[1] and inner[2] <= e and inner[3] <= n


def local_declines(request: ResolvedRequest, config: Mapping) -> Optional[str]:
    """Why the local provider cannot serve ``request``, or None when it can."""
    from ..ingest.providers.local import LocalProvider, canonical_band

    sensor = request.sensor
    if sensor is None:
        return None
    provider = LocalProvider(_provider_config(config, "local"))
    sources = provider.sources()
    if sensor.collection not in sources:
        return f"no local source for collection {sensor.collection!r} (configured: {sorted(sources)})"
    try:
        scenes = provider.scenes(sensor.collection)
    except ProviderError as exc:
        return str(exc)
    bounds = request.spatial.bounds()
    start, end = request.temporal.window()
    bands = [canonical_band(b) for b in sensor.bands]
    dated = [sc for sc in scenes if start <= sc.date < end]
    if not dated:
        return f"no local scene of {sensor.collection!r} is dated in [{start}, {end})"
    if not any(_contains(sc.bounds_lonlat, bounds) and not sc.missing(bands) for sc in dated):
        return (f"no local scene of {sensor.collection!r} in [{start}, {end}) covers the ROI "
                f"{tuple(round(v, 6) for v in bounds)} with bands {list(sensor.bands)}")
    return None


def gee_declines(request: ResolvedRequest, config: Mapping) -> Optional[str]:
    """Why Earth Engine cannot serve ``request`` (not configured, client missing), or None."""
    from ..ingest.providers import gee

    if not gee.Auth.from_config(_provider_config(config, "gee")).explicit:
        return ("Earth Engine is not configured: no project, key or URL (store config "
                "{'providers': {'gee': {'project': ...}}} or EE_PROJECT)")
    if gee.EE_MODULE is None and importlib.util.find_spec("ee") is None:
        return "the Earth Engine client is not installed: pip install 'rsembed-store[gee]'"
    return None


def cog_declines(request: ResolvedRequest, config: Mapping) -> Optional[str]:
    """Why ``gse``'s COG source cannot serve ``request`` (no root configured, no file of the year
    covering the ROI), asking the product's own planner, which only lists files; or None."""
    model = model_class(request.model)(dict(config))
    try:
        model.plan(request)
    except (ProviderError, SpecError) as exc:  # NoImageryError included; SpecError: e.g. too large to read
        return str(exc)
    return None


def mirror_declines(request: ResolvedRequest, config: Mapping) -> Optional[str]:
    """Why ``gse``'s public COG mirror cannot serve ``request``: turned off, a year the public copy
    does not hold, or (once its index is on this machine) no file covering the ROI; or None.
    Before the index has been downloaded the mirror is taken to cover the land of every year
    it holds, so choosing a provider never downloads anything."""
    from ..ingest.models import gse_catalog as cat

    model = model_class(request.model)(dict(config))
    if str(model.settings.get("mirror", True)).strip().lower() in ("false", "0", "no", "off"):
        return "the public COG mirror is turned off (products.gse.mirror = false)"
    root, index = model.mirror_urls()
    year = request.temporal.year
    first, last = cat.MIRROR_YEARS
    if root == cat.MIRROR_ROOT and not first <= year <= last:
        return f"the public COG mirror ({root}) holds the years {first}..{last}, not {year}"
    if index.startswith(("http://", "https://")) and not cat.index_copy(index).exists():
        return None
    try:
        model.plan(request)
    except (ProviderError, SpecError) as exc:  # NoImageryError included; SpecError: e.g. too large to read
        return str(exc)
    return None


CHECKS = {"local": local_declines, "gee": gee_declines, "cog": cog_declines, "mirror": mirror_declines}


def declines(provider: Optional[str], request: ResolvedRequest, config: Mapping) -> Optional[str]:
    check = CHECKS.get(provider or "")
    return check(request, config) if check is not None else None


def is_auto(provider: Optional[str]) -> bool:
    """True for the provider choices that mean "auto": none named, or ``"auto"``."""
    return provider is None or (isinstance(provider, str) and provider.strip().lower() == AUTO)


class Candidates:
    """A request's resolved form under each provider it may use; ``auto`` when none was named.

    ``fallback``: when every provider declines, choose the model's first provider (the one
    ``resolve()`` gives a request without a provider) instead of raising NoProviderError;
    that provider then reports its own error. This is what an unnamed provider means in
    ``Store.get`` and ``ingest``, so that their behaviour where no provider says yes is the
    one they had before "auto" became their default.
    """

    def __init__(self, request: Request, *, fallback: bool = False):
        self.auto = is_auto(request.provider)
        self.request = replace(request, provider=None) if self.auto else request
        self.fallback = fallback
        if self.auto:
            providers = model_class(request.model).info.providers or (None,)
        else:
            providers = (request.provider,)
        self.resolved: List[ResolvedRequest] = []
        for name in providers:
            self.resolved.append(resolve(replace(self.request, provider=name)))

    def choose(self, config: Mapping) -> ResolvedRequest:
        """The first candidate whose provider serves the request; NoProviderError otherwise."""
        if not self.auto:
            return self.resolved[0]
        tried: List[Tuple[str, str]] = []
        for r in self.resolved:
            why = declines(r.provider, r, config)
            if why is None:
                return r
            tried.append((r.provider, why))
        if self.fallback:
            return self.resolved[0]
        listed = "; ".join(f"{name}: {why}" for name, why in tried)
        err = NoProviderError(f"no provider of model {self.request.model!r} can serve {self.request.spatial!r} "
                              f"in {self.request.temporal!r}; tried {listed}")
        err.tried = tuple(tried)
        raise err


def answers(store, requests: Sequence[Request], *, strict: bool = False, compute: bool = True,
            config: Optional[Mapping] = None, fallback: bool = False) -> list:
    """Stored or computed answers (the store's Embeddings) for ``requests``, in order.

    One batch look-up covers every candidate key (every provider under ``auto``;
    only the chosen one when ``strict``); only misses are computed, each stored.
    ``config`` is laid over the store's; ``fallback`` as in :class:`Candidates`.
    """
    extra = dict(config or {})
    config = {**(store.config or {}), **extra}
    cands = [Candidates(r, fallback=fallback) for r in requests]
    if strict:
        wanted: List[List[ResolvedRequest]] = [[c.choose(config)] for c in cands]
    else:
        wanted = [c.resolved for c in cands]
    flat = [r for group in wanted for r in group]
    hits = store.lookup(flat) if flat else []
    by_key: Dict[str, object] = {r.key: h for r, h in zip(flat, hits) if h is not None}
    out = []
    for c, group in zip(cands, wanted):
        hit = next((by_key[r.key] for r in group if r.key in by_key), None)
        if hit is not None:
            hit.cached = True
            out.append(hit)
            continue
        if not compute:
            out.append(None)
            continue
        chosen = group[0] if strict else c.choose(config)
        out.append(store.getter.get(chosen, config=extra or None))
    return out


def with_provider(r: ResolvedRequest, provider: Optional[str]) -> ResolvedRequest:
    """``r`` resolved for another provider of its model (the key is recomputed)."""
    return replace(r, provider=provider, canonical="", key="")


@dataclass
class Routing:
    """Planned requests with a provider chosen for each (see :func:`route`)."""

    requests: List[ResolvedRequest]
    stored_elsewhere: int = 0  # answered by another provider's stored answer (not strict)

    def providers(self, is_cached: Optional[Sequence[bool]] = None) -> Dict[str, dict]:
        """Per provider: how many requests it takes and how many of them are to compute."""
        out: Dict[str, dict] = {}
        flags = is_cached if is_cached is not None else [False] * len(self.requests)
        for r, hit in zip(self.requests, flags):
            entry = out.setdefault(str(r.provider), {"requests": 0, "to_compute": 0})
            entry["requests"] += 1
            entry["to_compute"] += 0 if hit else 1
        return out

    def earth_engine_calls(self, is_cached: Optional[Sequence[bool]] = None) -> int:
        """Expected Earth Engine calls: one computePixels per composite (a frame, a modality) of every
        request to compute through ``gee``; a ROI beyond the request limits is split into more."""
        flags = is_cached if is_cached is not None else [False] * len(self.requests)
        calls = 0
        for r, hit in zip(self.requests, flags):
            if r.provider == "gee" and not hit:
                calls += (r.frames.count if r.frames is not None else 1) * (1 + len(r.modalities or ()))
        return calls


def route(requests: Sequence[ResolvedRequest], config: Mapping, *, store=None, strict: bool = False,
          fallback: bool = False) -> Routing:
    """Choose a provider for each planned request, as ``backend="auto"`` does.

    Without ``strict`` a stored answer from any of the model's providers is taken
    (one batch look-up in ``store`` of every candidate key); otherwise the first
    provider that serves the request. Raises :class:`NoProviderError` when some
    request has none, naming how many and, for the first, each provider and why;
    with ``fallback`` such a request keeps the provider it was planned with instead.
    """
    groups = []
    for r in requests:
        providers = model_class(r.model).info.providers or (r.provider,)
        groups.append([with_provider(r, p) if p != r.provider else r for p in providers])
    found = set()
    if store is not None and not strict:
        flat = [c for g in groups for c in g]
        found = {c.key for c, hit in zip(flat, store.lookup(flat)) if hit is not None}
    out: List[ResolvedRequest] = []
    elsewhere, unserved, first = 0, 0, None
    for g in groups:
        hit = next((c for c in g if c.key in found), None)
        if hit is not None:
            out.append(hit)
            elsewhere += hit.provider != g[0].provider
            continue
        tried = []
        for c in g:
            why = declines(c.provider, c, config)
            if why is None:
                out.append(c)
                break
            tried.append((c.provider, why))
        else:
            if fallback:
                out.append(g[0])
                continue
            unserved += 1
            first = first or (g[0], tried)
    if unserved:
        r, tried = first
        listed = "; ".join(f"{name}: {why}" for name, why in tried)
        err = NoProviderError(f"{unserved} of {len(groups)} requests have no provider that can serve them; the "
                              f"first, {r.spatial!r} in {r.temporal!r}: tried {listed}")
        err.tried = tuple(tried)
        raise err
    return Routing(out, elsewhere)


__all__ = ["AUTO", "Candidates", "NoProviderError", "Routing", "answers", "declines", "gee_declines",
           "is_auto", "local_declines", "mirror_declines", "route", "with_provider"]
