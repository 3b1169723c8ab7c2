"""Re-ranking, composable: RS-RAG's weighted image/text score, reciprocal rank fusion, MMR, spatial merging.

Every function takes and returns plain lists, so they chain in any order, e.g.::

    fused = reciprocal_rank_fusion([fast.hits, slow.hits])
    merged = merge_spatial(fused, mode="union")
    diverse = mmr_hits(merged, k=5)

Fused and merged hits keep their provenance in :attr:`Hit.extra` (``paths``, ``rrf``, ``labels``), so a trace
can say which path found each hit and why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from rsrag.tools.errors import QueryError
from rsrag.tools.hit import Hit
from rsrag.tools.region import MapBox, PixelBox

T = TypeVar("T")
RRF_K = 60
"""The usual reciprocal-rank-fusion constant (Cormack et al. 2009)."""


def rsrag_scores(image_sim: np.ndarray, text_sim: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """RS-RAG's re-ranking score ``alpha * cos(img, img) + (1 - alpha) * cos(text, chunk)``.

    Raises:
        QueryError: ``alpha`` outside [0, 1] or the arrays differ in shape.
    """
    if not 0.0 <= alpha <= 1.0:
        raise QueryError(f"alpha must be in [0, 1], got {alpha}")
    img = np.asarray(image_sim, dtype=np.float64)
    txt = np.asarray(text_sim, dtype=np.float64)
    if img.shape != txt.shape:
        raise QueryError(f"image and text similarities differ in shape: {img.shape} vs {txt.shape}")
    return alpha * img + (1.0 - alpha) * txt


def region_key(hit: Hit) -> tuple[str, tuple[int, int, int, int]]:
    """Identity of a hit's region (scene + pixel box): what fusion matches on."""
    return hit.region.scene, hit.region.box.as_tuple()


def _paths(hit: Hit) -> list[str]:
    raw = hit.extra.get("paths")
    return str(raw).split("+") if raw else [hit.path]


def reciprocal_rank_fusion(lists: Sequence[Sequence[Hit]], k: int = RRF_K, top: int | None = None,
                           weights: Sequence[float] | None = None) -> list[Hit]:
    """Fuse ranked hit lists (e.g. fast and slow) by ``sum(w / (k + rank))`` over the lists holding a region.

    ``weights`` (one per list, default all 1) let a more trusted list lead: e.g. the slow path's hits when
    the fast path found nothing confident.

    The fused hit is the most confident original (its ``path``, ``query``, ``score`` and ``confidence``; the
    best-ranked one among equally confident), with ``extra["rrf"]`` (the fused score), ``extra["paths"]``
    (every path that found the region, ``+``-joined) and the union of queries: a place the slow path found
    confidently stays confident when the fast path also listed it below the threshold.
    """
    if k <= 0:
        raise QueryError(f"the RRF constant must be positive, got {k}")
    ws = list(weights) if weights is not None else [1.0] * len(lists)
    if len(ws) != len(lists) or any(w < 0 for w in ws):
        raise QueryError(f"give one non-negative weight per list ({len(lists)} lists, weights {weights})")
    score: dict[tuple[str, tuple[int, int, int, int]], float] = {}
    best: dict[tuple[str, tuple[int, int, int, int]], tuple[int, Hit]] = {}
    extras: dict[tuple[str, tuple[int, int, int, int]], dict[str, str | float | int]] = {}
    queries: dict[tuple[str, tuple[int, int, int, int]], list[str]] = {}
    paths: dict[tuple[str, tuple[int, int, int, int]], list[str]] = {}
    for hits, w in zip(lists, ws):
        for rank, hit in enumerate(hits, 1):
            key = region_key(hit)
            score[key] = score.get(key, 0.0) + w / (k + rank)
            if key not in best or (hit.confidence, -rank) > (best[key][1].confidence, -best[key][0]):
                best[key] = (rank, hit)
            extras.setdefault(key, {}).update({n: v for n, v in hit.extra.items() if n not in extras.get(key, {})})
            queries.setdefault(key, []).extend(hit.queries or (hit.query,))
            paths.setdefault(key, []).extend(_paths(hit))
    order = sorted(score, key=lambda key: -score[key])[: top or None]
    out = []
    for key in order:
        hit = best[key][1]
        extra = {**extras[key], "rrf": round(score[key], 6), "paths": "+".join(dict.fromkeys(paths[key]))}
        out.append(hit.model_copy(update={"extra": extra, "queries": tuple(dict.fromkeys(queries[key]))}))
    return out


def mmr(candidates: Sequence[T], relevance: Sequence[float], similarity: Callable[[T, T], float],
        k: int, lam: float = 0.7) -> list[T]:
    """Maximal marginal relevance: pick ``k`` items maximising ``lam * rel - (1 - lam) * max sim to picked``."""
    if not 0.0 <= lam <= 1.0:
        raise QueryError(f"MMR lambda must be in [0, 1], got {lam}")
    rel = np.asarray(relevance, dtype=np.float64)
    if len(rel) != len(candidates):
        raise QueryError(f"{len(candidates)} candidates but {len(rel)} relevance scores")
    picked: list[int] = []
    left = list(range(len(candidates)))
    while left and len(picked) < k:
        def gain(i: int) -> float:
            red = max((similarity(candidates[i], candidates[j]) for j in picked), default=0.0)
            return lam * rel[i] - (1.0 - lam) * red
        best = max(left, key=gain)
        picked.append(best)
        left.remove(best)
    return [candidates[i] for i in picked]


def overlap(a: PixelBox, b: PixelBox) -> float:
    """Intersection over the smaller box's area (1.0 when one box contains the other)."""
    inter = a.intersection(b)
    return inter / min(a.area, b.area) if inter else 0.0


def spatial_similarity(a: Hit, b: Hit) -> float:
    """Similarity of two hits' places: :func:`overlap` of their boxes, 0 across scenes."""
    return overlap(a.region.box, b.region.box) if a.region.scene == b.region.scene else 0.0


def mmr_hits(hits: Sequence[Hit], k: int, lam: float = 0.7, vectors: np.ndarray | None = None) -> list[Hit]:
    """MMR over hits: relevance = rank-normalised order of ``hits``; similarity = cosine of ``vectors``
    (one unit row per hit) when given, else spatial overlap."""
    n = len(hits)
    rel = [1.0 - i / max(n, 1) for i in range(n)]
    if vectors is None:
        return mmr(list(hits), rel, spatial_similarity, k, lam)
    vec = np.asarray(vectors, dtype=np.float64)
    if vec.shape[0] != n:
        raise QueryError(f"{n} hits but {vec.shape[0]} vectors")
    sim = vec @ vec.T
    picked = mmr(list(range(n)), rel, lambda i, j: float(sim[i, j]), k, lam)
    return [hits[i] for i in picked]


def merge_spatial(hits: Sequence[Hit], max_overlap: float = 0.5, mode: str = "keep") -> list[Hit]:
    """Merge overlapping hits of one scene across scales, phrases and paths (hits in rank order): the one
    non-maximum suppression of rsrag (the fast and slow paths call it on hits ranked by confidence).

    Args:
        hits: ranked hits.
        max_overlap: overlap (intersection over the smaller box) above which two hits are one place.
        mode: ``keep``: the better-ranked hit's box stays (NMS); ``union``: the kept box grows to cover both.
    """
    if mode not in ("keep", "union"):
        raise QueryError(f"merge mode must be 'keep' or 'union', got {mode!r}")
    kept: list[Hit] = []
    for hit in hits:
        for i, k in enumerate(kept):
            if spatial_similarity(k, hit) > max_overlap:
                update: dict[str, object] = {
                    "queries": tuple(dict.fromkeys(k.queries + hit.queries)), "merged": k.merged + 1 + hit.merged,
                    "extra": {**hit.extra, **k.extra, "paths": "+".join(dict.fromkeys(_paths(k) + _paths(hit)))},
                }
                if mode == "union":
                    box: PixelBox = k.region.box.union(hit.region.box)
                    update["region"] = k.region.model_copy(update={"box": box, "map_box": _union_map(k, hit)})
                kept[i] = k.model_copy(update=update)
                break
        else:
            kept.append(hit)
    return kept


def _union_map(a: Hit, b: Hit) -> MapBox | None:
    """Union of two north-up map boxes in the same CRS (``None`` when either is missing or CRSs differ)."""
    ma, mb = a.region.map_box, b.region.map_box
    if ma is None or mb is None or ma.crs != mb.crs:
        return None
    return MapBox(crs=ma.crs, left=min(ma.left, mb.left), bottom=min(ma.bottom, mb.bottom),
                  right=max(ma.right, mb.right), top=max(ma.top, mb.top))
