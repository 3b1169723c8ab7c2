"""A conversion into the scene cache killed part-way resumes from its last checkpoint, with a real kill
(SIGKILL of a child process) and with Ctrl-C: the next build starts at the recorded row, says so in its first
progress report, and the entry is pixel for pixel, and in its georeference, what an uninterrupted conversion
gives, with nothing of the checkpoint left in it. A checkpoint that does not fit (another plan, corrupt, rows
that do not add up, a level file missing or cut short) is not trusted: the conversion starts over."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin

from rsrag.tools import scene_cache
from rsrag.tools.raster import open_scene
from rsrag.tools.scene_cache import CHECKPOINT, CacheKind, ConversionProgress, SceneCache
from tests.rasters import UTM_CRS, gradient

ROOT = Path(__file__).resolve().parents[3]
HEIGHT, WIDTH = 1601, 901  # four strips of 512 rows; odd sides, so levels round up
GEO = {"crs": UTM_CRS, "transform": from_origin(500000.0, 5000000.0, 0.5, 0.5)}

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
    options: dict
    if kind == "png":
        path, options = tmp / "scene.png", {"driver": "PNG"}
    elif kind == "jpeg":
        path, options = tmp / "scene.jpg", {"driver": "JPEG"}
    elif kind == "tiled_tiff":  # read in place; its coarser levels are cached (kind "overviews")
        path, options = tmp / "tiled.tif", {"driver": "GTiff", "tiled": True, "blockxsize": 256, "blockysize": 256,
                                            **GEO}
    else:
        path, options = tmp / "scene.tif", {"driver": "GTiff", "compress": "deflate", "blockysize": 16, **GEO}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", width=WIDTH, height=HEIGHT, count=3, dtype="uint8", **options) as dst:
            dst.write(data)
            if kind == "masked_tiff":  # a per-dataset mask: a ragged collar, so every level's mask differs
                yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
                dst.write_mask(np.where((xx > 100 + yy // 9) & (yy > 37), 255, 0).astype(np.uint8))
    return path


def _kill_after(tmp: Path, source: Path, cache: SceneCache, strips: int) -> None:
    """Convert ``source`` in a child process and SIGKILL it once ``strips`` strips are done (and checkpointed)."""
    script = tmp / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen([sys.executable, str(script), str(source), str(cache.root), str(strips)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line == "checkpointed", proc.stderr.read() if proc.stderr else ""
    proc.kill()
    proc.wait(timeout=30)


def _build(cache: SceneCache, source: Path, kind: CacheKind = "converted",
           progress: Callable[[ConversionProgress], None] | None = None) -> Path:
    """Build ``source``'s entry in-process; returns the entry's folder."""
    handle = cache.build(str(source), fingerprint="0123456789abcdef", source=str(source), kind=kind, reason="test",
                         progress=progress)
    handle.release()
    return handle.entry.folder


def _interrupt_at(cache: SceneCache, source: Path, row: int, monkeypatch: pytest.MonkeyPatch,
                  kind: CacheKind = "converted") -> Path:
    """Convert with a checkpoint after every strip and press Ctrl-C once ``row`` rows are done; returns the
    leftover folder (it holds the checkpoint)."""
    def progress(p: ConversionProgress) -> None:
        if p.done == row:
            raise KeyboardInterrupt

    monkeypatch.setattr(scene_cache, "CHECKPOINT_SECONDS", 0.0)
    with pytest.raises(KeyboardInterrupt):
        _build(cache, source, kind, progress)
    monkeypatch.undo()
    [leftover] = cache.temporaries()
    assert cache.entries() == [] and json.loads((leftover / CHECKPOINT).read_text())["next_row"] == row
    return leftover


def _levels(folder: Path) -> list[tuple[np.ndarray, object, object]]:
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        for path in sorted(folder.glob("L*.tif")):
            with rasterio.open(path) as ds:
                out.append((np.concatenate([ds.read(), ds.read_masks(1)[None]]), ds.crs, ds.transform))
    return out


def _assert_same_entry(got: Path, expected: Path) -> None:
    """Every level pixel for pixel and in its georeference, the same manifest levels, nothing else in the folder."""
    a, b = _levels(got), _levels(expected)
    assert len(a) == len(b) >= 2
    for (pixels_a, crs_a, tr_a), (pixels_b, crs_b, tr_b) in zip(a, b):
        np.testing.assert_array_equal(pixels_a, pixels_b)
        assert crs_a == crs_b and tr_a == tr_b
    manifest = json.loads((got / "manifest.json").read_text())
    assert manifest["levels"] == json.loads((expected / "manifest.json").read_text())["levels"]
    assert sorted(p.name for p in got.iterdir()) == sorted([lv["file"] for lv in manifest["levels"]] + ["manifest.json"])


@pytest.mark.parametrize("kind", ["striped_tiff", "masked_tiff", "png", "jpeg"])
def test_a_killed_conversion_resumes_at_its_checkpoint_and_matches_an_uninterrupted_one(
        kind: str, tmp_path: Path) -> None:
    source = _source(tmp_path, kind)
    reference = SceneCache(tmp_path / "reference", min_pixels=0)
    with open_scene(source, cache=reference) as scene:
        expected = Path(scene.info.cache)
    cache = SceneCache(tmp_path / "cache", min_pixels=0)
    _kill_after(tmp_path, source, cache, strips=2)
    [leftover] = cache.temporaries()
    assert cache.entries() == [] and json.loads((leftover / CHECKPOINT).read_text())["next_row"] == 1024
    seen: list[ConversionProgress] = []
    with open_scene(source, cache=cache, progress=seen.append) as scene:
        folder = Path(scene.info.cache)
        if kind.endswith("_tiff"):
            with rasterio.open(source) as src:
                np.testing.assert_array_equal(scene.read(scene.full_box), src.read())
                np.testing.assert_array_equal(scene.read_mask(scene.full_box), src.read_masks(1) > 0)
    # the first report comes at once, before any row is read; then two strips, not four
    assert [p.done for p in seen] == [1024, 1536, HEIGHT] and {p.resumed_from for p in seen} == {1024}
    _assert_same_entry(folder, expected)
    assert cache.temporaries() == []


def test_ctrl_c_keeps_the_checkpoint_and_the_next_build_resumes(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    source = _source(tmp_path, "striped_tiff")
    expected = _build(SceneCache(tmp_path / "reference", min_pixels=0), source)
    cache = SceneCache(tmp_path / "cache", min_pixels=0)
    _interrupt_at(cache, source, 512, monkeypatch)
    seen: list[ConversionProgress] = []
    _assert_same_entry(_build(cache, source, progress=seen.append), expected)
    assert seen[0].resumed_from == 512 and seen[0].done == 512 and seen[-1].done == HEIGHT
    assert cache.temporaries() == []


def test_the_cached_levels_of_a_tiled_source_resume_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = _source(tmp_path, "tiled_tiff")
    expected = _build(SceneCache(tmp_path / "reference", min_pixels=0), source, "overviews")
    cache = SceneCache(tmp_path / "cache", min_pixels=0)
    _interrupt_at(cache, source, 1024, monkeypatch, "overviews")
    seen: list[ConversionProgress] = []
    folder = _build(cache, source, "overviews", progress=seen.append)
    assert seen[0].resumed_from == 1024 and [p.done for p in seen] == [1024, 1536, HEIGHT]
    assert sorted(p.name for p in folder.glob("L*.tif")) == ["L1.tif", "L2.tif"]
    _assert_same_entry(folder, expected)


def _other_plan(folder: Path) -> None:
    record = json.loads((folder / CHECKPOINT).read_text())
    record["strip_rows"] = 256  # as if written by a conversion that cut the source differently
    (folder / CHECKPOINT).write_text(json.dumps(record))


def _corrupt_json(folder: Path) -> None:
    (folder / CHECKPOINT).write_text("{not json")


def _rows_that_do_not_add_up(folder: Path) -> None:
    record = json.loads((folder / CHECKPOINT).read_text())
    record["writers"][1]["row"] += 256  # level 1 claims a tile row it never wrote
    (folder / CHECKPOINT).write_text(json.dumps(record))


def _held_back_rows_of_another_width(folder: Path) -> None:
    record = json.loads((folder / CHECKPOINT).read_text())
    name = next(w["pending"] for w in record["writers"] if w["pending"])
    held = np.load(folder / name)
    np.save(folder / name, held[:, :, :-1])


def _a_level_file_missing(folder: Path) -> None:
    (folder / "L1.tif").unlink()


def _a_level_file_cut_short(folder: Path) -> None:
    path = folder / "L0.tif"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


@pytest.mark.parametrize("damage", [_other_plan, _corrupt_json, _rows_that_do_not_add_up,
                                    _held_back_rows_of_another_width, _a_level_file_missing, _a_level_file_cut_short])
def test_a_checkpoint_that_does_not_fit_is_ignored_and_the_conversion_starts_over(
        damage: Callable[[Path], None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = _source(tmp_path, "striped_tiff")
    expected = _build(SceneCache(tmp_path / "reference", min_pixels=0), source)
    cache = SceneCache(tmp_path / "cache", min_pixels=0)
    damage(_interrupt_at(cache, source, 1536, monkeypatch))
    seen: list[ConversionProgress] = []
    _assert_same_entry(_build(cache, source, progress=seen.append), expected)
    assert {p.resumed_from for p in seen} == {0} and [p.done for p in seen] == [512, 1024, 1536, HEIGHT]
    assert cache.temporaries() == []


def test_a_corrupt_checkpoint_left_by_a_real_kill_is_ignored(tmp_path: Path) -> None:
    source = _source(tmp_path, "striped_tiff")
    cache = SceneCache(tmp_path / "cache", min_pixels=0)
    _kill_after(tmp_path, source, cache, strips=3)
    [leftover] = cache.temporaries()
    _corrupt_json(leftover)
    seen: list[ConversionProgress] = []
    with open_scene(source, cache=cache, progress=seen.append) as scene, rasterio.open(source) as src:
        np.testing.assert_array_equal(scene.read(scene.full_box), src.read())
    assert {p.resumed_from for p in seen} == {0} and seen[0].done == 512
    assert scene_cache.CHECKPOINT_SECONDS > 0  # the child's setting stayed in the child
