"""Re-ranking: RS-RAG weighted score, reciprocal rank fusion, MMR, spatial merging (hand-computed cases)."""

from __future__ import annotations

import numpy as np
import pytest

from rsrag.tools.errors import QueryError
from rsrag.tools.hit import Hit
from rsrag.tools.region import MapBox, PixelBox, Region
from rsrag.tools.rerank import merge_spatial, mmr, mmr_hits, reciprocal_rank_fusion, rsrag_scores


def _hit(x0: int, y0: int, size: int = 10, path: str = "fast", q: str = "q", scene: str = "s", **extra) -> Hit:  # type: ignore[no-untyped-def]
    mb = MapBox(crs="EPSG:3857", left=x0, bottom=-(y0 + size), right=x0 + size, top=-y0)
    region = Region(scene=scene, box=PixelBox(x0=x0, y0=y0, x1=x0 + size, y1=y0 + size), map_box=mb)
    return Hit(region=region, score=0.5, confidence=0.5, path=path, query=q, queries=(q,), extra=extra)  # type: ignore[arg-type]


def test_rsrag_score() -> None:
    s = rsrag_scores(np.array([0.9, 0.1]), np.array([0.2, 0.8]), alpha=0.7)
    assert np.allclose(s, [0.7 * 0.9 + 0.3 * 0.2, 0.7 * 0.1 + 0.3 * 0.8])
    with pytest.raises(QueryError):
        rsrag_scores(np.zeros(2), np.zeros(3))
    with pytest.raises(QueryError):
        rsrag_scores(np.zeros(2), np.zeros(2), alpha=1.5)


def test_rrf_matches_hand_computed_scores() -> None:
    a, b, c = _hit(0, 0), _hit(100, 0), _hit(200, 0)
    fast = [a, b]
    slow = [_hit(200, 0, path="slow", label="tank"), _hit(0, 0, path="slow", label="tank")]
    fused = reciprocal_rank_fusion([fast, slow], k=60)
    # a: 1/61 + 1/62; c: 1/61; b: 1/62
    assert [h.region.box.x0 for h in fused] == [0, 200, 100]
    assert fused[0].extra["rrf"] == pytest.approx(1 / 61 + 1 / 62, abs=1e-6)
    assert fused[0].extra["paths"] == "fast+slow" and fused[0].path == "fast" and fused[0].extra["label"] == "tank"
    assert fused[1].extra["paths"] == "slow" and fused[1].path == "slow" and c.region == fused[1].region
    assert len(reciprocal_rank_fusion([fast, slow], top=1)) == 1


def test_mmr_prefers_diverse_items() -> None:
    items = ["a", "a2", "b"]
    sim = {("a", "a2"): 0.99, ("a2", "a"): 0.99}
    pick = mmr(items, [1.0, 0.95, 0.6], lambda x, y: sim.get((x, y), 0.0), k=2, lam=0.5)
    assert pick == ["a", "b"]
    assert mmr(items, [1.0, 0.95, 0.6], lambda x, y: 0.0, k=2, lam=0.5) == ["a", "a2"]
    hits = [_hit(0, 0), _hit(2, 2), _hit(500, 500)]
    assert [h.region.box.x0 for h in mmr_hits(hits, k=2, lam=0.5)] == [0, 500]
    vecs = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float64)
    assert [h.region.box.x0 for h in mmr_hits(hits, k=2, lam=0.5, vectors=vecs)] == [0, 500]


def test_spatial_merge_keep_and_union() -> None:
    big = _hit(0, 0, size=20, q="ship")
    small = _hit(5, 5, size=10, path="slow", q="boat")
    far = _hit(100, 100)
    kept = merge_spatial([big, small, far])
    assert [h.region.box.as_tuple() for h in kept] == [(0, 0, 20, 20), (100, 100, 110, 110)]
    assert kept[0].merged == 1 and set(kept[0].queries) == {"ship", "boat"} and kept[0].extra["paths"] == "fast+slow"
    shifted = _hit(6, 0, size=10)
    union = merge_spatial([_hit(0, 0, size=10), shifted], max_overlap=0.3, mode="union")
    assert len(union) == 1 and union[0].region.box.as_tuple() == (0, 0, 16, 10)
    assert union[0].region.map_box is not None and union[0].region.map_box.as_tuple() == (0, -10, 16, 0)
    assert len(merge_spatial([_hit(0, 0, scene="x"), _hit(0, 0, scene="y")])) == 2
    with pytest.raises(QueryError):
        merge_spatial([big], mode="blend")


def test_weighted_rrf_lets_the_trusted_list_lead() -> None:
    fast, slow = [_hit(0, 0), _hit(100, 0)], [_hit(200, 0, path="slow"), _hit(100, 0, path="slow")]
    assert reciprocal_rank_fusion([fast, slow])[0].region.box.x0 == 100  # equal weights: 2/62 > 1/61
    fused = reciprocal_rank_fusion([fast, slow], weights=[0.5, 1.0])
    # 200: 1/61 = .01639; 100: .5/62 + 1/62 = .02419; 0: .5/61 = .0082
    assert [h.region.box.x0 for h in fused] == [100, 200, 0]
    with pytest.raises(QueryError):
        reciprocal_rank_fusion([fast, slow], weights=[1.0])


def test_fusion_keeps_the_most_confident_paths_verdict() -> None:
    """A place the slow path found confidently stays confident when the fast path listed it below the threshold."""
    weak = _hit(0, 0, path="fast").model_copy(update={"confidence": 0.2})
    strong = _hit(0, 0, path="slow").model_copy(update={"confidence": 0.9, "extra": {"label": "tank"}})
    other = _hit(300, 0, path="fast")
    (first, *_) = reciprocal_rank_fusion([[weak, other], [strong]], weights=[0.5, 1.0])
    assert first.region == weak.region and first.confidence == 0.9 and first.path == "slow"
    assert first.extra["paths"] == "fast+slow" and first.extra["label"] == "tank"
