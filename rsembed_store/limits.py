"""Size limits: requests too large to compute are refused before anything is fetched or allocated.

Three limits, one place, the same in Python, on the command line and over HTTP:

==================  ===============  =====================================================
limit               default          what it bounds
==================  ===============  =====================================================
``max_roi_pixels``  16,777,216       pixels (H x W) of the grid one request is read on:
                    (4096 x 4096)    imagery at the sensor's ``scale_m`` for on-the-fly
                                     models, the product's pixels for precomputed ones
``max_array_bytes`` 1,073,741,824    bytes of the largest array one answer is computed
                    (1 GiB)          from or returned as: C x T x H x W float32 pixels
                                     fetched for an on-the-fly model, D x H x W float32
                                     values read from a product (a grid answer's size)
``max_plan_cells``  5,000,000        H3 cells one plan (ingest) may cover
==================  ===============  =====================================================

Each is set, highest precedence first, by ``Store.open(config={"limits": {...}})``
(which also carries the CLI flags ``--max-roi-pixels``, ``--max-array-bytes`` and
``--max-plan-cells``), by the environment variables ``RSEMBED_STORE_MAX_ROI_PIXELS``,
``RSEMBED_STORE_MAX_ARRAY_BYTES`` and ``RSEMBED_STORE_MAX_PLAN_CELLS``, or by the
defaults above.

Sizes are estimated from the ROI's extent and the scale the model declares (the
sensor's ``scale_m``, a product's native resolution, a grid's ``scale_m``), with no
projection and no array built (:meth:`Model.footprint
<rsembed_store.model.Model.footprint>`), so a whole-world request is refused in
microseconds. The engine checks every request before its fetch or read (a refused
request is a per-request failure, as any other), the planner checks one request per
window before the cells are crossed with the windows, and the grid builder
(``ingest.grid.target_grid``) checks the exact pixel count before it
allocates the ROI mask. A refusal is a :class:`~rsembed_store.errors.LimitError`
(a ``SpecError``; HTTP 413 ``too_large``) naming the limit, the request's size and
how to raise the limit.

>>> Limits.from_config({"limits": {"max_roi_pixels": 1_000_000}}).max_roi_pixels
1000000
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional

from .errors import LimitError, SpecError

DEFAULT_MAX_ROI_PIXELS = 4096 * 4096
DEFAULT_MAX_ARRAY_BYTES = 1024**3
DEFAULT_MAX_PLAN_CELLS = 5_000_000

_EARTH_RADIUS_M = 6_371_008.8
_M_PER_DEG = _EARTH_RADIUS_M * math.pi / 180.0


def env_var(name: str) -> str:
    """The environment variable of limit ``name``: ``RSEMBED_STORE_MAX_ROI_PIXELS`` for ``max_roi_pixels``."""
    return "RSEMBED_STORE_" + name.upper()


def cli_flag(name: str) -> str:
    """The command-line flag of limit ``name``: ``--max-roi-pixels`` for ``max_roi_pixels``."""
    return "--" + name.replace("_", "-")


def how_to_raise(name: str) -> str:
    """The three ways to raise limit ``name``, for error messages."""
    python = f"Store.open(config={{'limits': {{'{name}': N}}}})"
    if name == "max_plan_cells":
        python = f"plan(..., max_cells=N) or {python}"
    return f"{python} in Python, rsembed-store {cli_flag(name)} N on the command line, or ${env_var(name)}"


def _positive_int(name: str, value: Any, source: str) -> int:
    """``value`` as a positive int (ints, integral floats such as 1e8, digit strings with ``_``)."""
    number: Any = value
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        try:
            number = int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                number = None
    if isinstance(number, float) and math.isfinite(number) and number.is_integer():
        number = int(number)
    if isinstance(number, bool) or not isinstance(number, int) or number <= 0:
        raise SpecError(f"{source} {name}={value!r} is not accepted; use a positive integer, e.g. "
                        f"{getattr(Limits, name):_}")
    return number


@dataclass(frozen=True)
class Limits:
    """The size limits in force (see the module docstring); immutable, cheap to build."""

    max_roi_pixels: int = DEFAULT_MAX_ROI_PIXELS
    max_array_bytes: int = DEFAULT_MAX_ARRAY_BYTES
    max_plan_cells: int = DEFAULT_MAX_PLAN_CELLS

    @classmethod
    def names(cls) -> tuple:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_config(cls, config: Optional[Mapping] = None) -> "Limits":
        """The limits of a store or run configuration: ``config["limits"]`` over the
        environment variables over the defaults. An unknown name or a value that is not a
        positive integer is a :class:`SpecError` naming it."""
        values = {}
        for name in cls.names():
            raw = os.environ.get(env_var(name), "").strip()
            if raw:
                values[name] = _positive_int(name, raw, f"${env_var(name)}:")
        given = (config or {}).get("limits") if isinstance(config, Mapping) else None
        if isinstance(given, Limits):
            return given
        if given is not None:
            if not isinstance(given, Mapping):
                raise SpecError(f"config 'limits'={given!r} must map limit names to positive integers, "
                                f"e.g. {{'max_roi_pixels': 16777216}}; names: {list(cls.names())}")
            unknown = sorted(str(k) for k in given if k not in cls.names())
            if unknown:
                raise SpecError(f"config 'limits' has unknown name(s) {unknown}; accepted: {list(cls.names())}")
            for name, value in given.items():
                if value is not None:
                    values[name] = _positive_int(name, value, "config limits:")
        return cls(**values)

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.names()}

    # ------------------------------------------------------------ checks

    def refuse(self, name: str, size: float, what: str, shrink: str) -> LimitError:
        """The error for ``what`` (a phrase ending in the request's size) over limit ``name``;
        ``shrink`` says how to ask for less."""
        maximum = getattr(self, name)
        return LimitError(
            f"{what}, more than the limit {name}={maximum:,}; {shrink}, or raise the limit with "
            f"{how_to_raise(name)}",
            limit=name, size=size, maximum=maximum,
        )

    def check_request(self, request) -> None:
        """Refuse a resolved request whose pixels or arrays would exceed a limit, before any work."""
        from .registry import model_class

        fp = model_class(request.model).footprint(request)
        if fp is None:
            return
        where = f"model {request.model!r}: {request.spatial!r} at {fp.scale_m:g} m"
        shrink = "ask for a smaller ROI (e.g. H3 cells of a finer resolution) or a coarser scale_m"
        if fp.pixels > self.max_roi_pixels:
            raise self.refuse("max_roi_pixels", fp.pixels,
                              f"{where} is a grid of about {fp.pixels:,.0f} pixels of {fp.what}", shrink)
        if fp.bytes > self.max_array_bytes:
            raise self.refuse("max_array_bytes", fp.bytes,
                              f"{where} needs an array of about {fp.bytes:,.0f} bytes ({fp.pixels:,.0f} pixels x "
                              f"{fp.values_per_pixel:,} values of {fp.what}, {fp.bytes_per_value} bytes each)", shrink)

    def check_pixels(self, width: int, height: int, what: str) -> None:
        """Refuse a grid of ``width`` x ``height`` pixels over ``max_roi_pixels`` (exact, before allocating)."""
        if width * height > self.max_roi_pixels:
            raise self.refuse("max_roi_pixels", width * height,
                              f"the grid of {what} is {width:,} x {height:,} = {width * height:,} pixels",
                              "ask for a smaller ROI or a coarser scale_m")


@dataclass(frozen=True)
class Footprint:
    """How large computing one request is, estimated before anything is built.

    ``pixels``: H x W of the grid it is read on; ``values_per_pixel``: channels x frames
    (or the embedding dimension of a product); ``bytes``: its largest array.
    """

    pixels: float
    values_per_pixel: int
    bytes_per_value: int
    scale_m: float
    what: str

    @property
    def bytes(self) -> float:
        return self.pixels * self.values_per_pixel * self.bytes_per_value


def roi_pixels(spatial, scale_m: float) -> float:
    """About how many ``scale_m`` pixels cover ``spatial``, from its lon/lat bounds alone.

    A PointBuffer is exactly ``ceil(2 * buffer_m / scale_m)`` squared (as its grid is);
    a BBox uses its widest parallel (so it does not undercount boxes far from the
    equator), an H3Cell the square that covers it; one pixel of snapping is added per side.
    """
    from .specs import H3Cell, PointBuffer

    s = float(scale_m)
    if isinstance(spatial, PointBuffer):
        n = max(1, math.ceil(2.0 * spatial.buffer_m / s - 1e-9))
        return float(n * n)
    w, so, e, n = spatial.bounds()
    widest = 1.0 if so <= 0.0 <= n else max(math.cos(math.radians(so)), math.cos(math.radians(n)))
    dx = (e - w) * _M_PER_DEG * max(widest, 1e-3)
    dy = (n - so) * _M_PER_DEG
    if isinstance(spatial, H3Cell):
        dx = dy = max(dx, dy)
    return (math.ceil(dx / s) + 1.0) * (math.ceil(dy / s) + 1.0)


__all__ = [
    "DEFAULT_MAX_ARRAY_BYTES",
    "DEFAULT_MAX_PLAN_CELLS",
    "DEFAULT_MAX_ROI_PIXELS",
    "Footprint",
    "Limits",
    "cli_flag",
    "env_var",
    "how_to_raise",
    "roi_pixels",
]


# ---------------------------------------------------------------- JSON answers of per-cell layers

DEFAULT_MAX_JSON_CELLS = 200_000
ENV_MAX_JSON_CELLS = "RSEMBED_STORE_MAX_JSON_CELLS"


def max_json_cells(config: Optional[Mapping] = None) -> int:
    """How many cells a per-cell layer (``/change``) may send as JSON: ``config["max_json_cells"]``, else
    ``$RSEMBED_STORE_MAX_JSON_CELLS``, else 200,000. More goes as Arrow (a few bytes per cell, not ~80)."""
    given = (config or {}).get("max_json_cells") if isinstance(config, Mapping) else None
    source = "config:"
    if given is None:
        given, source = os.environ.get(ENV_MAX_JSON_CELLS, "").strip() or None, f"${ENV_MAX_JSON_CELLS}:"
    if given is None:
        return DEFAULT_MAX_JSON_CELLS
    try:
        number = int(str(given).replace("_", ""))
    except ValueError:
        number = 0
    if isinstance(given, bool) or number <= 0:
        raise SpecError(f"{source} max_json_cells={given!r} is not accepted; use a positive integer, e.g. "
                        f"{DEFAULT_MAX_JSON_CELLS:_}")
    return number


def check_json_cells(count: int, maximum: int) -> None:
    """A :class:`LimitError` (HTTP 413) when ``count`` cells are too many to send as JSON."""
    if count > maximum:
        raise LimitError(
            f"the answer has {count:,} cells, more than max_json_cells={maximum:,} that are sent as JSON; ask "
            f"for format 'arrow', narrow it with within/where, or raise the limit with "
            f"Store.open(config={{'max_json_cells': N}}) or ${ENV_MAX_JSON_CELLS}",
            limit="max_json_cells", size=count, maximum=maximum,
        )
