"""The one vector search and the one cascade: calibrated hits, every site above the threshold, fusion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rsrag.tools.errors import QueryError
from rsrag.tools.fastpath import embed_phrases
from rsrag.tools.indexing import index_scene
from rsrag.tools.region import PixelBox
from rsrag.tools.retrieval import Calibration, cascade, search_index
from rsrag.tools.store import PatchStore, open_store

from tests.index_doubles import TinyEncoder

RED_SITES = [(32, 32), (192, 32), (32, 192), (160, 160)]
THRESHOLD = 0.25
"""Four equal red squares raise this small scene's score spread: the best windows sit at z ~ 2.9 (0.46)."""


@pytest.fixture
def four_red_sites(make_raster, tmp_path: Path):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    data = rng.integers(100, 140, (3, 256, 256)).astype(np.uint8)
    for x, y in RED_SITES:
        data[:, y:y + 32, x:x + 32] = np.array([220, 30, 30], dtype=np.uint8)[:, None, None]
    enc = TinyEncoder()
    store = open_store(tmp_path / "s")
    info = index_scene(make_raster(data), enc, "grid:32:overlap=0.5", store).info
    return enc, PatchStore(store), info


def _covers(box: PixelBox, x: int, y: int) -> bool:
    return box.intersection(PixelBox.from_xywh(x, y, 32, 32)) >= 32 * 32 // 2


def test_search_index_calibrates_and_fetches_everything_above_a_confidence(four_red_sites) -> None:  # type: ignore[no-untyped-def]
    enc, patches, info = four_red_sites
    query = embed_phrases(enc, ["red"])
    (few,) = search_index(patches, info, query, ["red"], k=2, path="fast")
    assert len(few) == 2 and few[0].path == "fast" and few[0].query == "red" and few[0].index_key == info.key
    assert few[0].confidence >= few[1].confidence and few[0].z is not None
    # the confidence is the calibrated z-score of the raw score against this scene's statistics
    z = patches.stats(info).zscores(query[0], np.array([few[0].score]))
    assert few[0].confidence == pytest.approx(float(Calibration().confidence(z)[0]))
    # asked for 2, but every patch at or above the threshold comes back: the ones a full ranking puts there
    (deep,) = search_index(patches, info, query, ["red"], k=2, path="fast", min_confidence=THRESHOLD)
    (full,) = search_index(patches, info, query, ["red"], k=info.n_patches, path="fast")
    above = [h for h in full if h.confidence >= THRESHOLD]
    assert len(above) > 4 and [h.region.box for h in deep if h.confidence >= THRESHOLD] == [h.region.box for h in above]
    assert all(any(_covers(h.region.box, x, y) for h in above) for x, y in RED_SITES)
    with pytest.raises(QueryError, match="one query text"):
        search_index(patches, info, query, ["red", "blue"], k=2, path="fast")


def test_cascade_returns_every_site_above_the_threshold_whatever_top_k(four_red_sites) -> None:  # type: ignore[no-untyped-def]
    enc, patches, info = four_red_sites
    result = cascade(info, enc, phrases=["red"], store=patches, top_k=1, threshold=THRESHOLD)
    assert result.path == "fast" and not result.used_slow and "fast-path hits reached" in result.reason
    assert len(result.sites) == len(RED_SITES) and not result.candidates
    for x, y in RED_SITES:  # each planted square is exactly one site, even with top_k=1
        assert sum(_covers(s.region.box, x, y) for s in result.sites) == 1
    # overlapping windows of one square are members of its site, not separate results
    assert all(len(s.members) > 1 for s in result.sites)
    assert {h.region.box for s in result.sites for h in s.members} == {h.region.box for h in result.confident}
    assert result.levels == [info.tiling] and result.searched_share == 1.0


def test_cascade_without_a_confident_hit_keeps_unconfirmed_candidates(four_red_sites) -> None:  # type: ignore[no-untyped-def]
    enc, patches, info = four_red_sites
    result = cascade(info, enc, phrases=["red"], store=patches, top_k=3, threshold=1.0)
    assert not result.sites and result.candidates and all(s.confidence < 1.0 for s in result.candidates)
    assert "no fast-path hit reached confidence 1" in result.reason and "no visual concept library" in result.reason
    with pytest.raises(QueryError, match="slow must be"):
        cascade(info, enc, phrases=["red"], store=patches, top_k=3, threshold=0.5, slow="sometimes")  # type: ignore[arg-type]


def test_confidence_of_extreme_z_scores_is_finite_and_silent() -> None:
    import warnings

    from rsrag.tools.retrieval import Calibration

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow in exp would be a RuntimeWarning on the user's terminal
        conf = Calibration().confidence(np.array([-1e6, 0.0, 3.0, 1e6]))
    assert conf[0] == pytest.approx(0.0) and conf[2] == pytest.approx(0.5) and conf[3] == pytest.approx(1.0)
