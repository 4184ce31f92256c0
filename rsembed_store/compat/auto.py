"""``backend="auto"``: choose, per request and before keying, the first provider that can serve it.

For an on-the-fly model the providers are tried in the model's declared order
(``local``, then ``gee``):

- ``local`` serves a request when a configured source directory of the sensor's
  collection (store config ``sources`` or ``$RSEMBED_SOURCES``) holds a scene dated
  inside the window whose footprint contains the whole ROI and has every band;
- ``gee`` serves it when Earth Engine is configured (a project, a service-account key
  or a URL, from the store config ``providers.gee`` or ``EE_PROJECT`` & co.) and its
  client is installed.

Product providers (``cog``, ``geotessera``, ``geotiff``) are taken as declared: the
product readers choose their own source (a configured root, else the public mirror).
The chosen provider is part of the key, as for any request, and of the meta.

Cache-first across providers: a stored answer to the same question from ANY of the
model's providers is a hit (one batch look-up of every candidate key), unless
``strict`` (or ``$RSEMBED_STORE_STRICT_PROVIDER=1``), which looks up only the chosen
provider's key. When no provider can serve a request, :class:`NoProviderError` lists
each one tried and why it declined.
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from ..errors import NoProviderError, ProviderError
from ..keys import Request, ResolvedRequest, resolve
from ..registry import model_class


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


CHECKS = {"local": local_declines, "gee": gee_declines}


def declines(provider: Optional[str], request: ResolvedRequest, config: Mapping) -> Optional[str]:
    check = CHECKS.get(provider or "")
    return check(request, config) if check is not None else None


class Candidates:
    """A request's resolved form under each provider it may use; ``auto`` when none was named."""

    def __init__(self, request: Request):
        self.request = request
        self.auto = request.provider is None
        if self.auto:
            providers = model_class(request.model).info.providers or (None,)
        else:
            providers = (request.provider,)
        self.resolved: List[ResolvedRequest] = []
        for name in providers:
            self.resolved.append(resolve(replace(request, provider=name)))

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
        listed = "; ".join(f"{name}: {why}" for name, why in tried)
        err = NoProviderError(f"no provider of model {self.request.model!r} can serve {self.request.spatial!r} "
                              f"in {self.request.temporal!r}; tried {listed}")
        err.tried = tuple(tried)
        raise err


def answers(store, requests: Sequence[Request], *, strict: bool = False, compute: bool = True) -> list:
    """Stored or computed answers (the store's Embeddings) for ``requests``, in order.

    One batch look-up covers every candidate key (every provider under ``auto``;
    only the chosen one when ``strict``); only misses are computed, each stored.
    """
    config = dict(store.config or {})
    cands = [Candidates(r) for r in requests]
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
        out.append(store.getter.get(chosen))
    return out


__all__ = ["Candidates", "NoProviderError", "answers", "declines", "gee_declines", "local_declines"]
