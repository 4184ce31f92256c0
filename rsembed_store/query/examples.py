"""Search by several examples: positives, negatives and text, combined into one ranking.

"Find places like these, but not like those" is how people search a map: they
mark a few cells as positive, a few as negative, and want the places that share
what the positives have in common. :func:`search_examples` takes

- ``like``: one example or a list of them (vectors, stored keys,
  :class:`~rsembed_store.embedding.Embedding` objects or requests, exactly as
  :func:`~rsembed_store.query.search.search` takes one), or a 2-D array of
  vectors;
- ``negatives``: a list of examples the results should not resemble;
- ``text``: a phrase, turned into a vector of the space by the model's text
  tower (models that declare ``ModelInfo.text``; see :func:`text_vector`);

and combines them in one of :data:`COMBINES` ways:

``centroid``
    the mean of the positives minus a quarter of the mean of the negatives
    (Rocchio's relevance-feedback query), searched with
    the space's metric (rows unit-normalised first in a cosine space, and the
    result normalised). Served by the vector index or the serving tier, so it
    is as fast as a one-example search.
``linear``
    a small L2-regularised logistic regression trained in numpy on the
    positives (label 1) against the negatives and :data:`BACKGROUND_ROWS`
    random rows of the space (label 0). Its score ``w . x`` ranks every row;
    the search runs exactly with the ``dot`` metric, so each result's
    ``distance`` is ``1 - w . x`` and the result's ``metric`` is ``dot``. The
    exact scan reads every row that passes the filters: fine for spaces up to a
    few million rows (about 0.1 s per 100,000 rows of 64-d vectors here).

``scripts/bench_examples.py`` measures which finds more same-class cells on the
synthetic scene (the figures are in docs/search.md); :data:`DEFAULT_COMBINE`
is the winner. Every example's and negative's own row is left out of the
results when ``exclude_self`` holds. Like :func:`search`, this is safe to call
from many threads: it keeps no state but the text towers' cache, which is locked.
"""

from __future__ import annotations

import threading
import time
from numbers import Number
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import RsEmbedStoreError, SpecError, VectorError
from .search import MAX_K, SearchResult, as_vector, check_k, query_vector, search

COMBINES = ("centroid", "linear")
DEFAULT_COMBINE = "linear"
MAX_EXAMPLES = 1000  # positives and negatives together
BACKGROUND_ROWS = 256  # random rows of the space the linear model learns as "not this"
MAX_TEXT_CHARS = 1000
# how much the negatives' mean is taken away in the centroid (Rocchio's gamma; his SMART experiments and
# later practice use 0.15-0.25 against 1 for the positives): 1.0 over-corrected on the synthetic scene
# (precision@20 0.79 for spectral with 3 positives and 3 negatives, 0.25 gave 1.0; scripts/bench_examples.py)
NEGATIVE_WEIGHT = 0.25
_RIDGE = 1.0  # L2 penalty of the linear model, on standardised features
_NEWTON_STEPS = 30


def is_many(like: Any) -> bool:
    """Whether ``like`` names several examples: a list/tuple whose items are not all numbers, or a
    2-D array (one vector per row). A flat list of numbers is one vector."""
    if isinstance(like, np.ndarray):
        return like.ndim == 2
    if isinstance(like, (list, tuple)):
        return not all(isinstance(x, Number) and not isinstance(x, bool) for x in like) or not like
    return False


def check_combine(combine: Optional[str]) -> str:
    """``combine`` checked (``None``: :data:`DEFAULT_COMBINE`)."""
    if combine is None:
        return DEFAULT_COMBINE
    if not isinstance(combine, str) or combine.lower() not in COMBINES:
        raise SpecError(f"combine={combine!r} is not accepted; use one of {list(COMBINES)}")
    return combine.lower()


def _items(value: Any, what: str) -> list:
    if isinstance(value, np.ndarray):
        if value.ndim != 2:
            raise VectorError(f"{what} as an array must be 2-D (one vector per row), got shape {value.shape}")
        return list(value)
    if not isinstance(value, (list, tuple)):
        raise SpecError(f"{what}={_short(value)} is not accepted; give a list of examples (vectors, keys, "
                        "Embeddings or requests)")
    return list(value)


def _renamed(exc: RsEmbedStoreError, where: str) -> RsEmbedStoreError:
    """The same error with ``where`` (e.g. ``like[2]``) in front, so the bad item is named."""
    try:
        err = type(exc)(f"{where}: {exc}")
    except TypeError:  # an error class with other constructor arguments: keep it as it is
        return exc
    err.field = where
    return err


def example_vectors(store, info, items: Sequence, get: Optional[Callable], what: str
                    ) -> Tuple[np.ndarray, List[str]]:
    """``(n, D)`` float32 vectors of the examples and the keys of those that are stored rows."""
    vectors, keys = [], []
    for i, item in enumerate(items):
        try:
            v, key, _ = query_vector(store, info, item, get)
        except RsEmbedStoreError as exc:
            raise _renamed(exc, f"{what}[{i}]") from None
        vectors.append(v)
        if key is not None:
            keys.append(key)
    return np.stack(vectors).astype(np.float32), keys


# ---------------------------------------------------------------- combining


def _unit(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1.0)


def centroid_vector(P: np.ndarray, N: Optional[np.ndarray], metric: str) -> np.ndarray:
    """The positives' mean minus :data:`NEGATIVE_WEIGHT` times the negatives' mean (Rocchio's query).

    cosine: rows are unit vectors first and the result is normalised (each
    example weighs the same whatever its length). dot: plain means. l2: the
    positives' mean moved away from the negatives' mean by that share of the
    gap between them (a difference of means is not a place in an l2 space).
    """
    P = P.astype(np.float64)
    N = None if N is None or not len(N) else N.astype(np.float64)
    g = NEGATIVE_WEIGHT
    if metric == "cosine":
        q = _unit(P).mean(axis=0) - (g * _unit(N).mean(axis=0) if N is not None else 0.0)
        norm = np.linalg.norm(q)
        if not norm > 1e-12:
            raise VectorError("the positives' and negatives' mean directions cancel out: nothing is left to "
                              "search for; drop some negatives or add positives")
        return (q / norm).astype(np.float32)
    mean_p = P.mean(axis=0)
    if N is None:
        return mean_p.astype(np.float32)
    if metric == "l2":
        return (mean_p + g * (mean_p - N.mean(axis=0))).astype(np.float32)
    q = mean_p - g * N.mean(axis=0)
    if not np.any(q):
        raise VectorError("the positives' mean minus the negatives' is all zeros: nothing is left to search for")
    return q.astype(np.float32)


def linear_vector(P: np.ndarray, N: Optional[np.ndarray], background: np.ndarray) -> np.ndarray:
    """The weights ``w`` of a logistic regression of positives (1) against negatives and background (0),
    as a vector in the space's units: rows rank by ``w . x``.

    Positives together weigh as much as all negatives; explicit negatives weigh
    as much as the background rows together (they are what the user said no
    to). Features are standardised by the training rows' mean and spread, the
    model fitted by Newton steps with an L2 penalty (each step an n x n
    solve over the training rows, so its cost does not grow with the dimension cubed), then ``w`` is mapped back
    to the stored vectors' units (the intercept does not change a ranking).
    """
    parts = [P, background] + ([N] if N is not None and len(N) else [])
    X = np.vstack(parts).astype(np.float64)
    y = np.concatenate([np.ones(len(P)), np.zeros(len(X) - len(P))])
    wts = np.concatenate([np.full(len(P), 1.0 / len(P)), np.full(len(background), 1.0 / max(len(background), 1))])
    if N is not None and len(N):
        wts = np.concatenate([wts, np.full(len(N), 1.0 / len(N))])
        wts[len(P):] *= 0.5  # negatives (background + explicit) together weigh as much as the positives
    mu, sd = X.mean(axis=0), X.std(axis=0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    Z = np.hstack([(X - mu) / sd, np.ones((len(X), 1))])
    beta = np.zeros(Z.shape[1])
    ridge = np.full(Z.shape[1], _RIDGE / len(X))
    ridge[-1] = 1e-6  # the intercept is (all but) not penalised
    inv_ridge = 1.0 / ridge
    eye = np.eye(len(X))
    for _ in range(_NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(-np.clip(Z @ beta, -30, 30)))
        grad = Z.T @ (wts * (p - y)) + ridge * beta
        # the Newton step solves (diag(ridge) + U'U) step = grad with U = sqrt(s) Z; there are far fewer
        # rows than dimensions, so it goes through the rows' n x n system (Woodbury), not a D x D one
        U = np.sqrt(wts * p * (1 - p))[:, None] * Z
        a = inv_ridge * grad
        step = a - inv_ridge * (U.T @ np.linalg.solve(eye + (U * inv_ridge) @ U.T, U @ a))
        beta -= step
        if np.max(np.abs(step)) < 1e-6:
            break
    w = beta[:-1] / sd
    if not np.all(np.isfinite(w)) or not np.any(w):
        raise VectorError("the linear model found no direction separating the positives from the negatives")
    return w.astype(np.float32)


def background_rows(store, space: str, dim: int, exclude: Sequence[str], n: int = BACKGROUND_ROWS,
                    seed: int = 0) -> np.ndarray:
    """Up to ``n`` rows of the space drawn at random (seeded, so a search is repeatable), examples left out."""
    ds = store.dataset(space)
    total = ds.count_rows()
    if total == 0:
        return np.zeros((0, dim), np.float32)
    rng = np.random.default_rng(seed)
    take = min(total, n + len(exclude))
    idx = np.sort(rng.choice(total, size=take, replace=False))
    table = ds.take(idx.tolist(), columns=["key", "vector"])
    skip = set(exclude)
    keep = [i for i, key in enumerate(table.column("key").to_pylist()) if key not in skip][:n]
    flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    X = np.asarray(flat, np.float32).reshape(-1, dim)[keep]
    return X[np.all(np.isfinite(X), axis=1)]


# ---------------------------------------------------------------- text


_text_models: Dict[tuple, Any] = {}
_text_lock = threading.Lock()


def text_models() -> List[str]:
    """Registered models that declare a text tower (``ModelInfo.text``)."""
    from ..registry import model_class, model_names

    out = []
    for name in model_names():
        try:
            if getattr(model_class(name).info, "text", False):
                out.append(name)
        except Exception:  # noqa: BLE001 - a model whose module cannot load has no usable tower
            continue
    return out


def text_vector(info, text: Any, config: Optional[dict] = None) -> np.ndarray:
    """The vector of phrase ``text`` in the space ``info`` describes, from the model's text tower.

    The model is built once per (model, revision, device) and kept; the space's
    revision must be the registered model's (the text tower must come from the
    same weights as the stored image embeddings).
    """
    from ..registry import model_class

    if not isinstance(text, str) or not text.strip():
        raise SpecError(f"text={_short(text)} is not accepted; give a non-empty phrase such as 'a forest'")
    if len(text) > MAX_TEXT_CHARS:
        raise SpecError(f"text has {len(text)} characters; at most {MAX_TEXT_CHARS} are accepted")
    cls = model_class(info.model)
    if not getattr(cls.info, "text", False) or not hasattr(cls, "embed_text"):
        raise SpecError(f"model {info.model!r} has no text tower, so text search is not possible in its space; "
                        f"models with one: {text_models()}")
    if cls.info.revision != info.revision:
        raise SpecError(f"text search in space {info.space!r} needs the text tower of revision {info.revision}, "
                        f"but model {info.model!r} is registered at revision {cls.info.revision}")
    config = dict(config or {})
    cache_key = (cls, info.revision, str(config.get("device")))
    with _text_lock:
        model = _text_models.get(cache_key)
        if model is None:
            model = _text_models[cache_key] = cls(config)  # MissingExtraError when torch is missing
    vectors = np.asarray(model.embed_text([text.strip()]), np.float32)
    if vectors.shape != (1, info.dim):
        raise VectorError(f"model {info.model!r}'s text tower gave shape {vectors.shape}; expected (1, {info.dim})")
    return as_vector(vectors[0], info.dim, f"the vector of text {text.strip()[:40]!r}")


# ---------------------------------------------------------------- the search


def search_examples(store, model: str, like=None, *, negatives=None, text: Optional[str] = None,
                    combine: Optional[str] = None, k: int = 10, temporal=None, within=None,
                    where: Optional[str] = None, exclude_self: bool = True, metric: Optional[str] = None,
                    revision: Optional[str] = None, get: Optional[Callable] = None,
                    text_config: Optional[dict] = None) -> SearchResult:
    """The ``k`` rows of ``model``'s space that best match the examples (see the module docstring).

    Exactly one of ``like`` and ``text``. ``negatives`` need positives (``like``
    or ``text``). ``combine=None`` means :data:`DEFAULT_COMBINE`; callers that
    want one example without negatives to stay a plain nearest-neighbour search
    use :func:`wants_examples` to route (as ``Store.search`` does).
    """
    t0 = time.perf_counter()
    k = check_k(k)
    combine_ = check_combine(combine)
    if (like is None) == (text is None):
        raise SpecError("give exactly one of like (one example or a list of them) and text (a phrase); got "
                        + ("both" if like is not None else "neither"))
    info = store.space_for(model, revision)
    from .search import check_metric

    metric_ = check_metric(metric if metric is not None else info.metric)
    if text is not None:
        positives = text_vector(info, text, text_config)[None, :]
        own: List[str] = []
        like_kind = "text"
    else:
        items = _items(like, "like") if is_many(like) else [like]
        if not items:
            raise SpecError("like is an empty list; give at least one example (a vector, key, Embedding or "
                            "request)")
        try:
            positives, own = example_vectors(store, info, items, get, "like")
        except RsEmbedStoreError as exc:
            if is_many(like):
                raise
            raise _plain(exc) from None  # one example: name it as a plain search would
        like_kind = "examples" if len(items) > 1 else "example"
    neg = None
    if negatives is not None:
        neg_items = _items(negatives, "negatives")
        if neg_items:
            neg, neg_keys = example_vectors(store, info, neg_items, get, "negatives")
            own = own + neg_keys
    count = len(positives) + (0 if neg is None else len(neg))
    if count > MAX_EXAMPLES:
        raise SpecError(f"{count} examples (positives and negatives) were given; at most {MAX_EXAMPLES} are "
                        "accepted")
    exclude = sorted(set(own)) if exclude_self else []
    fetch = min(MAX_K, k + len(exclude))
    plan: Dict[str, Any] = {"like": like_kind, "positives": len(positives),
                            "negatives": 0 if neg is None else len(neg), "combine": combine_}
    if combine_ == "linear":
        background = background_rows(store, info.space, info.dim, own)
        query = linear_vector(positives, neg, background)
        plan["background_rows"] = len(background)
        result = search(store, model, query, k=fetch, temporal=temporal, within=within, where=where,
                        exclude_self=False, metric="dot", revision=revision)
    else:
        query = centroid_vector(positives, neg, metric_)
        result = search(store, model, query, k=fetch, temporal=temporal, within=within, where=where,
                        exclude_self=False, metric=metric_, revision=revision)
    skip = set(exclude)
    keep = [i for i, row in enumerate(result.rows) if row["key"] not in skip][:k]
    rows = [result.rows[i] for i in keep]
    canonical = [result.canonical[i] for i in keep if i < len(result.canonical)]
    inner = {name: value for name, value in result.plan.items() if name != "like"}
    return SearchResult(rows=rows, space=result.space, model=result.model, metric=result.metric, k=k,
                        filter=result.filter, plan={**plan, **inner}, seconds=time.perf_counter() - t0,
                        canonical=canonical)


def wants_examples(like, negatives, text, combine) -> bool:
    """Whether a search goes through :func:`search_examples`: several examples, negatives, text, or an
    explicit ``combine``. One example alone stays a plain nearest-neighbour :func:`search`."""
    return text is not None or is_many(like) or negatives is not None or combine is not None


def _plain(exc: RsEmbedStoreError) -> RsEmbedStoreError:
    text = str(exc)
    if text.startswith("like[0]: "):
        try:
            err = type(exc)(text[len("like[0]: "):])
        except TypeError:
            return exc
        err.field = "like"
        return err
    return exc


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


__all__ = [
    "BACKGROUND_ROWS",
    "COMBINES",
    "DEFAULT_COMBINE",
    "MAX_EXAMPLES",
    "NEGATIVE_WEIGHT",
    "background_rows",
    "centroid_vector",
    "check_combine",
    "is_many",
    "linear_vector",
    "search_examples",
    "text_models",
    "text_vector",
    "wants_examples",
]
