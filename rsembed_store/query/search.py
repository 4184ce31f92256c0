"""Nearest-neighbour search in one embedding space, every filter pushed down to Lance.

:func:`search` finds the ``k`` stored answers of one space whose vectors lie
nearest to ``like`` (a vector, a stored key, an :class:`Embedding` or a request).
Spaces are never mixed: the query vector must come from, or fit, the space that
``model`` (and ``revision``) name.

Filters become one SQL predicate that Lance evaluates *before* the vector
search (a prefilter):

- ``temporal``: rows whose half-open window ``[start_date, end_date)``
  overlaps the given window;
- ``within``: a :class:`BBox` (ROI centre inside the box), a GeoJSON Polygon or
  MultiPolygon (ROI centre inside the polygon, exactly) or H3 cells at any
  resolution (the row's ``h3`` cell descends from one of them);
- ``where``: an extra filter on stored columns, ANDed in;
- ``exclude_self``: the row of the query's own key is left out in the filter.

Each part is written in the form Lance evaluates fastest (see docs/search.md):
parts that keep many rows are tested while scanning, small areas and short H3
cell lists go through the scalar indexes first. Every form is exact.

The vector search itself uses the query settings that
:func:`rsembed_store.query.maintain.maintain` measured and stored in the
space's Lance dataset config (``rsembed.search``); without them it is an exact
search. Rows written after the vector index was built are searched too (Lance
scans unindexed fragments exactly), so new answers are found at once.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import date
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import h3
import numpy as np
import pyarrow as pa

from ..embedding import Embedding, check_float32
from ..errors import NotStoredError, RsEmbedStoreError, SpecError, StoreError, VectorError
from ..keys import Request, ResolvedRequest, resolve
from ..model import METRICS
from ..specs import TemporalSpec, coerce_spec, parse_time
from .results import RESULT_COLUMNS, RESULT_SCHEMA, SearchResult
from .within import SMALL_SHARE, within_clause

SETTINGS_KEY = "rsembed.search"  # Lance dataset config key holding the query settings (JSON)
MAX_K = 10_000
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


# ---------------------------------------------------------------- the search


@dataclass
class _Prepared:
    space: str
    model: str
    metric: str
    k: int
    vector: np.ndarray
    filter: Optional[str]
    where: Optional[str]
    nearest: dict
    plan: dict
    dataset: Any = None


def search(store, model: str, like, *, k: int = 10, temporal=None, within=None, where: Optional[str] = None,
           exclude_self: bool = True, metric: Optional[str] = None, revision: Optional[str] = None,
           get: Optional[Callable] = None) -> SearchResult:
    """The ``k`` rows of ``model``'s space nearest to ``like``, nearest first.

    ``like``: a vector of the space's dimension, a stored key (64 hex digits),
    an :class:`Embedding` of this space, or a :class:`Request` /
    :class:`ResolvedRequest` (answered through ``get`` when given, e.g.
    ``store.get`` which computes a miss, else looked up; a miss is an error).
    ``temporal`` (TemporalSpec, its dict, ``"2022"`` or ``"START/END"``),
    ``within`` (BBox, GeoJSON polygon, H3 cells) and ``where`` (SQL on stored
    columns) filter inside Lance before the search. ``metric`` defaults to the
    space's; another metric than the vector index's searches exactly.
    """
    t0 = time.perf_counter()
    query = _query(store, model, like, k=k, metric=metric, revision=revision, get=get)
    k, info, metric_, vector, self_key, like_kind = query
    from .serving.answer import result_from, served_view

    served = served_view(store, info, metric_, temporal, within, where)
    if served is not None:
        view, filters = served
        found, plan = view.search(vector, k, filters=filters, exclude=self_key if exclude_self else None)
        return result_from(found, info, metric_, k, {"like": like_kind, **plan}, t0)
    q = _prepare(store, model, like, k=k, temporal=temporal, within=within, where=where,
                 exclude_self=exclude_self, metric=metric, revision=revision, get=get, query=query)
    nearest = dict(q.nearest)
    for _ in range(8):
        try:
            table = q.dataset.to_table(columns=RESULT_COLUMNS + ["_distance"], filter=q.filter, prefilter=True,
                                       nearest=nearest)
        except RsEmbedStoreError:
            raise
        except Exception as exc:
            raise _query_error(exc, q) from None
        if table.num_rows < nearest["k"] or not _tie_at_cut(table, q.k):
            break
        # rows tied with the k-th lie beyond what was fetched: fetch more, so the key decides among them
        nearest["k"] = 2 * nearest["k"] + 10
    rows, canonical = _rows(table, q.k)
    return SearchResult(rows=rows, space=q.space, model=q.model, metric=q.metric, k=q.k, filter=q.filter,
                        plan=q.plan, seconds=time.perf_counter() - t0, canonical=canonical)


def explain(store, model: str, like, *, k: int = 10, temporal=None, within=None, where: Optional[str] = None,
            exclude_self: bool = True, metric: Optional[str] = None, revision: Optional[str] = None,
            get: Optional[Callable] = None, verbose: bool = True) -> dict:
    """How :func:`search` would run, without running it: ``path`` ("serving" or "lance"), and for the
    Lance path the filter, the settings and Lance's plan (for the serving tier, the tier it would use)."""
    query = _query(store, model, like, k=k, metric=metric, revision=revision, get=get)
    k, info, metric_, *_ = query
    from .serving.answer import served_view

    served = served_view(store, info, metric_, temporal, within, where)
    if served is not None:
        view, filters = served
        return {"space": info.space, "metric": metric_, "k": k, "path": "serving",
                "filters": {"window_days": filters.window, "box": filters.box,
                            "h3_ranges": len(filters.ranges) if filters.ranges is not None else None},
                "tier": store.serving.describe(info.space)}
    q = _prepare(store, model, like, k=k, temporal=temporal, within=within, where=where,
                 exclude_self=exclude_self, metric=metric, revision=revision, get=get, query=query)
    try:
        text = q.dataset.scanner(columns=RESULT_COLUMNS + ["_distance"], filter=q.filter, prefilter=True,
                                 nearest=q.nearest).explain_plan(verbose)
    except Exception as exc:
        raise _query_error(exc, q) from None
    return {"space": q.space, "metric": q.metric, "k": q.k, "path": "lance", "filter": q.filter, **q.plan,
            "lance_plan": text}


def check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= MAX_K:
        raise SpecError(f"k={k!r} is not accepted; use an integer in [1, {MAX_K}]")
    return int(k)


def _prepare(store, model, like, *, k, temporal, within, where, exclude_self, metric, revision, get,
             query=None) -> _Prepared:
    if query is None:
        query = _query(store, model, like, k=k, metric=metric, revision=revision, get=get)
    k, info, metric, vector, self_key, like_kind = query
    ds = store.dataset(info.space)
    settings = settings_of(ds)
    hints = settings.get("extent") or {}
    clauses = []  # the usually most selective first: Lance tests later parts only where earlier ones hold
    if within is not None:
        clauses.append(within_clause(within, info.h3_res, hints))
    if temporal is not None:
        clauses.append(temporal_clause(temporal, hints))
    if where is not None:
        clauses.append(f"({check_where(where, filter_columns(ds))})")
    if exclude_self and self_key is not None:
        clauses.insert(0, _exclude_clause(ds, self_key, alone=not clauses))
    clauses = [c for c in clauses if c]
    filt = " AND ".join(clauses) if clauses else None

    filtered = temporal is not None or within is not None or where is not None
    nearest, plan = nearest_query(vector, k, metric, settings, filtered=filtered, space_metric=info.metric)
    plan = {"like": like_kind, **plan}
    return _Prepared(space=info.space, model=info.model, metric=metric, k=k, vector=vector, filter=filt,
                     where=where, nearest=nearest, plan=plan, dataset=ds)


def _query(store, model, like, *, k, metric, revision, get) -> tuple:
    """The checked arguments every search needs: (k, space info, metric, query vector, own key, like kind)."""
    k = check_k(k)
    info = store.space_for(model, revision)  # UnknownModelError / UnknownSpaceError name what is held
    metric = check_metric(metric if metric is not None else info.metric)
    vector, self_key, like_kind = query_vector(store, info, like, get)
    if metric == "cosine" and not np.any(vector):
        raise VectorError("the query vector is all zeros: it has no direction, so cosine distance is undefined")
    return k, info, metric, vector, self_key, like_kind


def _exclude_clause(ds, key: str, *, alone: bool) -> Optional[str]:
    """Leave the query's own row out.

    Alone, ``key != '...'`` is answered by the key index. Next to other
    filters it would make Lance take (slowly) every other row before testing
    them, so the own row is named by its row id, which Lance tests while it
    scans. A key that is not stored needs no exclusion.
    """
    if alone:
        return f"key != '{key}'"
    ids = ds.to_table(columns=["key"], filter=f"key = '{key}'", with_row_id=True).column("_rowid").to_pylist()
    if not ids:
        return None
    if len(ids) == 1:
        return f"_rowid != {int(ids[0])}"
    return f"_rowid NOT IN ({', '.join(str(int(i)) for i in ids)})"


def fetch_k(k: int) -> int:
    """How many rows to ask Lance for first: one more than ``k``, to see whether the cut falls in a tie."""
    return k + 1


def nearest_query(vector: np.ndarray, k: int, metric: str, settings: Mapping, *, filtered: bool,
                  space_metric: Optional[str] = None) -> Tuple[dict, dict]:
    """Lance's ``nearest`` argument for one query under the stored settings, and a summary of it.

    The vector index is used only when its metric is the query's (else the
    search is exact). Unfiltered queries (the own-key exclusion aside) probe
    exactly the partitions measured for them; filtered ones start at the
    larger number measured under a selective filter and may probe on until
    enough rows pass.
    """
    index = settings.get("index") or {}
    query = settings.get("query") or {}
    index_metric = index.get("metric", space_metric)
    use_index = bool(index) and metric == index_metric
    nearest = {"column": "vector", "q": vector, "k": fetch_k(k), "metric": metric, "use_index": use_index}
    plan: Dict[str, Any] = {"index": index.get("type") if use_index else None, "exact": not use_index}
    if use_index:
        nprobes = query.get("filtered_nprobes" if filtered else "nprobes") or query.get("nprobes")
        if nprobes:
            nearest["minimum_nprobes"] = int(nprobes)
            nearest["maximum_nprobes"] = None if filtered else int(nprobes)
            plan["nprobes"] = int(nprobes)
        if query.get("refine_factor"):
            nearest["refine_factor"] = plan["refine_factor"] = int(query["refine_factor"])
        ef = query.get("filtered_ef" if filtered else "ef") or query.get("ef")
        if ef:
            nearest["ef"] = plan["ef"] = max(int(ef), nearest["k"])
        measured = settings.get("measured") or {}
        if measured.get("recall_at_10") is not None:
            plan["measured_recall_at_10"] = measured["recall_at_10"]
    elif index:
        plan["why_exact"] = f"metric {metric!r} differs from the vector index's {index_metric!r}"
    return nearest, plan


def _tie_at_cut(table: pa.Table, k: int) -> bool:
    dist = sorted(table.column("_distance").to_pylist())
    return len(dist) > k and dist[k - 1] == dist[k]


def _rows(table: pa.Table, k: int) -> Tuple[List[dict], List[str]]:
    data = table.to_pydict()
    order = sorted(range(table.num_rows), key=lambda i: (float(data["_distance"][i]), data["key"][i]))[:k]
    rows = []
    canonical = [data["request"][i] for i in order]
    for i in order:
        cell = data["cell"][i]
        text = data["request"][i]
        rows.append(
            {
                "key": data["key"][i],
                "distance": float(data["_distance"][i]),
                "lon": data["lon"][i],
                "lat": data["lat"][i],
                "h3": h3.int_to_str(data["h3"][i]) if data["h3"][i] is not None else None,
                "cell": h3.int_to_str(cell) if cell is not None else None,
                "start_date": data["start_date"][i],
                "end_date": data["end_date"][i],
                "year": data["year"][i],
                "request": json.loads(text) if text else None,
            }
        )
    return rows, canonical


def _query_error(exc: Exception, q: _Prepared) -> RsEmbedStoreError:
    message = lance_message(exc)
    if q.where is not None:
        columns = filter_columns(q.dataset)
        unknown = _NO_FIELD.search(str(exc))
        if unknown:
            return where_error(f"the filter where={q.where!r} names {unknown.group(1).strip(chr(34))!r}, which is "
                               f"not a stored column; the columns you may filter on: {columns}")
        return where_error(f"the filter where={q.where!r} was refused by LanceDB: {message}. Write a SQL "
                           "predicate on stored columns, e.g. \"year = 2023 AND provider = 'local'\"; the columns "
                           f"you may filter on: {columns}")
    return StoreError(f"search in space {q.space!r} failed (filter {q.filter!r}): {message}")


# what LanceDB's errors carry besides the reason: its source locations, its own wrapper
# words, and (for an unknown column) every field of the scan, internal ones included
_NO_FIELD = re.compile(r"No field named ([^\s,]+?)\.?(?:\s|,|$)")
_RUST_PLACE = re.compile(r",?\s*(?:/[^\s,]*)?\.rs:\d+:\d+")
_VALID_FIELDS = re.compile(r"\s*Valid fields are .*?\.(?=,|\s*$)", re.DOTALL)
_WRAPPERS = re.compile(r"(?:Invalid user input|Schema error|Error during planning):\s*")


def lance_message(exc: BaseException) -> str:
    """The first line of a LanceDB error without its Rust source paths, wrapper words and field list."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    text = _VALID_FIELDS.sub("", _RUST_PLACE.sub("", text.splitlines()[0]))
    return _WRAPPERS.sub("", text).strip().rstrip(".,") or type(exc).__name__


def where_error(message: str) -> SpecError:
    """A SpecError about ``where`` (its ``field``, so the service and the CLI can name the input)."""
    err = SpecError(message)
    err.field = "where"
    return err


def filter_columns(ds) -> List[str]:
    """The stored columns a ``where`` may name: the space's columns but the vector and the grid
    (Lance's internal ``_rowid``-like columns are not among them)."""
    return [name for name in ds.schema.names if name not in ("vector", "grid") and not name.startswith("_")]


# ---------------------------------------------------------------- settings


def read_settings(store, space: str) -> dict:
    """The query settings maintenance stored for ``space`` (``{}`` when none)."""
    return settings_of(store.dataset(space))


def settings_of(ds) -> dict:
    """The query settings stored in a Lance dataset's config (``{}`` when none)."""
    try:
        text = ds.config().get(SETTINGS_KEY)
    except Exception:  # a dataset without config support
        return {}
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------- arguments


def check_metric(metric) -> str:
    if not isinstance(metric, str) or metric.lower() not in METRICS:
        raise SpecError(f"metric={metric!r} is not accepted; use one of {list(METRICS)}")
    return metric.lower()


def as_vector(value, dim: int, what: str = "the query vector") -> np.ndarray:
    """``value`` as a finite float32 vector of dimension ``dim``, or a VectorError saying why not."""
    try:
        v = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise VectorError(f"{what} must be a list of {dim} numbers, got {type(value).__name__}") from None
    if v.ndim != 1:
        raise VectorError(f"{what} must be one vector of shape ({dim},), got shape {v.shape}")
    if v.shape[0] != dim:
        raise VectorError(f"{what} has dimension {v.shape[0]}; this space holds vectors of dimension {dim}")
    if not np.all(np.isfinite(v)):
        bad = int(v.size - np.count_nonzero(np.isfinite(v)))
        raise VectorError(f"{what} has {bad} NaN/inf value(s); only finite vectors can be searched")
    check_float32(v, what)  # searched as float32: a value beyond its range would be inf
    return v.astype(np.float32)


def query_vector(store, info, like, get: Optional[Callable]) -> Tuple[np.ndarray, Optional[str], str]:
    """The query vector, the key to exclude (or None) and what ``like`` was."""
    if isinstance(like, Embedding):
        _same_space(like.space, info.space, "the like embedding")
        return as_vector(like.vector, info.dim, "the like embedding's vector"), like.key, "embedding"
    if isinstance(like, str):
        key = like.strip().lower()
        if not _HEX64.match(key):
            raise SpecError(f"like={like!r} is a string but not a key (64 hex digits); pass a vector, a key, "
                            "an Embedding or a Request")
        emb = store.lookup_many([key], space=info.space)[0]
        if emb is None:
            raise NotStoredError(f"key {key} is not stored in space {info.space!r}")
        return as_vector(emb.vector, info.dim, f"the vector of key {key[:12]}…"), key, "key"
    if isinstance(like, (Request, ResolvedRequest)) or (isinstance(like, Mapping) and "spatial" in like):
        resolved = like if isinstance(like, ResolvedRequest) else resolve(like)
        _same_space(resolved.space, info.space, "the like request")
        if get is not None:
            emb = get(resolved)
        else:
            emb = store.lookup_many([resolved.key], space=info.space)[0]
        if emb is None:
            raise NotStoredError(f"the like request (key {resolved.key}) is not stored in space {info.space!r}; "
                                 "compute it first (Store.search computes a miss, or use store.get)")
        _same_space(emb.space, info.space, "the like request's answer")
        return as_vector(emb.vector, info.dim, "the like request's vector"), emb.key, "request"
    if isinstance(like, (list, tuple, np.ndarray)):
        return as_vector(like, info.dim), None, "vector"
    raise SpecError(f"like={like!r} is not accepted; pass a vector, a stored key (64 hex digits), an Embedding "
                    "or a Request")


def _same_space(got: str, want: str, what: str) -> None:
    if got != want:
        raise VectorError(f"{what} belongs to space {got!r} but the search runs in space {want!r}; "
                          "spaces are never mixed (their vectors are not comparable)")


def _date_literal(d: date) -> str:
    return f"date '{d.isoformat()}'"


def temporal_window(temporal) -> Tuple[date, date]:
    """The half-open window ``[start, end)`` of a temporal filter (TemporalSpec, its dict, a year,
    ``"2022"`` or ``"START/END"``)."""
    if isinstance(temporal, str):
        spec = parse_time(temporal)
    elif isinstance(temporal, (int, np.integer)) and not isinstance(temporal, bool):
        spec = TemporalSpec.year(int(temporal))
    else:
        spec = coerce_spec(temporal, TemporalSpec)
    return spec.window()


def temporal_clause(temporal, hints: Optional[Mapping] = None) -> str:
    """Rows whose window ``[start_date, end_date)`` overlaps ``temporal``'s.

    A window that covers a large part of the space's time span is tested while
    scanning (``CAST(...)`` keeps Lance off the date indexes, whose large
    answers are slow to intersect); a short one within a long span uses the
    indexes.
    """
    start, end = temporal_window(temporal)
    indexed = False
    if hints and hints.get("start") and hints.get("end"):
        try:
            span = (date.fromisoformat(hints["end"]) - date.fromisoformat(hints["start"])).days
            indexed = span > 0 and (end - start).days / span < SMALL_SHARE
        except (TypeError, ValueError):
            indexed = False
    if indexed:
        return f"start_date < {_date_literal(end)} AND end_date > {_date_literal(start)}"
    return (f"CAST(start_date AS DATE) < {_date_literal(end)} AND "
            f"CAST(end_date AS DATE) > {_date_literal(start)}")


_WHERE_REFUSED = re.compile(
    r"\b(select|insert|update|delete|drop|create|alter|attach|detach|copy|pragma|union|into|grant|revoke|"
    r"truncate|merge|call|exec|execute|load|install|export|import|with)\b",
    re.IGNORECASE,
)
_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")


def check_where(where, columns: Optional[Sequence[str]] = None) -> str:
    """Refuse what is plainly not a filter predicate on stored columns; Lance parses the rest.

    ``columns`` (the space's :func:`filter_columns`) are named in the error for a
    column that is internal to Lance (``_rowid``, ``_rowaddr``, ...)."""
    if not isinstance(where, str) or not where.strip():
        raise where_error(f"where={where!r} must be a non-empty SQL predicate such as \"year = 2023\"")
    if len(where) > 10_000:
        raise where_error(f"where has {len(where)} characters; at most 10000 are accepted")
    bare = _QUOTED.sub("''", where)
    if bare.count("'") % 2 or bare.count('"') % 2:
        raise where_error(f"where={where!r} has an unclosed quote")
    if ";" in bare or "--" in bare or "/*" in bare:
        raise where_error(f"where={where!r} is refused: ';' and SQL comments are not part of a filter predicate")
    word = _WHERE_REFUSED.search(bare)
    if word:
        raise where_error(f"where={where!r} is refused: {word.group(0)!r} is not part of a filter predicate; "
                          "write a condition on stored columns, e.g. \"year = 2023\"")
    internal = _INTERNAL_COLUMN.search(_LITERALS.sub("''", where))  # "_rowid" quoted is still a column
    if internal:
        listed = f"; the columns you may filter on: {list(columns)}" if columns is not None else ""
        raise where_error(f"where={where!r} names {internal.group(1)!r}, a column internal to LanceDB, not a "
                          f"stored column{listed}")
    depth = 0
    for ch in bare:
        depth += ch == "("
        depth -= ch == ")"
        if depth < 0:
            break
    if depth != 0:
        raise where_error(f"where={where!r} has unbalanced parentheses")
    return where.strip()


_LITERALS = re.compile(r"'(?:[^']|'')*'")
_INTERNAL_COLUMN = re.compile(r"(?<![A-Za-z0-9_])(_row\w*|_distance|_score)(?![A-Za-z0-9_])", re.IGNORECASE)


__all__ = [
    "NotStoredError",
    "RESULT_COLUMNS",
    "RESULT_SCHEMA",
    "SETTINGS_KEY",
    "SearchResult",
    "as_vector",
    "check_metric",
    "check_where",
    "filter_columns",
    "explain",
    "fetch_k",
    "nearest_query",
    "read_settings",
    "search",
    "settings_of",
    "temporal_clause",
]
