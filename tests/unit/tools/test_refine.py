"""Refinement: an object smaller than the indexed windows is found by re-seeing the strongest candidates
through half-size windows; an absent thing stays not found; refined windows are stored and reused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rsrag.tools.calibration import FitConfig, PresenceCalibration, PresenceModel, fit_calibration
from rsrag.tools.pyramid import Pyramid, PyramidIndex, build_index
from rsrag.tools.raster import open_scene
from rsrag.tools.refine import fine_size, refinable
from rsrag.tools.region import PixelBox
from rsrag.tools.retrieval import cascade
from rsrag.tools.store import PatchStore, as_patch_store
from tests.captioned import make_folder
from tests.index_doubles import TinyEncoder
from tests.rasters import write_raster

COLOURS = {"Red": (220, 30, 30), "Green": (30, 200, 40), "Blue": (30, 40, 220), "Yellow": (230, 220, 20),
           "White": (250, 250, 250), "Black": (5, 5, 5)}
SMALL = FitConfig(per_class=8, n_mosaics=40, val_per_class=2, val_mosaics=20, scenes=100, scene_windows=20)
TILING = "pyramid:16"  # finest windows 16 px; the tiny encoder's input is 8 px, so refined windows are 8 px
SMALL_RED = PixelBox(x0=68, y0=60, x1=76, y1=68)
BIG_RED = PixelBox(x0=8, y0=8, x1=24, y1=24)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[TinyEncoder, PresenceCalibration, Path]:
    root = tmp_path_factory.mktemp("refine")
    enc = TinyEncoder()
    return enc, fit_calibration(enc, make_folder(root / "chips", COLOURS, n=20), config=SMALL), root


def _scene(root: Path, name: str, reds: list[PixelBox]) -> Path:
    img = np.empty((3, 96, 96), np.uint8)
    img[:] = np.array(COLOURS["Green"], np.uint8)[:, None, None]
    for b in reds:
        img[:, b.y0:b.y1, b.x0:b.x1] = np.array(COLOURS["Red"], np.uint8)[:, None, None]
    return write_raster(root / name, img)


def _indexed(enc: TinyEncoder, path: Path, store: PatchStore) -> PyramidIndex:
    scene = open_scene(path)
    build_index(scene, enc, TILING, store)
    return PyramidIndex(Pyramid(scene, enc, TILING, store))


def _model(enc: TinyEncoder, cal: PresenceCalibration, refined_found_at: float | None) -> PresenceModel:
    return PresenceModel(cal.model_copy(update={"refined_found_at": refined_found_at}), enc)


def _find(index: PyramidIndex, enc: TinyEncoder, store: PatchStore, model: PresenceModel, phrase: str,
          refine: int, exclude: tuple[PixelBox, ...] = ()):  # type: ignore[no-untyped-def]
    return cascade(index, enc, phrases=[phrase], store=store, top_k=5, threshold=0.5, presence=model, refine=refine,
                   exclude=exclude)


def _covers(box: PixelBox, target: PixelBox) -> bool:
    return box.intersection(target) >= 0.5 * target.area


def test_a_second_small_site_is_found_only_when_refined(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    enc, cal, _ = world
    store = as_patch_store(str(tmp_path / "store"))
    index = _indexed(enc, _scene(tmp_path, "two.tif", [BIG_RED, SMALL_RED]), store)
    model = _model(enc, cal, None)

    flat = _find(index, enc, store, model, "red", refine=0)
    assert flat.finding == "found"
    assert any(_covers(s.box, BIG_RED) for s in flat.sites)
    assert not any(_covers(s.box, SMALL_RED) for s in flat.sites)  # diluted in every 16 px window

    refined = _find(index, enc, store, model, "red", refine=8)
    assert any(_covers(s.box, BIG_RED) for s in refined.sites)
    small = [s for s in refined.sites if _covers(s.box, SMALL_RED)]
    assert small and small[0].presence is not None and small[0].presence >= model.site_at  # type: ignore[operator]
    assert small[0].box.area <= 4 * 16 * 16  # a tight box, not the whole scene
    assert all(m.extra.get("window") == fine_size(enc) for m in small[0].members)


def test_a_target_seen_only_at_the_finer_footprint_is_found_and_an_absent_one_is_not(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    enc, cal, _ = world
    store = as_patch_store(str(tmp_path / "store"))
    index = _indexed(enc, _scene(tmp_path, "small.tif", [SMALL_RED]), store)

    assert _find(index, enc, store, _model(enc, cal, 0.9), "red", refine=0).finding != "found"
    # refined windows add sites to a found target, but never make one found without refined_found_at
    assert _find(index, enc, store, _model(enc, cal, None), "red", refine=8).finding != "found"
    found = _find(index, enc, store, _model(enc, cal, 0.9), "red", refine=8)
    assert found.finding == "found" and any(_covers(s.box, SMALL_RED) for s in found.sites)
    absent = _find(index, enc, store, _model(enc, cal, 0.9), "blue", refine=8)
    assert absent.finding != "found" and absent.sites == []


def test_refined_windows_are_stored_once_and_reused(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    enc, cal, _ = world
    store = as_patch_store(str(tmp_path / "store"))
    index = _indexed(enc, _scene(tmp_path, "two.tif", [BIG_RED, SMALL_RED]), store)
    fine = refinable(index, enc)
    assert fine is not None and fine.finest.window == fine_size(enc)
    level = fine.n_levels - 1
    model = _model(enc, cal, None)

    assert fine.info(level) is None  # nothing encoded at the finer footprint before a search refines
    first = _find(index, enc, store, model, "red", refine=8)
    info = fine.info(level)
    assert info is not None
    stored = store.count(info)
    assert 0 < stored < fine.finest.count  # only the windows inside the candidates (and the stats sample)
    again = _find(index, enc, store, model, "red", refine=8)
    assert store.count(fine.info(level)) == stored  # type: ignore[arg-type]
    assert [s.box for s in again.sites] == [s.box for s in first.sites]


def test_excluded_places_stay_out_of_refined_sites(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    enc, cal, _ = world
    store = as_patch_store(str(tmp_path / "store"))
    index = _indexed(enc, _scene(tmp_path, "two.tif", [BIG_RED, SMALL_RED]), store)
    result = _find(index, enc, store, _model(enc, cal, None), "red", refine=8, exclude=(PixelBox(x0=0, y0=0, x1=40, y1=40),))
    assert not any(s.box.intersection(BIG_RED) for s in result.sites)


def test_flat_indexes_and_already_fine_pyramids_are_not_refined(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    enc, _, _ = world
    store = as_patch_store(str(tmp_path / "store"))
    scene = open_scene(_scene(tmp_path, "one.tif", [BIG_RED]))
    assert refinable(PyramidIndex(Pyramid(scene, enc, "pyramid:8", store)), enc) is None
    from rsrag.tools.indexing import index_scene

    assert refinable(index_scene(scene, enc, "grid:16", store, wait=True).info, enc) is None


def test_candidates_take_a_small_isolated_place_besides_a_resembling_background() -> None:
    from rsrag.tools.retrieval import refinement_candidates

    # a 4 x 4 grid of half-overlapping 16 px windows (step 8) over a background that resembles the target
    # (left half, presence 0.6-0.7), and one window of the right half where something small stands out (0.5)
    boxes, prob = [], []
    for r in range(4):
        for c in range(4):
            boxes.append(PixelBox(x0=8 * c, y0=8 * r, x1=8 * c + 16, y1=8 * r + 16))
            prob.append(0.7 - 0.02 * (r + c) if c < 2 else 0.05)
    boxes.append(PixelBox(x0=64, y0=64, x1=80, y1=80))
    prob.append(0.5)
    by_presence = refinement_candidates(boxes, np.asarray(prob), 1)
    assert by_presence == [boxes[0]]  # the strongest first
    assert boxes[-1] in refinement_candidates(boxes, np.asarray(prob), 2)  # then the one that stands out


class _RedWindows(PresenceModel):
    """Presence 0.8 for a window whose vector is the pure red one (it lies wholly on red), else 0.01: which
    windows see a red place is then exact, whatever the tiny encoder's calibration would say."""

    def presence(self, query, vectors):  # type: ignore[no-untyped-def,override]
        red = self.encoder.encode_images([np.full((8, 8, 3), COLOURS["Red"], np.uint8)])[0]  # type: ignore[union-attr]
        return np.where(np.asarray(vectors)[:, : red.shape[0]] @ red > 0.99, 0.8, 0.01)


def test_a_place_seen_by_one_window_is_an_unconfirmed_candidate_not_a_site(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    enc, cal, _ = world
    model = _RedWindows(cal.model_copy(update={"found_at": 0.7, "site_at": 0.5, "not_found_below": 0.3,
                                               "refined_found_at": 0.9}), enc)
    lone_red = PixelBox(x0=32, y0=32, x1=48, y1=48)  # exactly one 16 px window lies wholly on it
    wide_red = PixelBox(x0=16, y0=16, x1=64, y1=64)  # 25 windows do
    answers = {}
    for name, red in (("lone", lone_red), ("wide", wide_red)):
        store = as_patch_store(str(tmp_path / name))
        answers[name] = _find(_indexed(enc, _scene(tmp_path, f"{name}.tif", [red]), store), enc, store, model, "red", 0)
    lone, wide = answers["lone"], answers["wide"]
    assert wide.finding == "found" and any(_covers(s.box, wide_red) for s in wide.sites)
    # one window at 0.8 reaches found_at, but a lone window needs refined_found_at: not found on its own
    assert lone.finding == "uncertain" and lone.sites == []
    assert lone.candidates and _covers(lone.candidates[0].box, lone_red)  # listed first, unconfirmed
