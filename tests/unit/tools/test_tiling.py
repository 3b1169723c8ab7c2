"""Tiling schemes: coverage, determinism, scales, caps and bad parameters."""

from __future__ import annotations

import numpy as np
import pytest

from rsrag.tools.errors import TilingError
from rsrag.tools.tiling import parse_tiling


def coverage(spec: str, width: int, height: int) -> np.ndarray:
    hits = np.zeros((height, width), dtype=np.int32)
    for patch in parse_tiling(spec).patches(width, height):
        hits[patch.box.y0:patch.box.y1, patch.box.x0:patch.box.x1] += 1
    return hits


@pytest.mark.parametrize("spec", ["grid:64", "grid:64:overlap=0.25:scales=1,2", "vit:48", "cc:min=40", "split:4"])
def test_every_pixel_is_covered_and_no_patch_leaves_the_image(spec: str) -> None:
    width, height = 203, 150
    assert coverage(spec, width, height).min() >= 1
    for patch in parse_tiling(spec).patches(width, height):
        assert 0 <= patch.box.x0 < patch.box.x1 <= width
        assert 0 <= patch.box.y0 < patch.box.y1 <= height


def test_grid_overlap_and_scales() -> None:
    scheme = parse_tiling("grid:100:overlap=0.5:scales=2,1")
    assert scheme.id == "grid:100:overlap=0.5:scales=1,2"
    patches = list(scheme.patches(400, 300))
    fine = [p for p in patches if p.scale == 0]
    coarse = [p for p in patches if p.scale == 1]
    assert {p.box.width for p in fine} == {100} and {p.box.width for p in coarse} == {200}
    xs = sorted({p.box.x0 for p in fine})
    assert xs == [0, 50, 100, 150, 200, 250, 300]  # step of half a window
    assert all(p.read_size == 100 for p in patches)
    assert [p.index for p in patches] == list(range(len(patches)))
    assert scheme.count(400, 300) == len(patches)


def test_last_row_and_column_end_at_the_image_edge() -> None:
    patches = list(parse_tiling("vit:448").patches(1000, 500))
    assert sorted({p.box.x0 for p in patches}) == [0, 448, 552]
    assert sorted({p.box.y0 for p in patches}) == [0, 52]
    assert all(p.box.width == 448 and p.box.height == 448 for p in patches)


def test_complete_cover_grows_to_the_whole_image() -> None:
    patches = list(parse_tiling("cc:min=100:factor=2:overlap=0.5").patches(350, 300))
    sizes = sorted({p.box.width for p in patches})
    assert sizes == [100, 200, 350]
    whole = [p for p in patches if p.box.width == 350]
    assert whole[0].box.as_tuple() == (0, 0, 350, 300)


def test_split_reproduces_imagerag_grid_counts() -> None:
    assert parse_tiling("split:3").count(900, 900) == 1 + 4 + 9


def test_tiling_is_lazy_and_deterministic() -> None:
    scheme = parse_tiling("grid:512")
    first = next(iter(scheme.patches(100_000, 100_000)))
    assert first.box.as_tuple() == (0, 0, 512, 512)
    assert scheme.count(100_000, 100_000) == 196 * 196
    again = list(parse_tiling("grid:512").patches(2000, 1500))
    assert again == list(scheme.patches(2000, 1500))


def test_scales_larger_than_the_image_are_skipped() -> None:
    patches = list(parse_tiling("grid:100:scales=1,8").patches(300, 300))
    assert {p.scale for p in patches} == {0}


def test_patch_count_cap() -> None:
    with pytest.raises(TilingError, match=r"into 38,416 patches, over the cap of 1,000"):
        list(parse_tiling("grid:512:max=1000").patches(100_000, 100_000))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("grid:0", "size must be positive"),
        ("grid:-512", "size must be positive"),
        ("grid:abc", "size must be a whole number"),
        ("grid", "give the patch size"),
        ("grid:512:overlap=1.5", r"overlap must be in \[0, 1\)"),
        ("vit:0", "size must be positive"),
        ("cc:factor=1", "factor must be greater than 1"),
        ("hexagons:5", "unknown tiling scheme 'hexagons'"),
        ("", "empty tiling spec"),
        ("grid:512:colour=red", r"unexpected parameter\(s\) \['colour'\]"),
    ],
)
def test_bad_tiling_specs(spec: str, message: str) -> None:
    with pytest.raises(TilingError, match=message) as info:
        parse_tiling(spec)
    assert isinstance(info.value, ValueError)


def test_image_smaller_than_one_patch() -> None:
    with pytest.raises(TilingError, match=r"smaller than one patch \(512 px\).*grid:"):
        list(parse_tiling("grid:512").patches(100, 80))
