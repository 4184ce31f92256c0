"""The demo's map PNG: scene, query and hits, title, legend, scale bar and coordinate ticks."""

import h3
import numpy as np
import pytest

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from rsembed_store.demo_map import (  # noqa: E402
    LEGEND_W,
    MARGIN_BOTTOM,
    MARGIN_LEFT,
    MARGIN_TOP,
    QUERY_RGB,
    nice_length,
    nice_ticks,
    rank_colour,
    write_map,
)


def test_nice_numbers():
    assert nice_length(2300) == 2000 and nice_length(740) == 500 and nice_length(1) == 1
    with pytest.raises(ValueError, match="target_m"):
        nice_length(0)
    ticks = nice_ticks(10.93, 11.07)
    assert ticks == [10.95, 11.0, 11.05]
    assert nice_ticks(1, 1) == []
    assert rank_colour(1, 10) != rank_colour(10, 10) and rank_colour(1, 1) == rank_colour(1, 10)


def _cells(manifest, n):
    w, s, e, n_ = manifest["bounds_lonlat"]
    centre = h3.latlng_to_cell((s + n_) / 2, (w + e) / 2, 10)
    ring = [c for c in h3.grid_disk(centre, 3) if c != centre]
    return centre, sorted(ring)[:n]


def test_map_has_frame_title_legend_scale_and_ticks(small_scene, tmp_path):
    source, manifest = small_scene
    query, hits = _cells(manifest, 6)
    path = write_map(str(source), manifest, query, [(c, 0.1 * (i + 1)) for i, c in enumerate(hits)],
                     str(tmp_path / "map.png"), model="spectral", window="2023")
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    h, w = img.shape[:2]
    map_w, map_h = w - MARGIN_LEFT - LEGEND_W, h - MARGIN_TOP - MARGIN_BOTTOM
    assert map_w > 100 and map_h > 100

    def dark(region):
        return int((region.sum(axis=2) < 200).sum())

    assert dark(img[:MARGIN_TOP - 4, MARGIN_LEFT:]) > 50  # the title
    assert dark(img[MARGIN_TOP + map_h + 8:, MARGIN_LEFT:MARGIN_LEFT + map_w]) > 20  # longitude labels
    assert dark(img[MARGIN_TOP:MARGIN_TOP + map_h, :MARGIN_LEFT - 8]) > 20  # latitude labels
    legend = img[MARGIN_TOP:, MARGIN_LEFT + map_w + 2:]
    for colour in (QUERY_RGB, rank_colour(1, 6), rank_colour(6, 6)):  # swatches in the legend
        assert (np.abs(legend - np.array(colour)).sum(axis=2) == 0).sum() > 100, colour
    inside = img[MARGIN_TOP:MARGIN_TOP + map_h, MARGIN_LEFT:MARGIN_LEFT + map_w]
    assert (np.abs(inside - np.array(QUERY_RGB)).sum(axis=2) < 60).sum() > 20  # the query cell is drawn
    # the scale bar: a black half and a white half at the bottom left of the map
    bar = inside[-40:, :map_w // 2]
    assert (bar.sum(axis=2) == 0).sum() > 30 and (bar.sum(axis=2) == 765).sum() > 30


def test_map_without_hits_still_draws(small_scene, tmp_path):
    source, manifest = small_scene
    query, _ = _cells(manifest, 0)
    path = write_map(str(source), manifest, query, [], str(tmp_path / "empty.png"))
    assert Image.open(path).size[0] > LEGEND_W
