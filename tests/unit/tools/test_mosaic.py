"""Analyst scenes: a georeferenced tiled GeoTIFF whose pixels match the ground truth, deterministic by seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from rsrag.tools.captioned import read_chips, select_split
from rsrag.tools.errors import DataError
from rsrag.tools.mosaic import FAMILIES, build_scene, build_scene_set, plan_roles, read_truth
from rsrag.tools.raster import open_scene
from tests.captioned import make_folder

COLOURS = {
    "Farmland": (40, 160, 40), "Forest": (10, 80, 10), "Meadow": (120, 200, 90), "Desert": (220, 200, 120),
    "StorageTanks": (230, 230, 230), "Airport": (90, 90, 90), "Stadium": (200, 30, 30), "Church": (30, 30, 200),
    "Port": (30, 180, 200), "Bridge": (150, 100, 50),
}


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    # 20 chips per class: enough for the validation split (10%) to hold 2 per class, and for 4-chip sites
    return make_folder(tmp_path / "chips", COLOURS, n=20)


def _cell_colour(data: np.ndarray, x: int, y: int, cell: int) -> np.ndarray:
    return data[:, y * cell:(y + 1) * cell, x * cell:(x + 1) * cell].reshape(3, -1).mean(axis=1)


def test_scene_pixels_match_the_truth_and_it_is_georeferenced(folder: Path, tmp_path: Path) -> None:
    chips = read_chips(folder)
    scene = build_scene(chips, tmp_path / "s.tif", backgrounds=["Farmland", "Forest", "Meadow", "Desert"],
                        present={"StorageTanks": 3, "Stadium": 2}, absent=["Airport"], seed=4, side=10, cell_px=32)
    truth = read_truth(scene.path)
    assert truth == scene.truth and truth.absent == ("Airport",)
    assert {k: len(v) for k, v in truth.present.items()} == {"StorageTanks": 3, "Stadium": 2}
    with rasterio.open(scene.path) as ds:
        assert ds.crs.to_string() == "EPSG:32633" and ds.is_tiled and ds.width == 320 and ds.count == 3
        assert ds.overviews(1) == []  # too small for overviews; larger scenes get them
        data = ds.read()
        transform = ds.transform
    # every site cell shows its class's colour (within the shade range of make_folder), backgrounds elsewhere
    for label, boxes in truth.present.items():
        for box, map_box in zip(boxes, truth.present_map[label]):
            assert box.width in (32, 64) and box.width == box.height
            for x in range(box.x0 // 32, box.x1 // 32):
                for y in range(box.y0 // 32, box.y1 // 32):
                    assert np.abs(_cell_colour(data, x, y, 32) - COLOURS[label]).max() <= 191
            left, top = transform * (box.x0, box.y0)
            assert (map_box.left, map_box.top) == pytest.approx((left, top))
    # the north-west quadrant is farmland wherever no site is
    site_cells = {(x, y) for boxes in truth.present.values() for b in boxes
                  for x in range(b.x0 // 32, b.x1 // 32) for y in range(b.y0 // 32, b.y1 // 32)}
    for x in range(5):
        for y in range(5):
            if (x, y) not in site_cells:
                assert np.abs(_cell_colour(data, x, y, 32) - COLOURS["Farmland"]).max() <= 191
    # sites are separate places: no two touch
    boxes = [b for v in truth.present.values() for b in v]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert max(a.x0, b.x0) > min(a.x1, b.x1) or max(a.y0, b.y0) > min(a.y1, b.y1)
    assert open_scene(scene.path).crs is not None


def test_scene_set_is_deterministic_rotates_targets_and_uses_validation_chips(folder: Path, tmp_path: Path) -> None:
    targets = ["StorageTanks", "Airport", "Stadium", "Church", "Port", "Bridge"]
    a = build_scene_set(folder, tmp_path / "a", n_scenes=3, seed=2, side=8, classes=targets)
    b = build_scene_set(folder, tmp_path / "b", n_scenes=3, seed=2, side=8, classes=targets)
    assert [s.truth for s in a] == [s.truth.model_copy(update={}) for s in b]
    for sa, sb in zip(a, b):
        with rasterio.open(sa.path) as da, rasterio.open(sb.path) as db:
            assert np.array_equal(da.read(), db.read())
    # site chips are validation chips: their flat shade is one of the validation images' shades
    val = {c.image.name for c in select_split(read_chips(folder), "val")}
    val_shades = {label: [np.clip(np.array(COLOURS[label]) + 10 * int(n.rsplit("_", 1)[1].split(".")[0]), 0, 255)
                          for n in val if n.startswith(label.lower() + "_")] for label in COLOURS}
    for s in a:
        with rasterio.open(s.path) as ds:
            data = ds.read()
        for label, boxes in s.truth.present.items():
            for box in boxes:
                got = _cell_colour(data, box.x0 // 150, box.y0 // 150, 150)
                assert min(np.abs(got - shade).max() for shade in val_shades[label]) < 1.0
    used = [c for s in a for c in (*s.truth.present, *s.truth.absent)]
    assert set(used) == set(targets)  # 3 scenes x 4 slots cover the 6 targets
    for s in a:
        assert len(s.truth.present) == 2 and len(s.truth.absent) == 2
        assert all(2 <= len(v) <= 4 for v in s.truth.present.values())
        assert not set(s.truth.backgrounds.values()) & {*s.truth.present, *s.truth.absent}
    other = build_scene_set(folder, tmp_path / "c", n_scenes=3, seed=3, side=8, classes=targets)
    assert [s.truth.present for s in other] != [s.truth.present for s in a]
    # a second call reuses the written scenes
    mtime = a[0].path.stat().st_mtime_ns
    assert build_scene_set(folder, tmp_path / "a", n_scenes=3, seed=2, side=8, classes=targets)[0].truth == a[0].truth
    assert a[0].path.stat().st_mtime_ns == mtime


def test_roles_avoid_confusable_backgrounds() -> None:
    classes = ["StorageTanks", "Airport", "MediumResidential", "Desert", "Church", "Port", "Bridge", "Stadium"]
    for backs, present, absent in plan_roles(classes, 12, seed=0):
        targets = {*present, *absent}
        assert len(backs) == 4 and len(targets) == 4 and not set(backs) & targets
        for fam in FAMILIES:
            assert not (fam & set(backs) and fam & targets)


def test_bad_roles_are_data_errors(folder: Path, tmp_path: Path) -> None:
    chips = read_chips(folder)
    backs = ["Farmland", "Forest", "Meadow", "Desert"]
    with pytest.raises(DataError, match="two roles"):
        build_scene(chips, tmp_path / "x.tif", backgrounds=backs, present=["Forest"], side=8)
    with pytest.raises(DataError, match="no chips"):
        build_scene(chips, tmp_path / "x.tif", backgrounds=backs, present=["Golf"], side=8)
    with pytest.raises(DataError, match="4 background"):
        build_scene(chips, tmp_path / "x.tif", backgrounds=backs[:3], present=["Port"], side=8)
    with pytest.raises(DataError, match="no room"):
        build_scene(chips, tmp_path / "x.tif", backgrounds=backs, present={"Port": 4, "Church": 4}, side=4)
