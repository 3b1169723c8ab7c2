"""A conversion into the scene cache killed part-way resumes from its last checkpoint, with a real kill
(SIGKILL of a child process): the next open starts at the recorded row and the entry is pixel for pixel, and in
its georeference, what an uninterrupted conversion gives. A checkpoint that does not fit is not trusted."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin

from rsrag.tools import scene_cache
from rsrag.tools.raster import open_scene
from rsrag.tools.scene_cache import CHECKPOINT, SceneCache
from tests.rasters import UTM_CRS, gradient

ROOT = Path(__file__).resolve().parents[3]
HEIGHT, WIDTH = 1601, 901  # four strips of 512 rows; odd sides, so levels round up

CHILD = textwrap.dedent("""
    import sys, time
    from rsrag.tools import scene_cache
    from rsrag.tools.raster import open_scene

    scene_cache.CHECKPOINT_SECONDS = 0.0  # a checkpoint after every strip
    source, root, stop_after = sys.argv[1], sys.argv[2], int(sys.argv[3])
    seen = []

    def progress(p):
        seen.append(p)
        if len(seen) == stop_after:
            print("checkpointed", flush=True)
            time.sleep(120)  # killed here

    open_scene(source, cache=scene_cache.SceneCache(root, min_pixels=0), progress=progress)
""")


def _source(tmp: Path, kind: str) -> Path:
    rng = np.random.default_rng(3)
    data = (gradient(3, HEIGHT, WIDTH).astype(np.int16) + rng.integers(0, 40, (3, HEIGHT, WIDTH))).clip(0, 255)
    data = data.astype(np.uint8)
    if kind == "png":
        path, options = tmp / "scene.png", {"driver": "PNG"}
    else:
        path, options = tmp / "scene.tif", {"driver": "GTiff", "compress": "deflate", "blockysize": 16,
                                            "crs": UTM_CRS, "transform": from_origin(500000.0, 5000000.0, 0.5, 0.5)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", width=WIDTH, height=HEIGHT, count=3, dtype="uint8", **options) as dst:
            dst.write(data)
    return path


def _kill_after(tmp: Path, source: Path, cache: SceneCache, strips: int) -> None:
    script = tmp / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen([sys.executable, str(script), str(source), str(cache.root), str(strips)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line == "checkpointed", proc.stderr.read() if proc.stderr else ""
    proc.kill()
    proc.wait(timeout=30)


def _levels(folder: Path) -> list[tuple[np.ndarray, object, object]]:
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        for path in sorted(folder.glob("L*.tif")):
            with rasterio.open(path) as ds:
                out.append((ds.read(), ds.crs, ds.transform))
    return out


@pytest.mark.parametrize("kind", ["striped_tiff", "png"])
def test_a_killed_conversion_resumes_at_its_checkpoint_and_matches_an_uninterrupted_one(
        kind: str, tmp_path: Path) -> None:
    source = _source(tmp_path, kind)
    reference = SceneCache(tmp_path / "reference", min_pixels=0)
    with open_scene(source, cache=reference) as scene:
        expected = _levels(Path(scene.info.cache))
    cache = SceneCache(tmp_path / "cache", min_pixels=0)
    _kill_after(tmp_path, source, cache, strips=2)
    [leftover] = cache.temporaries()
    assert cache.entries() == [] and json.loads((leftover / CHECKPOINT).read_text())["next_row"] == 1024
    seen = []
    with open_scene(source, cache=cache, progress=seen.append) as scene:
        got = _levels(Path(scene.info.cache))
        folder = Path(scene.info.cache)
    assert seen[0].resumed_from == 1024 and seen[0].done == 1536 and seen[-1].done == HEIGHT  # two strips, not four
    assert len(got) == len(expected) >= 3
    for (a, crs_a, tr_a), (b, crs_b, tr_b) in zip(got, expected):
        np.testing.assert_array_equal(a, b)
        assert crs_a == crs_b and tr_a == tr_b
    assert sorted(p.name for p in folder.iterdir()) == ["L0.tif", "L1.tif", "L2.tif", "manifest.json"]
    assert cache.temporaries() == []


def test_a_checkpoint_that_does_not_fit_is_ignored_and_the_conversion_starts_over(tmp_path: Path) -> None:
    source = _source(tmp_path, "striped_tiff")
    cache = SceneCache(tmp_path / "cache", min_pixels=0)
    _kill_after(tmp_path, source, cache, strips=2)
    [leftover] = cache.temporaries()
    record = json.loads((leftover / CHECKPOINT).read_text())
    record["strip_rows"] = 256  # as if written by a conversion that cut the source differently
    (leftover / CHECKPOINT).write_text(json.dumps(record))
    seen = []
    with open_scene(source, cache=cache, progress=seen.append) as scene:
        np.testing.assert_array_equal(scene.read(scene.full_box), _levels(Path(scene.info.cache))[0][0])
        with rasterio.open(source) as src:
            np.testing.assert_array_equal(scene.read(scene.full_box), src.read())
    assert seen[0].resumed_from == 0 and seen[0].done == 512
    # a corrupt one too
    cache2 = SceneCache(tmp_path / "cache2", min_pixels=0)
    _kill_after(tmp_path, source, cache2, strips=3)
    [leftover2] = cache2.temporaries()
    (leftover2 / CHECKPOINT).write_text("{not json")
    seen2 = []
    with open_scene(source, cache=cache2, progress=seen2.append) as scene, rasterio.open(source) as src:
        np.testing.assert_array_equal(scene.read(scene.full_box), src.read())
    assert seen2[0].resumed_from == 0
    assert scene_cache.CHECKPOINT_SECONDS > 0  # the child's setting stayed in the child
