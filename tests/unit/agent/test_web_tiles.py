"""Deep-zoom pyramid geometry and tile rendering of the web workspace."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from rsrag.agent.interfaces.web.errors import TileNotFoundError
from rsrag.agent.interfaces.web.tiles import Pyramid, TileCache, render_tile
from rsrag.tools.raster import open_scene
from rsrag.tools.region import PixelBox
from tests.rasters import gradient


def test_pyramid_levels_cover_the_image_exactly() -> None:
    p = Pyramid(width=1000, height=600)
    assert p.max_level == 10 and p.factor(10) == 1 and p.factor(0) == 1024
    assert p.level_size(10) == (1000, 600) and p.level_size(9) == (500, 300) and p.level_size(0) == (1, 1)
    assert p.grid(10) == (4, 3) and p.grid(8) == (1, 1)
    for level in range(p.max_level + 1):
        cols, rows = p.grid(level)
        covered = 0
        for col in range(cols):
            for row in range(rows):
                box, (h, w) = p.tile(level, col, row)
                f = p.factor(level)
                assert 0 < w <= 256 and 0 < h <= 256
                assert math.ceil(box.width / f) == w and math.ceil(box.height / f) == h
                covered += box.area
        assert covered == 1000 * 600  # the tiles of every level tile the image without gaps or overlap


def test_edge_tile_and_out_of_range() -> None:
    p = Pyramid(width=1000, height=600)
    box, size = p.tile(10, 3, 2)
    assert box == PixelBox(x0=768, y0=512, x1=1000, y1=600) and size == (88, 232)
    box, size = p.tile(9, 1, 1)
    assert box == PixelBox(x0=512, y0=512, x1=1000, y1=600) and size == (44, 244)
    for level, col, row in [(11, 0, 0), (-1, 0, 0), (10, 4, 0), (10, 0, 3), (8, 1, 0), (10, -1, 0)]:
        with pytest.raises(TileNotFoundError):
            p.tile(level, col, row)


def test_rendered_tile_matches_a_direct_read(make_raster) -> None:
    path = make_raster(gradient(3, 600, 1000), overviews=(2, 4))
    with open_scene(path) as scene:
        p = Pyramid(scene.width, scene.height)
        tile = np.asarray(Image.open(io.BytesIO(render_tile(scene, p, 10, 1, 1))))
        direct = scene.read_display(PixelBox(x0=256, y0=256, x1=512, y1=512))
        assert tile.shape == (256, 256, 3)
        assert np.abs(tile.astype(int) - direct.astype(int)).mean() < 6  # JPEG noise only
        small = Image.open(io.BytesIO(render_tile(scene, p, 8, 0, 0)))
        assert small.size == (250, 150)


def test_tile_cache_is_bounded_lru() -> None:
    cache = TileCache(max_bytes=10)
    cache.put(("a", 0, 0, 0), b"12345")
    cache.put(("a", 0, 0, 1), b"12345")
    assert cache.get(("a", 0, 0, 0)) == b"12345"  # now the most recent
    cache.put(("a", 0, 0, 2), b"12345")
    assert cache.get(("a", 0, 0, 1)) is None and cache.get(("a", 0, 0, 0)) is not None
