"""Planning: a region and time windows -> the resolved, keyed requests to compute.

:func:`~rsembed_store.ingest.regions.region_cells` covers a region with H3
cells at one resolution (centre-inside rule, see :mod:`rsembed_store.ingest.regions`);
:func:`plan` crosses those cells with time windows, resolves every
``Request(model, H3Cell(cell), window, ...)`` exactly as
:func:`rsembed_store.keys.resolve` would, keys it and drops duplicates. The
resulting :class:`Plan` can count what the store already holds
(:meth:`Plan.check_cache`), list what is left to compute (:meth:`Plan.missing`),
summarise itself as JSON and round-trip through a file.

Speed
-----
Calling :func:`~rsembed_store.keys.resolve` per request costs ~130 us (spec
validation, JSON, SHA-256), too slow for 10^5..10^6 cells. :func:`plan`
resolves ONE template request per window through ``resolve`` itself, then
builds each cell's request from it: the cells come from h3 (already valid),
so the ``H3Cell`` is made without re-validation, and the canonical JSON is the
template's canonical JSON with the cell id substituted. That substitution is
exact: the cell id is the only value that differs, it is a plain hex string
that JSON writes verbatim, and the template string is produced by
``canonical_json`` itself (checked against the template request on every
call; tests compare the fast path with ``resolve`` on random cells).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..errors import SpecError, UnknownSpaceError
from ..geo import is_number
from ..keys import Request, ResolvedRequest, canonical_json, hash_json, resolve
from ..limits import DEFAULT_MAX_PLAN_CELLS, Limits
from ..model import Model
from ..registry import model_class
from ..specs import H3Cell, OutputSpec, TemporalSpec, parse_time
from .regions import check_res, region_cells

DEFAULT_MAX_CELLS = DEFAULT_MAX_PLAN_CELLS  # the default of the max_plan_cells limit (rsembed_store.limits)
PLAN_FORMAT = "rsembed-plan/1"

_SECONDS_FALLBACK = 2.0  # per request, for a model the registry does not know

# ---------------------------------------------------------------- the plan


def _window(where: str, value: Any) -> Optional[TemporalSpec]:
    if value is None or isinstance(value, TemporalSpec):
        return value
    if isinstance(value, Mapping):
        return TemporalSpec.from_dict(value)
    if isinstance(value, str):
        return parse_time(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return TemporalSpec.year(value)
    raise SpecError(
        f"{where}={value!r} is not a time window; accepted: TemporalSpec.year(Y), "
        "TemporalSpec.range(START, END), its dict form, '2022' or 'START/END'"
    )


def _windows(windows: Any) -> List[Optional[TemporalSpec]]:
    if isinstance(windows, (list, tuple)):
        if not windows:
            raise SpecError("windows=[] is empty; give at least one TemporalSpec")
        return [_window(f"windows[{i}]", w) for i, w in enumerate(windows)]
    return [_window("windows", windows)]


_SENTINEL = "PLANCELLSENTINEL"


def _template(resolved: ResolvedRequest) -> Tuple[str, str]:
    """The canonical JSON of ``resolved`` split around its cell id: (before, after)."""
    d = resolved.key_dict()
    d["spatial"] = {"type": "H3Cell", "cell": _SENTINEL}
    text = canonical_json(d)
    if text.count(_SENTINEL) != 1:  # pragma: no cover - guards the recipe
        raise AssertionError("plan template: the cell placeholder is not unique")
    before, after = text.split(_SENTINEL)
    if before + resolved.spatial.cell + after != resolved.canonical:  # pragma: no cover - guards the recipe
        raise AssertionError("plan template does not reproduce the canonical JSON of resolve()")
    return before, after


def _fast_cell(cell: str) -> H3Cell:
    """An H3Cell for an id h3 itself produced (valid and normalised): no re-validation."""
    obj = object.__new__(H3Cell)
    object.__setattr__(obj, "cell", cell)
    return obj


@dataclass
class Plan:
    """The requests for a region x windows, unique by key, ordered by cell then window.

    ``windows`` are the windows as given; ``requests`` hold them as the model
    resolves them (so two windows that resolve alike give one request per cell,
    counted in ``duplicates_dropped``).
    """

    requests: List[ResolvedRequest]
    cells: List[str]
    windows: List[Optional[TemporalSpec]]
    model: str
    output: OutputSpec
    duplicates_dropped: int
    cached: Optional[int] = None
    h3_res: Optional[int] = None
    revision: Optional[str] = None
    is_cached: Optional[List[bool]] = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.requests)

    def keys(self) -> List[str]:
        return [r.key for r in self.requests]

    @property
    def space(self) -> str:
        from ..space import space_name

        return space_name(self.model, self.revision or "")

    def check_cache(self, store, batch_size: int = 50_000) -> "Plan":
        """Look every key up in ``store`` (key column only, in batches); sets ``is_cached``/``cached``.

        A store that holds no space for this model + revision has nothing cached.
        Returns ``self``.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise SpecError(f"batch_size={batch_size!r} is not accepted; use a positive integer")
        keys = self.keys()
        flags: List[bool] = []
        try:
            store.space_info(self.space)
        except UnknownSpaceError:
            flags = [False] * len(keys)
        else:
            for i in range(0, len(keys), batch_size):
                flags.extend(bool(f) for f in store.contains_many(keys[i : i + batch_size], space=self.space))
        self.is_cached = flags
        self.cached = sum(flags)
        return self

    def missing(self) -> List[ResolvedRequest]:
        """The requests not in the store, in plan order (call :meth:`check_cache` first)."""
        if self.is_cached is None:
            raise RuntimeError("Plan.missing() needs the cache state: call plan.check_cache(store) first")
        return [r for r, hit in zip(self.requests, self.is_cached) if not hit]

    def summary(self, seconds_per_request: Optional[float] = None) -> dict:
        """A JSON-ready summary of the plan.

        ``estimated_seconds`` is ``to_compute * seconds_per_request``, a rough
        figure: the per-request cost comes from the argument or from
        the model's declaration (``ModelInfo.cost_per_request``), and ignores
        parallelism, caching of imagery and network speed. Until
        :meth:`check_cache` runs, ``cached`` is ``None`` and every request
        counts as to compute.
        """
        if seconds_per_request is None:
            seconds_per_request = default_seconds_per_request(self.model)
        elif not is_number(seconds_per_request) or not seconds_per_request >= 0:
            raise SpecError(f"seconds_per_request={seconds_per_request!r} must be a number >= 0")
        to_compute = len(self.requests) - (self.cached or 0)
        return {
            "model": self.model,
            "revision": self.revision,
            "h3_res": self.h3_res,
            "n_cells": len(self.cells),
            "n_windows": len(self.windows),
            "n_requests": len(self.requests),
            "duplicates_dropped": self.duplicates_dropped,
            "cached": self.cached,
            "to_compute": to_compute,
            "seconds_per_request": float(seconds_per_request),
            "estimated_seconds": round(to_compute * float(seconds_per_request), 3),
            "output": self.output.mode,
            "pooling": self.output.pooling if self.output.mode == "pooled" else None,
        }

    # ------------------------------------------------------------ files

    def save(self, path) -> Path:
        """Write the plan: a JSON document if ``path`` ends in ``.json``, else JSON lines.

        JSON lines: the first line is a header (format tag, summary, windows,
        output, cache flags); each further line is exactly the canonical JSON
        of one request, so ``sha256(line)`` is its key.
        """
        path = Path(os.fspath(path))
        header = {
            "format": PLAN_FORMAT,
            "summary": self.summary(),
            "windows": [w.to_dict() if w is not None else None for w in self.windows],
            "output": self.output.to_dict(),
            "is_cached": None if self.is_cached is None else "".join("1" if f else "0" for f in self.is_cached),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            if path.suffix.lower() == ".json":
                header["requests"] = [r.canonical for r in self.requests]
                json.dump(header, fh, ensure_ascii=False)
                fh.write("\n")
            else:
                fh.write(json.dumps(header, ensure_ascii=False))
                fh.write("\n")
                for r in self.requests:
                    fh.write(r.canonical)
                    fh.write("\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path) -> "Plan":
        """Read a plan written by :meth:`save` (either format); requests via ``ResolvedRequest.from_canonical``."""
        path = Path(os.fspath(path))
        if not path.is_file():
            raise SpecError(f"plan file {str(path)!r} does not exist")
        text = path.read_text(encoding="utf-8")
        try:
            try:
                doc = json.loads(text)
                lines = None
            except json.JSONDecodeError:
                doc = None
                lines = [ln for ln in text.splitlines() if ln.strip()]
                header = json.loads(lines[0])
            if doc is not None:
                header = doc
                texts = doc.get("requests")
            else:
                texts = lines[1:]
            if not isinstance(header, Mapping) or header.get("format") != PLAN_FORMAT or not isinstance(texts, list):
                raise ValueError(f"not a {PLAN_FORMAT} file")
            summary = header["summary"]
            requests = [ResolvedRequest.from_canonical(t) for t in texts]
            windows = [TemporalSpec.from_dict(w) if w is not None else None for w in header["windows"]]
            output = OutputSpec.from_dict(header["output"])
        except SpecError:
            raise
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise SpecError(f"plan file {str(path)!r} is not a plan written by Plan.save: {exc}") from None
        if len(requests) != summary.get("n_requests"):
            raise SpecError(
                f"plan file {str(path)!r} holds {len(requests)} requests but its header says {summary.get('n_requests')}"
            )
        cells = list(dict.fromkeys(r.spatial.cell for r in requests if isinstance(r.spatial, H3Cell)))
        flags = header.get("is_cached")
        is_cached = None if flags is None else [c == "1" for c in flags]
        if is_cached is not None and len(is_cached) != len(requests):
            raise SpecError(f"plan file {str(path)!r} has {len(is_cached)} cache flags for {len(requests)} requests")
        return cls(
            requests=requests,
            cells=cells,
            windows=windows,
            model=summary["model"],
            output=output,
            duplicates_dropped=int(summary.get("duplicates_dropped") or 0),
            cached=None if is_cached is None else sum(is_cached),
            h3_res=summary.get("h3_res"),
            revision=summary.get("revision"),
            is_cached=is_cached,
        )


def default_seconds_per_request(model: str) -> float:
    """The rough cost of one request of ``model``, as its registry entry declares it
    (``ModelInfo.cost_per_request``)."""
    try:
        info = model_class(model).info
    except SpecError:
        return _SECONDS_FALLBACK
    return info.cost_per_request()


def plan(
    model: str,
    region: Any,
    h3_res: int,
    windows: Any,
    output: Optional[OutputSpec] = None,
    sensor=None,
    input_prep=None,
    provider: Optional[str] = None,
    *,
    modalities=None,
    max_cells: Optional[int] = None,
    limits: Optional[Limits] = None,
) -> Plan:
    """Plan ``model`` over the cells of ``region`` (see :func:`region_cells`) x ``windows``.

    ``model`` comes first, as in every other call of the package
    (``plan("gse", BBox(...), 9, 2023)``); every argument may also be passed by name.

    ``windows`` is one time window or a list (TemporalSpec, its dict, ``2022``
    or ``'START/END'``). Each ``Request(model, H3Cell(cell), window, sensor,
    output, input_prep, provider, modalities)`` is resolved with the semantics of
    :func:`rsembed_store.keys.resolve` and keyed; windows that resolve to the
    same computation (a year and the same year as a range, for a composite
    model) are kept once, the dropped requests counted in
    ``duplicates_dropped``. Requests are ordered by cell, then by window in
    the order given.

    ``limits`` (default: the environment's, see :mod:`rsembed_store.limits`) caps
    the cells (``max_plan_cells``, unless ``max_cells`` is given) and, checked on
    one cell per window, the pixels and bytes of each request: a plan whose
    requests could not be computed is refused with a LimitError.
    """
    if not isinstance(model, str):
        raise SpecError(f"model={model!r} is not a model id; plan takes the model first: "
                        "plan(model, region, h3_res, windows, ...)")
    h3_res = check_res(h3_res)
    wins = _windows(windows)
    cls = model_class(model)  # UnknownModelError names the registered models
    limits = limits or Limits.from_config(None)
    cells = region_cells(region, h3_res, max_cells=max_cells, limits=limits)

    # one template per window, resolved by resolve() itself on the first cell
    templates: List[Tuple[str, str]] = []
    first_cell = _fast_cell(cells[0])
    resolved_output = None
    revision = None
    model_id = None
    proto: Dict[Tuple[str, str], ResolvedRequest] = {}
    for w in wins:
        rr = resolve(Request(model, first_cell, w, sensor, output, input_prep, provider, modalities))
        t = _template(rr)
        resolved_output, revision, model_id = rr.output, rr.revision, rr.model
        if t not in proto:
            limits.check_request(rr)  # cells of one resolution are about the same size
            proto[t] = rr
            templates.append(t)

    per_cell_check = getattr(cls.check_spatial, "__func__", None) is not Model.check_spatial.__func__
    requests: List[ResolvedRequest] = []
    append = requests.append
    sha = hash_json
    protos = [(before, after, proto[(before, after)]) for before, after in templates]
    for cell in cells:
        spatial = _fast_cell(cell)
        if per_cell_check:
            cls.check_spatial(spatial)
        for before, after, p in protos:
            text = before + cell + after
            append(
                ResolvedRequest(
                    p.model, p.revision, p.provider, spatial, p.temporal, p.sensor, p.output, p.input_prep,
                    text, sha(text), frames=p.frames, modalities=p.modalities,
                )
            )

    return Plan(
        requests=requests,
        cells=cells,
        windows=wins,
        model=model_id,
        output=resolved_output,
        duplicates_dropped=len(cells) * (len(wins) - len(templates)),
        h3_res=h3_res,
        revision=revision,
    )


__all__ = [
    "DEFAULT_MAX_CELLS",
    "PLAN_FORMAT",
    "Plan",
    "default_seconds_per_request",
    "plan",
    "region_cells",
]
