"""Progressive JPEGs: libjpeg decodes them whole, so GDAL refuses large ones unless ``JPEGMEM`` allows it.
rsrag sets a budget from the available memory (a 20,000 px progressive JPEG converts); one above the budget is
refused with one line that says what to do, and nothing is kept in the scene cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rsrag.tools.errors import RasterReadError
from rsrag.tools.raster import libjpeg_budget_mb, open_scene
from rsrag.tools.scene_cache import SceneCache


def progressive(path: Path, side: int = 1200) -> Path:
    y, x = np.mgrid[0:side, 0:side]
    rgb = np.stack([(x * 7) % 256, (y * 5) % 256, ((x + y) * 3) % 256], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(path, progressive=True, quality=85)
    return path


def test_a_progressive_jpeg_within_the_budget_is_converted_and_read(tmp_path: Path) -> None:
    cache = SceneCache(tmp_path / "cache", min_pixels=0)
    with open_scene(progressive(tmp_path / "p.jpg"), cache=cache) as scene:
        assert scene.read(scene.full_box).shape[-2:] == (1200, 1200)
    assert len(cache.entries()) == 1
    assert libjpeg_budget_mb() >= 500  # never below GDAL's own default


def test_a_progressive_jpeg_above_the_budget_says_how_to_fix_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = progressive(tmp_path / "big.jpg")
    monkeypatch.setenv("JPEGMEM", "1M")  # as if the image needed more than this machine can spare
    cache = SceneCache(tmp_path / "cache", min_pixels=0)
    with pytest.raises(RasterReadError) as info:
        open_scene(path, cache=cache)
    message = str(info.value)
    assert message.startswith(f"{path} is a progressive JPEG") and "\n" not in message
    assert "gdal_translate -of COG" in message and "JPEGMEM" in message and "1M" in message
    assert "truncated" not in message  # the file is fine: it is the memory limit
    assert cache.entries() == [] and cache.temporaries() == []
