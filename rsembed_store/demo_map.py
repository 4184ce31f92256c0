"""The demo's map picture: the scene, the query cell and its hits, with title, legend, scale and ticks.

:func:`write_map` draws the clearest scene of the synthetic source as RGB (in
its own UTM grid, north up), the query cell in red and the hits shaded from
yellow (rank 1, nearest) to deep orange (rank k), each outlined, then frames it
with what a reader needs to make sense of it: a title (model, window, k), a
legend (query cell, hits by rank with their distances), a scale bar in metres
and longitude/latitude ticks along the bottom and left edges. Pillow draws the
frame and the text (its built-in font, so nothing is fetched) and writes the PNG.
"""

from __future__ import annotations

import math
import os
from typing import List, Optional, Sequence, Tuple

import h3
import numpy as np

QUERY_RGB = (220, 20, 20)
NEAR_RGB = (255, 230, 0)  # rank 1
FAR_RGB = (235, 90, 0)  # rank k
MARGIN_LEFT, MARGIN_BOTTOM, MARGIN_TOP, LEGEND_W = 70, 46, 44, 230
MAX_SIDE = 768  # the scene is read at most this many pixels wide


def rank_colour(rank: int, count: int) -> Tuple[int, int, int]:
    """The fill of the hit of ``rank`` (1-based) among ``count``: yellow (nearest) to orange (farthest)."""
    t = 0.0 if count <= 1 else (rank - 1) / (count - 1)
    return tuple(int(round(a + (b - a) * t)) for a, b in zip(NEAR_RGB, FAR_RGB))


def nice_length(target_m: float) -> float:
    """The largest of 1, 2, 5 x 10^n metres not above ``target_m`` (a scale bar's length)."""
    if not target_m > 0:
        raise ValueError(f"target_m={target_m!r} must be positive")
    exp = 10 ** math.floor(math.log10(target_m))
    return max(m * exp for m in (1, 2, 5) if m * exp <= target_m)


def nice_ticks(lo: float, hi: float, count: int = 5) -> List[float]:
    """Round values inside ``[lo, hi]``, about ``count`` of them, on a 1/2/5 x 10^n step."""
    span = hi - lo
    if not span > 0:
        return []
    raw = span / count
    exp = 10 ** math.floor(math.log10(raw))
    step = min((m * exp for m in (1, 2, 5, 10) if m * exp >= raw), default=10 * exp)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _scene(source: str, manifest: dict):
    import rasterio
    from affine import Affine

    scenes = sorted(manifest["scenes"], key=lambda s: s.get("cloudy_pixel_percentage", 100))
    with rasterio.open(os.path.join(source, scenes[0]["path"])) as src:
        names = list(src.descriptions)
        step = max(1, src.width // MAX_SIDE)
        rgb = np.stack([src.read(names.index(b) + 1, out_shape=(src.height // step, src.width // step))
                        for b in ("B04", "B03", "B02")]).astype(np.float32)
        transform = src.transform @ Affine.scale(src.width / rgb.shape[2], src.height / rgb.shape[1])
        crs = src.crs
    lo, hi = np.percentile(rgb[rgb > 0], [2, 98]) if (rgb > 0).any() else (0, 1)
    img = np.clip((rgb - lo) / max(hi - lo, 1e-6), 0, 1)
    return (img.transpose(1, 2, 0) * 255).astype(np.uint8), transform, crs


def _cell_pixels(cell: str, transform, crs) -> List[Tuple[float, float]]:
    """The cell's hexagon in the scene's pixel coordinates (column, row)."""
    from rasterio.warp import transform as warp

    lats, lons = zip(*h3.cell_to_boundary(cell))
    xs, ys = warp("EPSG:4326", crs, list(lons), list(lats))
    inv = ~transform
    return [inv @ (x, y) for x, y in zip(xs, ys)]


def _edge_lonlat(transform, crs, cols, rows) -> Tuple[np.ndarray, np.ndarray]:
    from rasterio.warp import transform as warp

    xs, ys = zip(*[transform @ (c, r) for c, r in zip(cols, rows)])
    lons, lats = warp(crs, "EPSG:4326", list(xs), list(ys))
    return np.asarray(lons), np.asarray(lats)


def _fmt(value: float, pos: str, neg: str, decimals: int) -> str:
    return f"{abs(value):.{decimals}f}°{pos if value >= 0 else neg}"


def _decimals(ticks: Sequence[float]) -> int:
    """Enough decimals to tell neighbouring ticks apart, and the same for all."""
    if len(ticks) < 2:
        return 3
    return max(0, -math.floor(math.log10(abs(ticks[1] - ticks[0])) + 1e-9))


def write_map(source: str, manifest: dict, query: str, hits: Sequence[tuple], path: str, *,
              model: Optional[str] = None, window: Optional[str] = None) -> str:
    """Write the map PNG to ``path`` (see the module docstring) and return ``path``.

    ``hits`` are ``(cell, distance)`` pairs, nearest first; ``model`` and
    ``window`` (e.g. ``"2023"``) go into the title.
    """
    from PIL import Image, ImageDraw, ImageFont

    scene, transform, crs = _scene(source, manifest)
    h, w = scene.shape[:2]
    base = Image.fromarray(scene, "RGB")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    count = len(hits)
    for rank, (cell, _) in reversed(list(enumerate(hits, 1))):  # the nearest drawn last, on top
        poly = _cell_pixels(cell, transform, crs)
        draw.polygon(poly, fill=rank_colour(rank, count) + (170,), outline=(40, 40, 40, 255))
    draw.polygon(_cell_pixels(query, transform, crs), fill=QUERY_RGB + (230,), outline=(255, 255, 255, 255))
    base = Image.alpha_composite(base.convert("RGBA"), overlay).convert("RGB")

    width, height = MARGIN_LEFT + w + LEGEND_W, MARGIN_TOP + h + MARGIN_BOTTOM
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    canvas.paste(base, (MARGIN_LEFT, MARGIN_TOP))
    d = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=13)
    big = ImageFont.load_default(size=17)
    d.rectangle([MARGIN_LEFT - 1, MARGIN_TOP - 1, MARGIN_LEFT + w, MARGIN_TOP + h], outline=(0, 0, 0))

    title = f"Places like {query}: {count} nearest"
    if model:
        title += f" in {model}"
    if window:
        title += f", {window}"
    d.text((MARGIN_LEFT, 12), title, fill=(0, 0, 0), font=big)

    # longitude ticks along the bottom edge, latitude ticks along the left edge
    cols = np.linspace(0, w, 64)
    lons, _ = _edge_lonlat(transform, crs, cols, np.full_like(cols, h))
    ticks = nice_ticks(float(lons.min()), float(lons.max()))
    for lon in ticks:
        x = MARGIN_LEFT + float(np.interp(lon, lons, cols))
        d.line([x, MARGIN_TOP + h, x, MARGIN_TOP + h + 6], fill=(0, 0, 0))
        label = _fmt(lon, "E", "W", _decimals(ticks))
        d.text((x - d.textlength(label, font=font) / 2, MARGIN_TOP + h + 9), label, fill=(0, 0, 0), font=font)
    rows = np.linspace(0, h, 64)
    _, lats = _edge_lonlat(transform, crs, np.zeros_like(rows), rows)
    order = np.argsort(lats)
    ticks = nice_ticks(float(lats.min()), float(lats.max()))
    for lat in ticks:
        y = MARGIN_TOP + float(np.interp(lat, lats[order], rows[order]))
        d.line([MARGIN_LEFT - 6, y, MARGIN_LEFT, y], fill=(0, 0, 0))
        label = _fmt(lat, "N", "S", _decimals(ticks))
        d.text((MARGIN_LEFT - 8 - d.textlength(label, font=font), y - 7), label, fill=(0, 0, 0), font=font)

    # scale bar, bottom left inside the map: about a fifth of its width
    metres_per_px = abs(transform.a)
    bar_m = nice_length(metres_per_px * w / 5)
    bar_px = bar_m / metres_per_px
    x0, y0 = MARGIN_LEFT + 14, MARGIN_TOP + h - 22
    d.rectangle([x0 - 6, y0 - 18, x0 + bar_px + 8, y0 + 12], fill=(255, 255, 255))
    half = bar_px / 2
    d.rectangle([x0, y0, x0 + half, y0 + 6], fill=(0, 0, 0))
    d.rectangle([x0 + half, y0, x0 + bar_px, y0 + 6], fill=(255, 255, 255), outline=(0, 0, 0))
    label = f"{bar_m / 1000:g} km" if bar_m >= 1000 else f"{bar_m:g} m"
    d.text((x0, y0 - 16), label, fill=(0, 0, 0), font=font)

    # legend
    lx, ly = MARGIN_LEFT + w + 16, MARGIN_TOP
    d.text((lx, ly), "Legend", fill=(0, 0, 0), font=big)
    ly += 28
    d.rectangle([lx, ly, lx + 16, ly + 14], fill=QUERY_RGB, outline=(0, 0, 0))
    d.text((lx + 24, ly), "query cell", fill=(0, 0, 0), font=font)
    ly += 26
    d.text((lx, ly), "hits by rank (distance):", fill=(0, 0, 0), font=font)
    ly += 20
    shown = list(enumerate(hits, 1))
    if len(shown) > 12:  # first and last few ranks
        shown = shown[:9] + [None] + shown[-2:]
    for item in shown:
        if item is None:
            d.text((lx + 24, ly), "...", fill=(0, 0, 0), font=font)
            ly += 18
            continue
        rank, (cell, dist) = item
        d.rectangle([lx, ly, lx + 16, ly + 14], fill=rank_colour(rank, count), outline=(40, 40, 40))
        d.text((lx + 24, ly), f"{rank:>2}  {float(dist):.4f}", fill=(0, 0, 0), font=font)
        ly += 18
    ly += 10
    d.text((lx, ly), "yellow = nearest", fill=(0, 0, 0), font=font)
    d.text((lx, ly + 16), "H3 cells over the scene (RGB)", fill=(90, 90, 90), font=font)
    canvas.save(path, format="PNG")
    return path


__all__ = ["nice_length", "nice_ticks", "rank_colour", "write_map"]
