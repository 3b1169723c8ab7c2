"""The workspace's default index is the scene's pyramid: ready at once, searched coarse to fine, filled in the
background when asked, with progress for listeners; flat tilings still work."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from rsrag.agent.workspace import Workspace
from rsrag.tools.indexing import IndexProgress
from rsrag.tools.pyramid import PyramidIndex
from rsrag.tools.store import IndexInfo
from tests.configured import settings_for
from tests.presence_doubles import save_undecided_calibration


def _scene(make_raster, side: int = 256) -> Path:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    img = (100 + rng.integers(0, 60, (3, side, side))).astype(np.uint8)
    img[:, 100:140, 60:100] = np.array([220, 30, 30], dtype=np.uint8)[:, None, None]
    return make_raster(img)


def test_default_settings_index_scenes_as_pyramids() -> None:
    from rsrag.agent.settings import load_settings

    settings = load_settings()
    assert settings.store.tiling == "pyramid" and settings.pyramid.background_fill == "serve"


def test_pyramid_index_is_ready_at_once_and_a_search_encodes_only_what_it_visits(make_raster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(tmp_path, **{"store.tiling": "pyramid:16:top=16", "pyramid.sample": 9,
                                         "pyramid.beam": 3, "pyramid.expand": 5})
    workspace = Workspace(settings)
    seen: list[IndexProgress] = []
    remove = workspace.add_index_listener(seen.append)
    try:
        scene = workspace.scene(_scene(make_raster))
        index = workspace.index(scene)
        assert isinstance(index, PyramidIndex) and (index.beam, index.expand) == (3, 5)
        assert index.pyramid.sample == 9 and not seen  # nothing encoded before the first search
        result = workspace.retrieve(scene, ["red roofs"], top_k=3, threshold=0.5, slow="never")
        assert result.hits and all(h.extra["level"] == index.pyramid.n_levels - 1 for h in result.hits)
        assert 0 < result.hits[0].extra["searched_share"] < 1
        assert result.searched_share == max(h.extra["searched_share"] for h in result.hits) < 1  # the result says so
        assert seen and {p.stage for p in seen} == {"descend"} and all(p.scene == scene.fingerprint for p in seen)
        assert workspace.filling(scene) is None  # background fill is off outside serve by default
    finally:
        remove()
        workspace.close()


def test_background_fill_after_the_first_search_and_clean_stop(make_raster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(tmp_path, **{"store.tiling": "pyramid:16:top=16", "pyramid.sample": 9,
                                         "pyramid.background_fill": "always"})
    workspace = Workspace(settings)
    assert workspace.background_fill  # "always": ask and chat fill too
    seen: list[IndexProgress] = []
    workspace.add_index_listener(seen.append)
    scene = workspace.scene(_scene(make_raster, side=384))
    workspace.retrieve(scene, ["red roofs"], top_k=3, threshold=0.5, slow="never")
    filler = workspace.filling(scene)
    assert filler is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(p.stage == "fill" for p in seen):
        time.sleep(0.05)
    assert any(p.stage == "fill" for p in seen)
    assert workspace.stop_filling(timeout=30) and not filler.running and filler.error is None
    workspace.close()


def test_a_flat_tiling_is_still_one_complete_index(make_raster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    workspace = Workspace(settings_for(tmp_path, **{"store.tiling": "grid:64"}))
    try:
        scene = workspace.scene(_scene(make_raster))
        index = workspace.index(scene)
        assert isinstance(index, IndexInfo) and index.complete and index.tiling.startswith("grid:64")
        assert not workspace.uses_pyramid and workspace.start_filling(scene) is None
    finally:
        workspace.close()


def test_an_uncertain_search_on_a_small_scene_encodes_the_rest_and_searches_it_whole(make_raster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(tmp_path, **{"store.tiling": "pyramid:32:top=16", "pyramid.sample": 9,
                                         "pyramid.beam": 2, "pyramid.expand": 2, "pyramid.complete_below": 0})
    workspace = Workspace(settings)
    seen: list[IndexProgress] = []
    workspace.add_index_listener(seen.append)
    try:
        save_undecided_calibration(workspace.encoder)
        assert workspace.presence.calibrated
        scene = workspace.scene(_scene(make_raster))
        finest = workspace.pyramid(scene).finest.count
        result = workspace.retrieve(scene, ["red roofs"], top_k=3, threshold=0.5, slow="never")
        # still uncertain (the model cannot decide), but now said of the whole scene, not of a part of it
        assert result.finding == "uncertain" and result.searched_share == 1.0
        assert 0 < result.completed_windows < finest and workspace.index(scene).complete
        assert any(p.stage == "index" for p in seen)
        again = workspace.retrieve(scene, ["red roofs"], top_k=3, threshold=0.5, slow="never")
        assert again.completed_windows == 0  # nothing left to encode
    finally:
        workspace.close()
        from rsrag.tools.calibration import clear_presence_cache

        clear_presence_cache()


def test_settling_is_bounded_by_settle_below(make_raster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for limit in (0, 3):  # off, and fewer windows allowed than are left
        settings = settings_for(tmp_path / str(limit), **{"store.tiling": "pyramid:32:top=16", "pyramid.sample": 9,
                                                          "pyramid.beam": 2, "pyramid.expand": 2,
                                                          "pyramid.settle_below": limit, "pyramid.complete_below": 0})
        workspace = Workspace(settings)
        try:
            save_undecided_calibration(workspace.encoder)
            scene = workspace.scene(_scene(make_raster))
            result = workspace.retrieve(scene, ["red roofs"], top_k=3, threshold=0.5, slow="never")
            assert result.finding == "uncertain" and result.completed_windows == 0 and result.searched_share < 1
            assert not workspace.index(scene).complete
        finally:
            workspace.close()
    from rsrag.tools.calibration import clear_presence_cache

    clear_presence_cache()


def test_a_small_scene_is_searched_whole_from_the_first_question(make_raster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A scene whose finest level has at most ``pyramid.complete_below`` windows is encoded whole before the first
    search (a descent would cost nearly as much and see less), so even its first answer comes from a full search;
    a larger scene still descends."""
    settings = settings_for(tmp_path, **{"store.tiling": "pyramid:32:top=16", "pyramid.sample": 9,
                                         "pyramid.beam": 2, "pyramid.expand": 2, "pyramid.complete_below": 300})
    workspace = Workspace(settings)
    seen: list[IndexProgress] = []
    workspace.add_index_listener(seen.append)
    try:
        small = workspace.scene(_scene(make_raster))  # 256 px: 225 finest windows of 32 px
        finest = workspace.pyramid(small).finest.count
        assert finest <= 300
        result = workspace.retrieve(small, ["red roofs"], top_k=3, threshold=0.5, slow="never")
        assert result.completed_windows == finest and result.searched_share == 1.0
        assert workspace.index(small).complete and any(p.stage == "index" for p in seen)
        assert all(h.extra["finest_complete"] == 1 for h in result.hits)
        # only the finest level was encoded: no descent through the coarse ones
        assert not any(workspace.pyramid(small).complete(lv.level) for lv in workspace.pyramid(small).levels[:-1])
        again = workspace.retrieve(small, ["red roofs"], top_k=3, threshold=0.5, slow="never")
        assert again.completed_windows == 0 and again.searched_share == 1.0
        large = workspace.scene(_scene(make_raster, side=384))  # 529 finest windows: more than the limit
        assert workspace.pyramid(large).finest.count > 300
        first = workspace.retrieve(large, ["red roofs"], top_k=3, threshold=0.5, slow="never")
        assert first.completed_windows == 0 and first.searched_share < 1 and not workspace.index(large).complete
    finally:
        workspace.close()
