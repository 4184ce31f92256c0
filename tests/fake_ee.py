"""A fake of the Earth Engine client (the ``ee`` module), faked exactly where our code calls it.

Our code builds expressions with ``ee.ImageCollection(...).filterBounds(...)...`` and
sends them with ``ee.data.computePixels(request)``. Here every call builds a node of a
recorded expression tree (plain nested tuples such as ``("filterDate", <collection>,
"2022-06-01", "2022-09-01")``), and ``data.computePixels`` checks the request the way
the service does (NUMPY_NDARRAY format, grid, band ids, the 48 MiB / 32768 px limits),
records it, then evaluates the tree over a small catalogue of synthetic scenes on the
requested grid and answers in the real response format: a NumPy structured array of
shape (H, W) with one float32 field per band id. Scripted errors (the real texts: 429,
"Too many concurrent aggregations", ...) can be queued before the next calls.

Semantics follow the Earth Engine documentation: ``filterDate`` end is exclusive,
``Filter.lte`` passes images without the property (it is ``not(greaterThan)``),
``mosaic`` puts the last image on top, ``median`` is per band over unmasked values,
and the composite of an empty collection has no bands, so selecting from it fails
with "Image.select: Pattern 'B4' did not match any bands.".
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
from rasterio.warp import transform_bounds

NO_PROJECT = "ee.Initialize: no project found. Call with project= or see http://goo.gle/ee-auth."
NO_CREDENTIALS = (
    "Please authorize access to your Earth Engine account by running\n\nearthengine authenticate\n\n"
    "in your command line, or ee.Authenticate() in Python, and then retry."
)
TOO_MANY_REQUESTS = "Too Many Requests (HTTP 429): Quota exceeded for quota metric 'Concurrent requests'."
TOO_MANY_AGGREGATIONS = "Too many concurrent aggregations."


class EEException(Exception):
    """The one exception type of the real client (``ee.EEException``)."""


# ------------------------------------------------------------------ scenes


@dataclass
class Scene:
    """A synthetic image: bands are constants or functions of the pixel-centre ground coordinates.

    ``bands``: name -> number or ``f(x, y) -> array`` (x, y in the request grid's CRS).
    ``valid``: optional ``f(x, y) -> bool array`` (False = masked in every band).
    ``footprint``: optional lon/lat box (w, s, e, n) tested by ``filterBounds``.
    """

    id: str
    date: str
    bands: Dict[str, Union[float, Callable]]
    props: Dict[str, Any] = field(default_factory=dict)
    footprint: Optional[Tuple[float, float, float, float]] = None
    valid: Optional[Callable] = None

    def properties(self) -> Dict[str, Any]:
        t = datetime.fromisoformat(self.date).replace(tzinfo=timezone.utc)
        return {"system:index": self.id, "system:time_start": int(t.timestamp() * 1000), **self.props}


# ------------------------------------------------------------------ expressions


class Expr:
    """One recorded expression; ``node`` is its tree as nested tuples."""

    def __init__(self, fake: "FakeEE", node: tuple):
        self._fake = fake
        self.node = node

    def _n(self, op, *args) -> "Expr":
        return Expr(self._fake, (op, self.node) + tuple(_plain(a) for a in args))

    def __repr__(self):
        return f"Expr({self.node!r})"

    # collections
    def filterBounds(self, geometry):
        return self._n("filterBounds", geometry)

    def filterDate(self, start, end=None):
        return self._n("filterDate", start, end)

    def filter(self, flt):
        return self._n("filter", flt)

    def map(self, fn):
        body = fn(Expr(self._fake, ("var",)))
        return self._n("map", body)

    def sort(self, prop, ascending=True):
        return self._n("sort", prop, ascending)

    def median(self):
        return self._n("median")

    def mosaic(self):
        return self._n("mosaic")

    def size(self):
        return self._n("size")

    # images and numbers
    def select(self, selectors, names=None):
        return self._n("select", tuple(selectors), None if names is None else tuple(names))

    def resample(self, mode="bilinear"):
        return self._n("resample", mode)

    def addBands(self, other):
        return self._n("addBands", other)

    def rename(self, names):
        return self._n("rename", tuple(names) if not isinstance(names, str) else (names,))

    def updateMask(self, mask):
        return self._n("updateMask", mask)

    def toFloat(self):
        return self._n("toFloat")

    def mask(self):
        return self._n("mask")

    def reduce(self, reducer):
        return self._n("reduce", reducer)

    def unmask(self, value=None, sameFootprint=True):
        return self._n("unmask", value, sameFootprint)

    def bitwiseAnd(self, value):
        return self._n("bitwiseAnd", value)

    def eq(self, value):
        return self._n("eq", value)

    def merge(self, other):
        return self._n("merge", other)

    def gt(self, value):
        return self._n("gt", value)


def _plain(value):
    if isinstance(value, Expr):
        return value.node
    if isinstance(value, list):
        return tuple(_plain(v) for v in value)
    return value


def find(node, op: str) -> List[tuple]:
    """Every sub-tree of ``node`` whose operation is ``op`` (depth first, outermost first)."""
    out = []
    if isinstance(node, tuple) and node and isinstance(node[0], str):
        if node[0] == op:
            out.append(node)
        for child in node[1:]:
            out.extend(find(child, op))
    elif isinstance(node, tuple):
        for child in node:
            out.extend(find(child, op))
    return out


def chain(node) -> List[str]:
    """The operations along the first-argument spine, innermost first: ``['load', 'filterBounds', ...]``."""
    ops = []
    while isinstance(node, tuple) and node and isinstance(node[0], str):
        ops.append(node[0])
        if len(node) < 2 or not isinstance(node[1], tuple):
            break
        node = node[1]
    return ops[::-1]


def filters(collection_node) -> List[tuple]:
    """The filters applied along a collection's chain, innermost (first applied) first."""
    return [find_node[2] for find_node in _spine(collection_node) if find_node[0] == "filter"][::-1]


def _spine(node):
    while isinstance(node, tuple) and node and isinstance(node[0], str):
        yield node
        if len(node) < 2 or not isinstance(node[1], tuple):
            break
        node = node[1]


# ------------------------------------------------------------------ the module's namespaces


class _ImageNS:
    def __init__(self, fake):
        self._fake = fake

    def __call__(self, value):
        return Expr(self._fake, ("Image", _plain(value)))

    def constant(self, value):
        return Expr(self._fake, ("constant", _plain(value)))


class _FilterNS:
    def __init__(self, fake):
        self._fake = fake

    def lte(self, name, value):
        return Expr(self._fake, ("Filter.lte", name, value))

    def eq(self, name, value):
        return Expr(self._fake, ("Filter.eq", name, value))

    def listContains(self, leftField=None, rightValue=None):
        return Expr(self._fake, ("Filter.listContains", leftField, rightValue))


class _ReducerNS:
    def __init__(self, fake):
        self._fake = fake

    def min(self):
        return Expr(self._fake, ("Reducer.min",))

    def median(self):
        return Expr(self._fake, ("Reducer.median",))


class _GeometryNS:
    def __init__(self, fake):
        self._fake = fake

    def Rectangle(self, coords=None, proj=None, geodesic=None):
        return Expr(self._fake, ("Rectangle", tuple(float(c) for c in coords), proj, geodesic))


class _AlgorithmsNS:
    def __init__(self, fake):
        self._fake = fake

    def If(self, condition, trueCase, falseCase):
        return Expr(self._fake, ("If", _plain(condition), _plain(trueCase), _plain(falseCase)))


class _DataNS:
    def __init__(self, fake):
        self._fake = fake

    def is_initialized(self) -> bool:
        return self._fake.initialized

    def computePixels(self, params):
        return self._fake._compute_pixels(params)


# ------------------------------------------------------------------ the fake module


class FakeEE:
    """An ``ee``-like module: ``Initialize``, ``ServiceAccountCredentials``, ``ImageCollection``,
    ``Image``, ``Filter``, ``Reducer``, ``Geometry``, ``Algorithms``, ``data.computePixels``."""

    EEException = EEException

    def __init__(self, scenes: Optional[Dict[str, List[Scene]]] = None, *, credentials: bool = True,
                 credentials_project: Optional[str] = None, max_bytes: int = 50_331_648,
                 max_side: int = 32_768, init_delay_s: float = 0.0):
        self.scenes = dict(scenes or {})
        self.credentials = credentials
        self.credentials_project = credentials_project
        self.max_bytes = max_bytes
        self.max_side = max_side
        self.init_delay_s = init_delay_s
        self.initialized = False
        self.init_calls: List[dict] = []
        self.key_files: List[Tuple[Optional[str], Optional[str]]] = []
        self.requests: List[dict] = []
        self.errors: List[BaseException] = []
        self._lock = threading.Lock()
        self.Image = _ImageNS(self)
        self.Filter = _FilterNS(self)
        self.Reducer = _ReducerNS(self)
        self.Geometry = _GeometryNS(self)
        self.Algorithms = _AlgorithmsNS(self)
        self.data = _DataNS(self)

    # -- the calls our code makes

    def ImageCollection(self, collection_id):
        return Expr(self, ("load", collection_id))

    def ServiceAccountCredentials(self, email=None, key_file=None, key_data=None):
        self.key_files.append((email, key_file))
        return ("service-account", email, key_file)

    def Initialize(self, credentials="persistent", url=None, cloud_api_key=None, http_transport=None, project=None):
        if self.init_delay_s:
            time.sleep(self.init_delay_s)  # widen the window for races
        with self._lock:
            self.init_calls.append({"credentials": credentials, "url": url, "project": project})
        service_account = isinstance(credentials, tuple) and credentials[0] == "service-account"
        if credentials == "persistent" and not self.credentials:
            raise EEException(NO_CREDENTIALS)
        if not (project or self.credentials_project or service_account):
            raise EEException(NO_PROJECT)
        self.initialized = True

    # -- test helpers

    def fail_next(self, *errors: BaseException) -> None:
        """Raise these (in order) from the next computePixels calls, before anything is computed."""
        with self._lock:
            self.errors.extend(errors)

    @property
    def last(self) -> dict:
        return self.requests[-1]

    def windows(self) -> List[Tuple[str, str]]:
        """The ``filterDate`` window of each recorded computePixels call, in call order: a
        time-series request sends one call per frame (and per modality)."""
        return [tuple(find(r["tree"], "filterDate")[0][2:]) for r in self.requests]

    # -- the service

    def _compute_pixels(self, params: dict):
        allowed = {"expression", "fileFormat", "grid", "bandIds", "visualizationOptions", "workloadTag"}
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise EEException(f"Invalid JSON payload received. Unknown name(s) {unknown}")
        with self._lock:
            if not self.initialized:
                raise EEException("Earth Engine client library not initialized. See http://goo.gle/ee-auth.")
            self.requests.append({"params": dict(params), "tree": params["expression"].node})
            error = self.errors.pop(0) if self.errors else None
        if error is not None:
            raise error
        if params.get("fileFormat") != "NUMPY_NDARRAY":
            raise EEException(f"this fake answers only fileFormat NUMPY_NDARRAY, got {params.get('fileFormat')!r}")
        grid = params["grid"]
        w, h = int(grid["dimensions"]["width"]), int(grid["dimensions"]["height"])
        band_ids = list(params["bandIds"])
        if w > self.max_side or h > self.max_side:
            raise EEException(f"Pixel grid dimensions ({w}x{h}) must be less than or equal to {self.max_side}.")
        size = w * h * len(band_ids) * 4
        if size > self.max_bytes:
            raise EEException(f"Total request size ({size} bytes) must be less than or equal to {self.max_bytes} bytes.")
        at = grid["affineTransform"]
        assert at["shearX"] == 0 and at["shearY"] == 0
        cols = at["translateX"] + (np.arange(w) + 0.5) * at["scaleX"]
        rows = at["translateY"] + (np.arange(h) + 0.5) * at["scaleY"]
        x, y = np.meshgrid(cols, rows)
        ctx = _Context(self, x, y, grid["crsCode"], {})
        image = ctx.image(params["expression"].node)
        out = np.zeros((h, w), dtype=[(b, "<f4") for b in band_ids])
        for b in band_ids:
            if b not in image:
                raise EEException(f"Image.select: Pattern '{b}' did not match any bands.")
            vals, mask = image[b]
            out[b] = np.where(mask, vals, 0.0)
        return out


# ------------------------------------------------------------------ evaluation on a grid

Img = Dict[str, Tuple[np.ndarray, np.ndarray]]  # band -> (values, mask)


@dataclass
class _Context:
    fake: FakeEE
    x: np.ndarray
    y: np.ndarray
    crs: str
    env: dict

    def full(self, value) -> np.ndarray:
        return np.full(self.x.shape, float(value))

    def value(self, node):
        """A number, boolean or other constant (numbers may be computed: size, gt)."""
        if not isinstance(node, tuple) or not node or not isinstance(node[0], str):
            return node
        op = node[0]
        if op == "size":
            return len(self.collection(node[1]))
        if op == "gt":
            return self.value(node[1]) > node[2]
        raise EEException(f"cannot use {op} as a number")

    def collection(self, node) -> List[Tuple[dict, Img]]:
        op = node[0]
        if op == "load":
            if node[1] not in self.fake.scenes:
                raise EEException(
                    f"ImageCollection.load: ImageCollection asset '{node[1]}' not found "
                    "(does not exist or caller does not have access)."
                )
            return [(sc.properties(), self.scene_image(sc), sc) for sc in self.fake.scenes[node[1]]]
        if op == "merge":
            return self.collection(node[1]) + self.collection(node[2])
        items = self.collection(node[1])
        if op == "filterBounds":
            box = self.geometry_lonlat(node[2])
            return [it for it in items if it[2].footprint is None or _overlap(it[2].footprint, box)]
        if op == "filterDate":
            start, end = _day(node[2]), _day(node[3])
            return [it for it in items if start <= _day(it[2].date) < end]
        if op == "filter":
            return [it for it in items if _passes(node[2], it[0])]
        if op == "sort":
            return sorted(items, key=lambda it: it[0][node[2]], reverse=not node[3])
        if op == "map":
            out = []
            for props, img, sc in items:
                ctx = _Context(self.fake, self.x, self.y, self.crs, {"var": img})
                out.append((props, ctx.image(node[2]), sc))
            return out
        raise EEException(f"{op} does not make a collection")

    def scene_image(self, sc: Scene) -> Img:
        ok = np.ones(self.x.shape, bool) if sc.valid is None else np.asarray(sc.valid(self.x, self.y), bool)
        out = {}
        for name, spec in sc.bands.items():
            vals = spec(self.x, self.y) if callable(spec) else self.full(spec)
            out[name] = (np.asarray(vals, float), ok.copy())
        return out

    def geometry_lonlat(self, node):
        assert node[0] == "Rectangle"
        x0, y0, x1, y1 = node[1]
        return transform_bounds(node[2] or "EPSG:4326", "EPSG:4326", x0, y0, x1, y1)

    def image(self, node) -> Img:
        op = node[0]
        if op == "var":
            return self.env["var"]
        if op == "Image":
            return self.image(node[1])
        if op == "If":
            return self.image(node[2] if self.value(node[1]) else node[3])
        if op == "constant":
            value = node[1]
            if isinstance(value, tuple) and not (value and isinstance(value[0], str)):
                return {f"constant_{i}": (self.full(v), self.full(1) > 0) for i, v in enumerate(value)}
            return {"constant": (self.full(self.value(value)), self.full(1) > 0)}
        if op in ("median", "mosaic"):
            return _composite([img for _, img, _ in self.collection(node[1])], op)
        src = self.image(node[1])
        if op == "select":
            selectors, names = node[2], node[3] or node[2]
            missing = [s for s in selectors if s not in src]
            if missing:
                raise EEException(f"Image.select: Pattern '{missing[0]}' did not match any bands.")
            return {n: src[s] for s, n in zip(selectors, names)}
        if op in ("resample", "toFloat"):
            return dict(src)
        if op == "rename":
            if len(node[2]) != len(src):
                raise EEException(f"Image.rename: Can't rename {len(src)} bands to {len(node[2])} names.")
            return {n: v for n, v in zip(node[2], src.values())}
        if op == "updateMask":
            if isinstance(node[2], (int, float)):
                return {k: (v, m & bool(node[2])) for k, (v, m) in src.items()}
            other = next(iter(self.image(node[2]).values()))
            return {k: (v, m & (other[0] != 0)) for k, (v, m) in src.items()}
        if op == "mask":
            return {k: (m.astype(float), np.ones_like(m)) for k, (v, m) in src.items()}
        if op == "reduce":
            assert node[2] == ("Reducer.min",)
            stack = np.stack([np.where(m, v, np.inf) for v, m in src.values()])
            anym = np.stack([m for _, m in src.values()]).any(axis=0)
            return {"min": (np.where(anym, stack.min(axis=0), 0.0), anym)}
        if op == "gt":
            return {k: ((v > node[2]).astype(float), m) for k, (v, m) in src.items()}
        if op == "bitwiseAnd":
            return {k: ((v.astype(np.int64) & int(node[2])).astype(float), m) for k, (v, m) in src.items()}
        if op == "eq":
            return {k: ((v == node[2]).astype(float), m) for k, (v, m) in src.items()}
        if op == "unmask":
            fill = 0.0 if node[2] is None else node[2]
            return {k: (np.where(m, v, fill), np.ones_like(m)) for k, (v, m) in src.items()}
        if op == "addBands":
            return {**src, **self.image(node[2])}
        raise EEException(f"the fake cannot evaluate image operation {op!r}")


def _composite(images: List[Img], how: str) -> Img:
    if not images:
        return {}
    names = list(images[0])
    out = {}
    for name in names:
        vals = np.stack([img[name][0] for img in images])
        masks = np.stack([img[name][1] for img in images])
        if how == "mosaic":  # the last image on top
            v, m = np.zeros(vals.shape[1:]), np.zeros(vals.shape[1:], bool)
            for k in range(len(images)):
                v = np.where(masks[k], vals[k], v)
                m |= masks[k]
            out[name] = (v, m)
        else:
            with np.errstate(all="ignore"):
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    med = np.nanmedian(np.where(masks, vals, np.nan), axis=0)
            seen = masks.any(axis=0)
            out[name] = (np.where(seen, med, 0.0), seen)
    return out


def _passes(flt: tuple, props: dict) -> bool:
    op, name, value = flt
    if op == "Filter.lte":
        return name not in props or not props[name] > value
    if op == "Filter.eq":
        return props.get(name) == value
    if op == "Filter.listContains":
        return value in (props.get(name) or [])
    raise EEException(f"the fake cannot evaluate filter {op!r}")


def _day(text) -> date:
    return date.fromisoformat(str(text)[:10])


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


__all__ = ["EEException", "Expr", "FakeEE", "NO_PROJECT", "Scene", "chain", "filters", "find"]


@contextmanager
def offline_real_ee(monkeypatch, gee_module, value: float):
    """The real ``ee`` library, initialised offline with its own test algorithm table, behind
    ``gee_module``; only ``ee.data.computePixels`` (the network) is replaced: it answers ``value``
    for every band (1.0 for our own ``rsembed_`` masks) and records each request's params.
    Yields ``(ee, sent)``; skips when earthengine-api is not installed."""
    import pytest

    ee = pytest.importorskip("ee")
    apitestcase = pytest.importorskip("ee.apitestcase")
    sent: List[dict] = []

    def compute_pixels(params):
        sent.append(params)
        g = params["grid"]["dimensions"]
        out = np.zeros((g["height"], g["width"]), dtype=[(b, "<f4") for b in params["bandIds"]])
        for b in params["bandIds"]:
            out[b] = 1.0 if b.startswith("rsembed_") else value
        return out

    monkeypatch.setattr(ee.data, "_install_cloud_api_resource", lambda: None)
    monkeypatch.setattr(ee.data, "getAlgorithms", apitestcase.GetAlgorithms)
    monkeypatch.setattr(ee.data, "computePixels", compute_pixels)
    monkeypatch.setattr(gee_module, "EE_MODULE", ee)
    ee.Reset()
    try:
        ee.Initialize(None, "", project="my-project")  # offline: no credentials, no network
        yield ee, sent
    finally:
        ee.Reset()
