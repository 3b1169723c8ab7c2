"""The pyramid index: level geometry, coarse-to-fine descent, resumption, reuse, background fill, flat limit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rsrag.tools.errors import TilingError
from rsrag.tools.indexing import IndexProgress, index_scene
from rsrag.tools.pyramid import BackgroundFiller, Pyramid, PyramidIndex, PyramidTiling, build_index, descend
from rsrag.tools.raster import open_scene
from rsrag.tools.region import PixelBox
from rsrag.tools.retrieval import search_index
from rsrag.tools.store import PatchStore, open_store
from rsrag.tools.tiling import parse_tiling
from tests.conftest import REPO_ROOT
from tests.index_doubles import TinyEncoder

RED = np.array([220, 30, 30], dtype=np.uint8)


class CountingEncoder(TinyEncoder):
    """The tiny projection encoder, counting the windows it encodes (and optionally slow)."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__(delay=delay)
        self.windows = 0
        self._count_lock = threading.Lock()

    def encode_image_tensors(self, batch: torch.Tensor) -> np.ndarray:
        with self._count_lock:
            self.windows += int(batch.shape[0])
        return super().encode_image_tensors(batch)


def _levels(width: int, height: int, size: int = 16, top: int = 16, overlap: float = 0.5):  # type: ignore[no-untyped-def]
    return PyramidTiling(size, overlap, top).levels(width, height)


def _grey_scene(make_raster, side: int = 512, targets: tuple[tuple[int, int], ...] = ((300, 340),),  # type: ignore[no-untyped-def]
                target_px: int = 24, seed: int = 0, height: int | None = None) -> Path:
    """A noisy grey scene with small red squares (top-left corners ``targets``)."""
    rng = np.random.default_rng(seed)
    h = height or side
    img = (118 + rng.integers(0, 20, (3, h, side))).astype(np.uint8)
    for x, y in targets:
        img[:, y:y + target_px, x:x + target_px] = RED[:, None, None]
    return make_raster(img)


# --- geometry -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1000, 1000), (1000, 300), (300, 1000), (257, 129), (4096, 64)])
def test_every_level_covers_the_image_with_overlapping_windows_flush_at_the_edges(size: tuple[int, int]) -> None:
    width, height = size
    levels = _levels(width, height)
    assert levels[-1].window == 16 and levels[0].level == 0 and levels[-1].scale == 0
    assert levels[0].count <= 16 or levels[0].window >= max(width, height)
    for upper, lower in zip(levels, levels[1:]):
        assert upper.window == 2 * lower.window  # each level halves the footprint
        assert upper.count < lower.count
    for lv in levels:
        covered = np.zeros((height, width), dtype=bool)
        boxes = [lv.box(i) for i in range(lv.count)]
        for b in boxes:
            assert 0 <= b.x0 < b.x1 <= width and 0 <= b.y0 < b.y1 <= height
            covered[b.y0:b.y1, b.x0:b.x1] = True
        assert covered.all(), f"level {lv.level} leaves pixels uncovered"
        assert max(b.x1 for b in boxes) == width and max(b.y1 for b in boxes) == height
        if len(lv.xs) > 2:  # neighbours overlap by half a window (the last one is flush with the edge)
            assert lv.xs[1] - lv.xs[0] == lv.window // 2 and lv.xs[-1] - lv.xs[-2] <= lv.window // 2
        assert len(set(b.as_tuple() for b in boxes)) == lv.count


def test_tiny_image_is_one_level_of_one_window() -> None:
    (level,) = _levels(10, 7)
    assert level.count == 1 and level.box(0) == PixelBox(x0=0, y0=0, x1=10, y1=7)
    # the encoder-sized default on a chip smaller than the encoder input
    (level,) = PyramidTiling(None).resolve(224).levels(150, 150)
    assert level.count == 1 and level.box(0).as_tuple() == (0, 0, 150, 150)


def test_spec_parsing_and_errors() -> None:
    scheme = parse_tiling("pyramid")
    assert isinstance(scheme, PyramidTiling) and scheme.id == "pyramid:auto:overlap=0.5:top=128"
    assert parse_tiling("pyramid:112:overlap=0.25:top=64").resolve(224).size == 112
    assert parse_tiling("pyramid").resolve(224).id == "pyramid:224:overlap=0.5:top=128"
    for bad in ("pyramid:abc", "pyramid:overlap=1.5", "pyramid:top=0", "pyramid:4", "pyramid:foo=1"):
        with pytest.raises(TilingError):
            parse_tiling(bad)
    with pytest.raises(TilingError, match="is a pyramid"):
        list(scheme.patches(100, 100))


@settings(max_examples=40, deadline=None)
@given(width=st.integers(40, 700), height=st.integers(40, 700), data=st.data())
def test_an_object_up_to_half_a_window_is_whole_in_some_window_of_every_level_that_fits(width, height, data) -> None:  # type: ignore[no-untyped-def]
    for lv in _levels(width, height):
        side = lv.window // 2
        if side > min(width, height):
            continue
        x = data.draw(st.integers(0, width - side))
        y = data.draw(st.integers(0, height - side))
        obj = PixelBox(x0=x, y0=y, x1=x + side, y1=y + side)
        assert any(lv.box(i).contains(obj) for i in range(lv.count)), (lv.window, obj)


@pytest.mark.parametrize("size", [(1000, 700), (333, 1000)])
def test_children_cover_their_parent_and_lie_inside_it_where_it_is_on_the_grid(size: tuple[int, int]) -> None:
    levels = _levels(*size)
    for upper, lower in zip(levels, levels[1:]):
        for parent in range(upper.count):
            pbox = upper.box(parent)
            kids = [lower.box(i) for i in lower.inside(pbox)]
            assert kids and all(k.intersection(pbox) > 0 for k in kids) and len(kids) <= 16
            if pbox.x0 % lower.step == 0 and pbox.y0 % lower.step == 0:  # a parent on the grid: all inside
                assert all(pbox.contains(k) for k in kids) and len(kids) <= 9
            covered = np.zeros((size[1], size[0]), dtype=bool)
            for k in kids:
                covered[k.y0:k.y1, k.x0:k.x1] = True
            assert covered[pbox.y0:pbox.y1, pbox.x0:pbox.x1].all()


@pytest.mark.parametrize("size", [(1000, 700), (333, 1000)])
def test_tiled_children_still_cover_their_parent_with_fewer_windows(size: tuple[int, int]) -> None:
    levels = _levels(*size)
    for upper, lower in zip(levels, levels[1:]):
        for parent in range(upper.count):
            pbox = upper.box(parent)
            every, tiled = lower.inside(pbox), lower.inside(pbox, tiled=True)
            assert set(tiled) <= set(every) and len(tiled) <= len(every)
            if pbox.x0 % lower.step == 0 and pbox.y0 % lower.step == 0 and pbox.width == pbox.height == upper.window:
                assert len(tiled) == 4 and len(every) == 9  # a whole parent on the grid: 2 x 2 side by side
            covered = np.zeros((size[1], size[0]), dtype=bool)
            for k in (lower.box(i) for i in tiled):
                covered[k.y0:k.y1, k.x0:k.x1] = True
            assert covered[pbox.y0:pbox.y1, pbox.x0:pbox.x1].all()


def test_statistics_sample_is_spread_and_deterministic() -> None:
    lv = _levels(2000, 2000)[-1]
    sample = lv.sample(36)
    assert sample == lv.sample(36) and len(sample) == 36 == len(set(sample))
    boxes = [lv.box(i) for i in sample]
    assert min(b.x0 for b in boxes) == 0 and max(b.x1 for b in boxes) == 2000
    assert min(b.y0 for b in boxes) == 0 and max(b.y1 for b in boxes) == 2000


# --- descent --------------------------------------------------------------------------------------------


def test_descent_finds_a_target_visible_only_at_the_finer_levels(make_raster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    image = _grey_scene(make_raster, targets=((300, 340),))
    enc = CountingEncoder()
    with open_scene(image) as scene:
        pyr = Pyramid(scene, enc, "pyramid:16:top=16", tmp_path / "store", sample=16)
        assert pyr.n_levels == 5 and [lv.window for lv in pyr.levels] == [256, 128, 64, 32, 16]
        query = enc.encode_texts(["red"])
        result = descend(pyr, query, ["red"], k=5, threshold=0.5, beam=2, expand=4)
        target = PixelBox(x0=300, y0=340, x1=324, y1=364)
        best = result.hits[0][0]
        assert best.region.box.intersection(target) > 0 and best.confidence >= 0.5
        assert best.extra["level"] == 4 and best.region.scale == 0 and best.extra["window"] == 16
        # at level 0 the 24 px target is a speck in a 256 px window: nothing there passes the threshold
        (coarse,) = search_index(pyr.patches, pyr.info(0), query, ["red"], k=9, path="fast")
        assert max(h.confidence for h in coarse) < 0.5
        # only what was visited was encoded: a few windows per level, not the 1,000s of the finest level
        total = sum(lv.count for lv in pyr.levels)
        assert enc.windows == result.encoded < total / 20
        assert [v.level for v in result.visits] == list(range(5)) and result.start_level == 0
        assert not result.complete and 0 < result.finest_share < 0.05
        assert "of the finest level" in result.describe() and "levels 0-4 of 5" in result.describe()


def test_every_region_above_the_threshold_is_expanded_not_only_the_beam(make_raster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    targets = ((40, 40), (430, 440))
    image = _grey_scene(make_raster, targets=targets, target_px=40)
    boxes = [PixelBox(x0=x, y0=y, x1=x + 40, y1=y + 40) for x, y in targets]
    red_found = {}
    for threshold in (0.3, 1.0):  # 1.0: nothing can pass, so only the beam is followed
        enc = CountingEncoder()
        with open_scene(image) as scene:
            pyr = Pyramid(scene, enc, "pyramid:32:top=16", tmp_path / f"store{threshold}", sample=16)
            assert [lv.window for lv in pyr.levels] == [256, 128, 64, 32]
            pyr.fill(2)  # level 2 (64 px windows) complete: the descent starts there
            result = descend(pyr, enc.encode_texts(["red"]), ["red"], k=5, threshold=threshold, beam=1, expand=16)
        assert result.start_level == 2 and [v.level for v in result.visits] == [2, 3]
        top = result.hits[0][:10]
        red_found[threshold] = [any(h.region.box.intersection(b) > 0 for h in top) for b in boxes]
        if threshold == 0.3:
            assert result.visits[0].expanded > 1
    assert red_found[0.3] == [True, True]  # both sites followed down to the finest level
    assert red_found[1.0].count(True) == 1  # the beam alone follows one


def test_later_queries_reuse_what_earlier_ones_encoded(make_raster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    image = _grey_scene(make_raster, targets=((300, 340),))
    enc = CountingEncoder()
    with open_scene(image) as scene:
        pyr = Pyramid(scene, enc, "pyramid:16:top=16", tmp_path / "store", sample=16)
        red = enc.encode_texts(["red"])
        first = descend(pyr, red, ["red"], beam=2, expand=4)
        after_first = enc.windows
        again = descend(pyr, red, ["red"], beam=2, expand=4)
        assert again.encoded == 0 and enc.windows == after_first  # nothing re-encoded
        assert [h.region.box for h in again.hits[0]] == [h.region.box for h in first.hits[0]]
        # a new process on the same store reuses it too
        enc2 = CountingEncoder()
        pyr2 = Pyramid(scene, enc2, "pyramid:16:top=16", tmp_path / "store", sample=16)
        assert descend(pyr2, red, ["red"], beam=2, expand=4).encoded == 0 and enc2.windows == 0
        # another query encodes only windows not stored yet
        stored_before = sum(s.stored for s in pyr.status())
        other = descend(pyr, enc.encode_texts(["blue"]), ["blue"], beam=2, expand=4)
        stored_after = sum(s.stored for s in pyr.status())
        assert other.encoded == stored_after - stored_before == enc.windows - after_first


def test_results_equal_a_flat_search_once_every_level_is_complete(make_raster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    image = _grey_scene(make_raster, side=256, targets=((100, 60), (200, 180)))
    enc = TinyEncoder()
    store = tmp_path / "store"
    seen: list[IndexProgress] = []
    report = build_index(image, enc, "pyramid:16:top=16", store, sample=16, progress=seen.append)
    assert all(s.complete for s in report.levels) and report.encoded == report.n_patches
    assert {p.level for p in seen} == set(range(len(report.levels))) and all(p.stage == "index" for p in seen)
    assert build_index(image, enc, "pyramid:16:top=16", store).no_op
    flat = index_scene(image, enc, "grid:16:overlap=0.5", tmp_path / "flat").info
    query = enc.encode_texts(["red", "green"])
    with open_scene(image) as scene:
        pyr = Pyramid(scene, enc, "pyramid:16:top=16", store)
        result = descend(pyr, query, ["red", "green"], k=10, threshold=0.5)
    assert result.complete and result.finest_share == 1.0 and result.encoded == 0
    assert [v.level for v in result.visits] == [len(report.levels) - 1]  # a flat search of the finest level
    reference = search_index(PatchStore(open_store(tmp_path / "flat")), flat, query, ["red", "green"], k=10,
                             path="fast", min_confidence=0.5)
    for got, want in zip(result.hits, reference):
        assert [h.region.box for h in got] == [h.region.box for h in want]
        assert [round(h.score, 5) for h in got] == [round(h.score, 5) for h in want]
        assert [round(h.confidence, 5) for h in got] == [round(h.confidence, 5) for h in want]


def test_pyramid_index_searches_through_the_one_search_function(make_raster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    image = _grey_scene(make_raster, targets=((300, 340),))
    enc = TinyEncoder()
    seen: list[object] = []
    with open_scene(image) as scene:
        index = PyramidIndex(Pyramid(scene, enc, "pyramid:16:top=16", tmp_path / "store", sample=16), beam=2,
                             expand=4, on_search=seen.append)
        assert index.n_patches == index.pyramid.finest.count and not index.complete
        (hits,) = search_index(PatchStore(open_store(tmp_path / "store")), index, enc.encode_texts(["red"]), ["red"],
                               k=5, path="fast", min_confidence=0.5)
    assert hits[0].region.box.intersection(PixelBox(x0=300, y0=340, x1=324, y1=364)) > 0
    assert hits[0].extra["level"] == index.pyramid.n_levels - 1 and 0 < hits[0].extra["searched_share"] < 1
    assert hits[0].extra["finest_complete"] == 0 and len(seen) == 1


# --- resumption and background fill --------------------------------------------------------------------

_CHILD = """
import sys
from rsrag.tools.pyramid import build_index
from tests.index_doubles import TinyEncoder
build_index(sys.argv[1], TinyEncoder(delay=float(sys.argv[3])), "pyramid:16:top=16", sys.argv[2], batch_size=8, sample=16)
print("finished", flush=True)
"""


def _rows(store: Path, key: str) -> list[int]:
    ps = PatchStore(open_store(store))
    info = ps.info(key)
    if info is None:
        return []
    table = ps.store.open_table(ps.patch_table(info).schema)
    out: list[int] = []
    for batch in table.scan(where={"index_key": key}, fields=["patch"]):
        out += batch["patch"]
    return out


def test_filling_resumes_after_a_kill_mid_level(make_raster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    image = _grey_scene(make_raster, side=256)
    store = tmp_path / "store"
    enc = TinyEncoder()
    with open_scene(image) as scene:
        pyr = Pyramid(scene, enc, "pyramid:16:top=16", store)
        keys = [pyr.key(lv.level) for lv in pyr.levels]
        counts = [lv.count for lv in pyr.levels]
    assert counts[-1] > 2 * 64  # the finest level takes several commits
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(image), str(store), "0.02"], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(_rows(store, keys[-1])) < 64:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finest = _rows(store, keys[-1])
    assert 0 < len(finest) < counts[-1], "the run must be killed mid-level"
    assert len(finest) == len(set(finest))  # nothing half-written or duplicated
    kept = sum(len(_rows(store, k)) for k in keys)
    report = build_index(image, enc, "pyramid:16:top=16", store, sample=16)
    assert report.skipped == kept and report.encoded == sum(counts) - kept
    for key, n in zip(keys, counts):
        rows = _rows(store, key)
        assert sorted(rows) == list(range(n))
    assert all(s.complete for s in report.levels)


def test_background_filler_stops_cleanly_and_searches_keep_working(make_raster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    image = _grey_scene(make_raster, side=384, targets=((200, 120),))
    enc = CountingEncoder(delay=0.01)
    seen: list[IndexProgress] = []
    with open_scene(image) as scene:
        pyr = Pyramid(scene, enc, "pyramid:16:top=16", tmp_path / "store", sample=16, batch_size=8)
        first = descend(pyr, enc.encode_texts(["red"]), ["red"], beam=2, expand=4)
        filler = BackgroundFiller(pyr, progress=seen.append).start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(seen) < 3:
            time.sleep(0.02)
        assert filler.running
        # a search while the filler runs gets the lock first and still answers
        during = descend(pyr, enc.encode_texts(["red"]), ["red"], beam=2, expand=4)
        assert during.hits[0][0].region.box == first.hits[0][0].region.box
        t0 = time.monotonic()
        assert filler.stop(timeout=30) and time.monotonic() - t0 < 10
        assert not filler.running and filler.error is None
        assert seen and all(p.stage == "fill" and p.level == pyr.n_levels - 1 for p in seen)
        rows = _rows(tmp_path / "store", pyr.key(pyr.n_levels - 1))
        assert len(rows) == len(set(rows)) and len(rows) < pyr.finest.count and not pyr.complete(pyr.n_levels - 1)
        stored = len(rows)
        time.sleep(0.3)
        assert len(_rows(tmp_path / "store", pyr.key(pyr.n_levels - 1))) == stored  # nothing runs after stop
        # a new filler picks up where it stopped and completes the level
        done = BackgroundFiller(pyr).start()
        assert done.join(timeout=120) and done.error is None and pyr.complete(pyr.n_levels - 1)
        assert done.encoded == pyr.finest.count - stored
        last = descend(pyr, enc.encode_texts(["red"]), ["red"], beam=2, expand=4)
        assert last.complete and last.finest_share == 1.0 and last.visits[0].level == pyr.n_levels - 1


# --- windows without data -----------------------------------------------------------------------------


def _half_nodata_scene(make_raster, declared: bool, side: int = 256) -> Path:  # type: ignore[no-untyped-def]
    """The noisy grey scene with a red square at (60, 100) and its right half (x >= side/2) zero, declared
    nodata or not."""
    rng = np.random.default_rng(0)
    img = (118 + rng.integers(0, 20, (3, side, side))).astype(np.uint8)
    img[:, 100:124, 60:84] = RED[:, None, None]
    img[:, :, side // 2:] = 0
    return make_raster(img, name=f"half_{declared}.tif", nodata=0 if declared else None)


def test_windows_without_data_are_skipped_counted_as_searched_and_change_nothing_else(make_raster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from rsrag.tools.indexing import _read_size

    enc = CountingEncoder()
    with open_scene(_half_nodata_scene(make_raster, True)) as scene:
        pyr = Pyramid(scene, enc, "pyramid:16:top=16", tmp_path / "store", sample=16)
        red = enc.encode_texts(["red"])
        first = descend(pyr, red, ["red"], k=5, beam=2, expand=4)
        pyr.fill(pyr.finest.level)
        full = descend(pyr, red, ["red"], k=20, beam=2, expand=4)
        finest = pyr.finest
        empty = pyr.empty(finest.level)
        # windows are read decimated (bilinear): one flush with the border may see a data pixel, none further in
        assert {i for i in range(finest.count) if finest.box(i).x0 >= 136} <= empty
        assert not {i for i in range(finest.count) if finest.box(i).x0 < 128} & empty
        # the windows without data were never encoded, yet the level is complete and all of it was searched
        assert pyr.complete(finest.level) and pyr.status()[-1].stored == finest.count - len(empty)
        assert pyr.stored(finest.level) == set(range(finest.count)) and pyr.covered(finest.level) == finest.count
        assert enc.windows - sum(s.stored for s in pyr.status()[:-1]) == finest.count - len(empty)
        assert full.complete and full.finest_share == 1.0
        assert not {h.patch for h in full.hits[0]} & empty  # nothing without data is ranked
        # the target is found, before and after the fill
        target = PixelBox(x0=60, y0=100, x1=84, y1=124)
        assert all(r.hits[0][0].region.box.intersection(target) > 0 for r in (first, full))
        # the ranking is that of encoding every window with data the way it was encoded before
        with_data = [i for i in range(finest.count) if i not in empty]
        pixels = [scene.read_display(finest.box(i), out_size=_read_size(finest.spec(i, 8), 8)) for i in with_data]
        scores = TinyEncoder().encode_images(pixels) @ red[0]
        best = [with_data[j] for j in np.argsort(-scores)[:5]]
        assert [h.patch for h in full.hits[0][:5]] == best


def test_a_mostly_empty_scene_spends_its_spare_windows_on_a_wider_beam(make_raster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from rsrag.tools.pyramid import sparse_beam

    assert sparse_beam(12, 24, 1.0) == 12 and sparse_beam(12, 24, 0.75) == 16 and sparse_beam(12, 24, 0.02) == 24
    assert sparse_beam(12, 12, 0.1) == 12  # never past the expansion cap, never below the beam
    expanded = {}
    for declared in (True, False):
        with open_scene(_half_nodata_scene(make_raster, declared)) as scene:
            pyr = Pyramid(scene, CountingEncoder(), "pyramid:16:top=16", tmp_path / f"store_{declared}", sample=16)
            share = pyr.data_share()
            # the right half is nodata when declared; undeclared zeros are data
            assert (0.45 < share < 0.6) if declared else share == 1.0  # (a decimated read blurs the border)
            red = pyr.encoder.encode_texts(["red"])
            result = descend(pyr, red, ["red"], k=5, beam=2, expand=8, threshold=1.01)  # nothing passes the threshold
            expanded[declared] = result.visits[0].expanded
            target = PixelBox(x0=60, y0=100, x1=84, y1=124)
            assert result.hits[0][0].region.box.intersection(target) > 0
    assert expanded == {True: 4, False: 2}  # half the scene holds data: twice the regions per level


def test_data_share_reads_alpha_bands_and_nan_pixels(make_raster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from rasterio.enums import ColorInterp

    rng = np.random.default_rng(0)
    rgba = (118 + rng.integers(0, 20, (4, 256, 256))).astype(np.uint8)
    rgba[3] = 255
    rgba[3, :, 192:] = 0  # the right quarter is transparent
    path = make_raster(rgba, name="rgba.tif",
                       colorinterp=(ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha))
    with open_scene(path) as scene:
        assert scene.has_alpha
        share = Pyramid(scene, CountingEncoder(), "pyramid:16:top=16", tmp_path / "a").data_share()
        assert 0.7 < share < 0.85  # three quarters, the border blurred by the decimated read
    grey = (100 + rng.random((1, 256, 256)) * 50).astype(np.float32)
    grey[:, :128, :] = np.nan  # the top half is NaN: no data, though no nodata value is declared
    with open_scene(make_raster(grey, name="nan.tif")) as scene:
        assert not scene.has_alpha
        share = Pyramid(scene, CountingEncoder(), "pyramid:16:top=16", tmp_path / "f").data_share()
        assert 0.4 < share < 0.6


def test_a_statistics_sample_of_empty_windows_falls_back_to_the_windows_with_data(make_raster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    img = (118 + rng.integers(0, 20, (3, 256, 256))).astype(np.uint8)
    img[:, :, :128] = 0  # the left half holds no data: the one-window sample (window 0, top left) is empty
    enc = CountingEncoder()
    with open_scene(make_raster(img, nodata=0)) as scene:
        pyr = Pyramid(scene, enc, "pyramid:16:top=16", tmp_path / "store", sample=1)
        lv = pyr.levels[2]
        assert lv.sample(1) == [0]
        inside_empty = [i for i in range(lv.count) if lv.box(i).x1 <= 120]
        pyr.ensure(2, inside_empty)
        assert enc.windows == 0 and pyr.patches.count(pyr.info(2)) == 0 and set(inside_empty) <= pyr.empty(2)
        with_data = [i for i in range(lv.count) if lv.box(i).x0 >= 136][:5]
        assert pyr.ensure(2, with_data) == enc.windows == 5
        stats = pyr.patches.stats(pyr.info(2))  # from the stored windows with data, not from the empty sample
        assert stats.n == 5
        result = descend(pyr, enc.encode_texts(["grey"]), ["grey"], k=5, beam=2, expand=4)
        assert all(h.region.box.x1 > 120 for h in result.hits[0])


def test_coarse_levels_are_cropped_from_one_decimated_read_with_the_same_vectors(make_raster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from rsrag.tools import pyramid as pyramid_module
    from rsrag.tools.raster import Scene

    image = make_raster((118 + np.random.default_rng(1).integers(0, 60, (3, 512, 512))).astype(np.uint8),
                        overviews=(2, 4, 8, 16))
    vectors = {}
    for cached in (True, False):
        enc = TinyEncoder()
        calls: list[object] = []
        with open_scene(image) as scene:
            pyr = Pyramid(scene, enc, "pyramid:8:top=16", tmp_path / f"store{cached}", sample=16)
            if not cached:
                pyr.reader = lambda level: None  # type: ignore[method-assign]  # every window read from the file
            plain = Scene.read_display_valid

            def counting(self, box, out_size=None):  # type: ignore[no-untyped-def]
                calls.append(box)
                return plain(self, box, out_size)

            Scene.read_display_valid = counting  # type: ignore[method-assign]
            try:
                for lv in pyr.levels[:3]:
                    pyr.fill(lv.level)
            finally:
                Scene.read_display_valid = plain  # type: ignore[method-assign]
            counts = [lv.count for lv in pyr.levels[:3]]
            vectors[cached] = [pyr.patches.vectors(pyr.info(i), range(c)) for i, c in enumerate(counts)]
            if cached:  # levels 0-2 (windows 256, 128, 64 px read at 8 px): one read each instead of one per window
                assert [lv.window for lv in pyr.levels[:3]] == [256, 128, 64]
                assert len(calls) == 3 and pyramid_module.DECIMATED_MAX_BYTES > 3 * 64 * 64
                assert pyr.reader(pyr.n_levels - 1) is None  # the finest level (8 px at 8 px) is read window by window
            else:
                assert len(calls) == sum(counts)
    for got, want in zip(vectors[True], vectors[False]):
        cos = [float(got[i] @ want[i]) for i in want]
        assert min(cos) > 0.98 and float(np.mean(cos)) > 0.995


def test_content_among_windows_without_data_keeps_its_contrast() -> None:
    from rsrag.tools.hit import Hit
    from rsrag.tools.pyramid import local_contrast
    from rsrag.tools.region import Region

    lv = _levels(1024, 1024, size=64, top=1_000)[-1]  # 64 px windows, step 32: a 31 x 31 grid
    ncols = len(lv.xs)

    def hit(r: int, c: int, score: float) -> Hit:
        i = r * ncols + c
        return Hit(region=Region(scene="s", box=lv.box(i), scale=0), score=score, confidence=0.0, path="fast",
                   query="q", patch=i)

    # a block of content around (20, 20) whose windows all score 0.30, and one content window at (5, 5) scoring
    # 0.28 whose surroundings hold no data (never encoded, so never scored)
    # 0.28 whose surroundings hold no data (never encoded, so never scored); a stretch of farmland scoring 0.10
    block = [hit(r, c, 0.30) for r in range(16, 25) for c in range(16, 25)]
    farmland = [hit(r, c, 0.10) for r in range(26, 31) for c in range(0, 31)]
    lone = hit(5, 5, 0.28)
    around = {r * ncols + c for r in range(1, 10) for c in range(1, 10)} - {5 * ncols + 5}
    ranked = local_contrast(lv, [*block, *farmland, lone])
    assert ranked.index(lone) > 0  # no scored neighbour: contrast 0, no more than the block's windows
    ranked = local_contrast(lv, [*block, *farmland, lone], empty=around)
    assert ranked[0] is lone  # its neighbours hold nothing (counted at the level's lowest score): it stands out
