"""Retrieval: one vector search over one index, and one cascade over the fast and slow paths.

Two functions are the whole of rsrag's patch retrieval; every caller (the agent's tools, the ImageRAG
pipeline graph, the rule policy through the tools, the CLI and every benchmark) goes through them:

* :func:`search_index` is the only place a query vector meets a patch index: vector search in the store,
  the within-scene z-score of each score, the confidence it maps to (:class:`Calibration`), and a
  :class:`~rsrag.tools.hit.Hit` per patch. It searches *one* index (a flat tiling, or one level of a
  pyramid), so a multi-level search calls it once per level. With ``min_confidence`` it keeps fetching
  until every patch at or above that confidence is in the result (scores are monotone in confidence), so
  no site above the threshold is lost to a top-k.
* :func:`cascade` is ImageRAG's cascade: the fast path (phrases -> text embeddings); when none of its hits
  reaches the threshold (or ``slow="always"``), the slow path too (phrases -> concept labels -> their
  chips as proxies), the two ranked lists fused by weighted reciprocal rank fusion. The result keeps every
  hit at or above the threshold and groups them into :class:`~rsrag.tools.sites.Site` s; when nothing is
  confident, the closest candidates are kept as unconfirmed sites.

The fast and slow paths (:mod:`rsrag.tools.fastpath`, :mod:`rsrag.tools.slowpath`) are built on
:func:`search_index` (they import it when called, since this module imports them for the cascade).
Confidence (independent of patch count) is explained in :mod:`rsrag.tools.fastpath`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict
from rsrag.tools.calibration import Finding
from rsrag.tools.encoders.hubness import as_queries, plain
from rsrag.tools.errors import QueryError
from rsrag.tools.fastpath import FastPathResult, extract_key_phrases, fast_search
from rsrag.tools.hit import Hit, HitPath
from rsrag.tools.rerank import merge_spatial, reciprocal_rank_fusion
from rsrag.tools.sites import Site, group_sites
from rsrag.tools.slowpath import SlowPathResult, slow_search
from rsrag.tools.store import IndexInfo, PatchStore, region_from_row

if TYPE_CHECKING:
    from rsrag.tools.calibration import PresenceModel
    from rsrag.tools.encoders.base import Encoder
    from rsrag.tools.knowledge.base import KnowledgeBase
    from rsrag.tools.pyramid import PyramidIndex, PyramidSearch
    from rsrag.tools.region import PixelBox

MAX_HITS = 4096
"""Most hits one query vector returns from one index, however many pass ``min_confidence`` (a phrase
that matches a whole city); a result that stopped there says so (``truncated``)."""

SlowMode = Literal["auto", "always", "never"]
PRESENCE_POOL = 512
"""Windows below the threshold whose presence is also scored (the strongest by confidence): a site the
within-scene confidence under-rates (several sites of one class widen the scene's score spread) is still
found when its calibrated presence says so."""

REFINE_OVERLAP = 0.25
"""Most share of a refinement candidate's area another candidate may cover: windows half overlapping a
candidate (its neighbours on the grid) are the same place and are skipped, so the candidates spread over
places rather than over the windows of one large site."""


@dataclass(frozen=True)
class Calibration:
    """Mapping of a within-scene z-score to a confidence: ``sigmoid(slope * (z - center))``."""

    center: float = 3.0
    slope: float = 2.0

    def confidence(self, z: np.ndarray) -> np.ndarray:
        x = self.slope * (np.asarray(z, dtype=np.float64) - self.center)
        return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))  # clipped: a z-score far out overflows exp


def search_index(
    patches: PatchStore,
    index: IndexInfo | PyramidIndex,
    vectors: np.ndarray,
    queries: Sequence[str],
    *,
    k: int,
    path: HitPath,
    min_confidence: float | None = None,
    calibration: Calibration | None = None,
    prompt_version: str | None = None,
    extras: Sequence[Mapping[str, str | float | int]] | None = None,
    max_hits: int = MAX_HITS,
    searches: list[PyramidSearch] | None = None,
) -> list[list[Hit]]:
    """Search one index with query vectors: one ranked list of calibrated hits per vector.

    Args:
        patches: the patch store holding ``index``.
        index: the index to search: a flat tiling or one pyramid level; a whole scene pyramid
            (:class:`~rsrag.tools.pyramid.PyramidIndex`) delegates to its coarse-to-fine descent, which
            calls this function per level.
        vectors: unit query vectors, shape ``(n, dim)`` (or ``(dim,)`` for one), the encoder's own (plain)
            vectors; an index of hub-corrected keys is searched with them as
            :func:`~rsrag.tools.encoders.hubness.as_queries` makes them.
        queries: the text each vector stands for (recorded as the hits' ``query``), one per vector.
        k: patches fetched per vector (at least; see ``min_confidence``).
        path: the retrieval path the hits are recorded as (fast / slow / similar).
        min_confidence: when given, keep fetching (doubling ``k``) until the last patch fetched is below
            this confidence, so every patch at or above it is returned (up to ``max_hits``).
        calibration: z-score to confidence mapping (default :class:`Calibration`).
        prompt_version: recorded on each hit (the prompt templates that embedded the query).
        extras: provenance per vector, copied into each hit's ``extra`` (e.g. the concept that proxied it).
        max_hits: most hits per vector.
        searches: where a pyramid's descent reports what it searched (levels, share of the finest level).

    Raises:
        QueryError: ``k`` not positive, or ``queries``/``extras`` not one per vector.
    """
    vecs = np.asarray(vectors, dtype=np.float32)
    vecs = vecs[None] if vecs.ndim == 1 else vecs
    if k <= 0:
        raise QueryError(f"k must be positive, got {k}")
    if len(queries) != len(vecs) or (extras is not None and len(extras) != len(vecs)):
        raise QueryError(f"give one query text (and extra) per vector: {len(vecs)} vectors, {len(queries)} texts")
    if getattr(index, "is_pyramid", False):
        descent = index.search(vecs, list(queries), k=k, path=path, min_confidence=min_confidence,  # type: ignore[union-attr]
                               calibration=calibration, prompt_version=prompt_version, extras=extras)
        if searches is not None:
            searches.append(descent)
        return [list(hits) for hits in descent.hits]
    assert isinstance(index, IndexInfo)
    if getattr(index, "is_pyramid", False):  # a scene's pyramid: descend it, one search_index call per level
        return index.search(vecs, queries, k=k, path=path, min_confidence=min_confidence,  # type: ignore[union-attr]
                            calibration=calibration, prompt_version=prompt_version, extras=extras).hits
    cal = calibration or Calibration()
    stats = patches.stats(index)
    # an index of hub-corrected keys is searched with query vectors; text queries (the fast path) are corrected
    vecs = as_queries(vecs, index.dim, correct=path == "fast")
    limit = max(1, min(index.n_patches, max_hits))
    out: list[list[Hit]] = []
    for i, (q, text) in enumerate(zip(vecs, queries)):
        want = min(k, limit)
        while True:
            res = patches.search(index, q, want)
            conf = cal.confidence(stats.zscores(q, np.asarray(res.scores)))
            deeper = (min_confidence is not None and len(res.rows) == want and want < limit
                      and len(conf) > 0 and float(conf[-1]) >= min_confidence)
            if not deeper:
                break
            want = min(2 * want, limit)
        z = stats.zscores(q, np.asarray(res.scores))
        extra = dict(extras[i]) if extras is not None else {}
        out.append([
            Hit(region=region_from_row(row), score=float(s), confidence=float(ci), path=path, query=text,
                queries=(text,), z=float(zi) if math.isfinite(zi) else None, index_key=index.key,
                index_version=res.version, encoder=index.encoder, prompt_version=prompt_version,
                patch=int(row["patch"]), extra=dict(extra))
            for row, s, zi, ci in zip(res.rows, res.scores, z, conf)
        ])
    return out


def rank_by_confidence(hits: Sequence[Hit]) -> list[Hit]:
    """Hits best first: confidence, then raw score."""
    return sorted(hits, key=lambda h: (-h.confidence, -h.score))


def dedupe_regions(hits: Sequence[Hit]) -> list[Hit]:
    """Hits of the same box (several phrases or proxies found it) as one, in order, their queries joined."""
    seen: dict[tuple[str, tuple[int, int, int, int]], int] = {}
    out: list[Hit] = []
    for hit in hits:
        key = (hit.region.scene, hit.region.box.as_tuple())
        if key in seen:
            kept = out[seen[key]]
            out[seen[key]] = kept.model_copy(update={
                "queries": tuple(dict.fromkeys(kept.queries + hit.queries)), "merged": kept.merged + 1 + hit.merged})
        else:
            seen[key] = len(out)
            out.append(hit)
    return out


class RetrievalResult(BaseModel):
    """What one retrieval of a scene found, for one target (one or more phrases naming one thing).

    Attributes:
        hits: every hit at or above ``threshold``, then the best candidates below it (at least ``top_k``
            hits in all, where the index has them), ranked by fusion (by confidence when only one path ran).
        sites: the found windows grouped into sites (overlapping or touching windows are one place), best
            first; every site above the threshold is here (see below for what "found" means).
        candidates: when no site is found, the closest candidates grouped into sites (unconfirmed); empty
            otherwise.
        finding: found / not_found / uncertain, from the encoder's presence calibration (``None`` when the
            cascade was given no presence model).
        presence_note: why the finding is ``uncertain`` whatever the scene holds (an uncalibrated encoder).
        phrases: the key phrases searched.
        threshold: confidence a hit needs to count as found.
        top_k: how many sites a caller shows (the result holds all of them).
        path: which paths produced ``hits``: ``fast``, or ``fast+slow`` when the slow path ran.
        used_slow / reason: whether the slow path ran, and why (or why not).
        fast / slow: the two paths' own results (label matches, timings, versions).
        levels: tilings (or pyramid levels) searched; searched_share: share of the finest level's windows
            scored (1.0 for a flat index).
        truncated: a query stopped at :data:`MAX_HITS` hits above the threshold.
        completed_windows: windows the caller encoded to complete the index before this search, because
            the search before it was ``uncertain`` on a partly encoded pyramid (0: none; see
            :meth:`rsrag.agent.workspace.Workspace.retrieve`).

    With a calibrated presence model a window belongs to a found site when its presence reaches the
    calibration's ``site_at`` and some window of the target reaches ``found_at``
    (:meth:`~rsrag.tools.calibration.PresenceModel.window_found`); the within-scene confidence then only decides which windows are scored (all
    those at or above the threshold, plus the :data:`PRESENCE_POOL` strongest below it). Without one, a
    window belongs to a site when its confidence reaches the threshold.
    """

    model_config = ConfigDict(frozen=True)

    hits: list[Hit]
    sites: list[Site]
    candidates: list[Site]
    phrases: list[str]
    threshold: float
    top_k: int
    finding: Finding | None = None
    presence_note: str | None = None
    path: str
    used_slow: bool
    reason: str
    fast: FastPathResult
    slow: SlowPathResult | None = None
    index_key: str
    index_version: int
    encoder: str
    levels: list[str]
    searched_share: float = 1.0
    truncated: bool = False
    completed_windows: int = 0
    ms: float = 0.0

    @property
    def confident(self) -> list[Hit]:
        """Hits whose confidence reaches the threshold."""
        return [h for h in self.hits if h.confidence >= self.threshold]

    @property
    def all_sites(self) -> list[Site]:
        """Confirmed sites, else the unconfirmed candidates."""
        return self.sites or self.candidates

    def top(self, k: int) -> list[Hit]:
        """The ``k`` best places as windows: :attr:`hits` with overlapping windows merged (non-maximum
        suppression, :func:`~rsrag.tools.rerank.merge_spatial`), in rank order."""
        return merge_spatial(self.hits)[:k]


def cascade(
    index: IndexInfo | PyramidIndex,
    encoder: Encoder,
    *,
    phrases: Sequence[str] | None = None,
    question: str | None = None,
    store: PatchStore,
    kb: KnowledgeBase | None = None,
    top_k: int,
    threshold: float,
    slow: SlowMode = "auto",
    fast_weight: float = 0.5,
    touch_px: int = 0,
    calibration: Calibration | None = None,
    presence: PresenceModel | None = None,
    exclude: Sequence[PixelBox] = (),
    refine: int = 0,
    concept_match: float = 1.1,
    **slow_options: object,
) -> RetrievalResult:
    """ImageRAG's cascade over one scene's index: fast path, slow path when nothing is confident, fused.

    Both paths return every hit at or above ``threshold`` plus their best ``top_k`` candidates. When the
    slow path ran because the fast path was not confident, the fast list enters the reciprocal rank fusion
    with weight ``fast_weight`` (the slow list with 1), so the slow path's hits lead and a place found by
    both still gains; with ``slow="always"`` and a confident fast path both weigh 1.

    Args:
        index: the scene's index.
        encoder: the encoder that built it.
        phrases: key phrases naming one target; when empty, extracted from ``question``.
        question: the analyst's question (used when no phrases are given).
        store: the patch store holding the index.
        kb: knowledge base with a visual concept library for the slow path (``None``: no slow path).
        top_k: sites a caller shows; also the candidates kept below the threshold per path.
        threshold: confidence a hit needs to count as found.
        slow: ``auto`` (when no fast hit is confident), ``always`` or ``never``.
        fast_weight: the fast list's fusion weight when the slow path ran because the fast path was not
            confident.
        touch_px: largest gap between two windows that still makes them one site.
        calibration: z-score to confidence mapping.
        presence: the encoder's presence calibration (:func:`rsrag.tools.calibration.load_presence`): sites
            get a presence probability and the result a ``finding``.
        exclude: boxes already reported (paging through more sites): windows that overlap one are left out.
        refine: with a calibrated presence model and a pyramid index, the target's strongest candidate
            windows (distinct, by presence) re-seen through finer windows (:mod:`rsrag.tools.refine`); 0: none.
        concept_match: with a calibrated presence model, a phrase whose nearest labelled class is at least this
            similar (:meth:`~rsrag.tools.calibration.PresenceModel.related_concept`) is searched as that class
            too (a synonym); above 1: never.
        slow_options: for :func:`~rsrag.tools.slowpath.slow_search` (``label_threshold``, ``reduce``...).

    Raises:
        QueryError: no phrase and an empty question, a non-positive ``top_k``, a threshold outside [0, 1].
        EncoderError: the encoder (or the knowledge base's) is not the one the index was built with.
    """
    if slow not in ("auto", "always", "never"):
        raise QueryError(f"slow must be 'auto', 'always' or 'never', got {slow!r}")
    t0 = time.perf_counter()
    calibrated = presence is not None and presence.calibrated
    if calibrated and concept_match <= 1.0:
        assert presence is not None
        phrases = with_related_concepts(presence, list(phrases) if phrases else extract_key_phrases(question or ""),
                                        concept_match)
    # with a presence model, the strongest windows below the threshold are scored too (PRESENCE_POOL)
    fast = fast_search(index, encoder, phrases=phrases, question=question, store=store,
                       top_k=max(top_k, PRESENCE_POOL) if calibrated else top_k, threshold=threshold,
                       calibration=calibration, max_overlap=None, complete=True)
    run_slow = kb is not None and (slow == "always" or (slow == "auto" and not fast.confident))
    slow_result = None
    if run_slow:
        assert kb is not None
        slow_result = slow_search(index, encoder, kb, phrases=fast.phrases, store=store, top_k=top_k,
                                  threshold=threshold, calibration=calibration, max_overlap=None, complete=True,
                                  **slow_options)  # type: ignore[arg-type]
    if slow_result is not None and slow_result.hits:
        weights = (1.0 if fast.confident else fast_weight, 1.0)
        hits = reciprocal_rank_fusion([fast.hits, slow_result.hits], weights=weights)
        path = "fast+slow"
    else:
        hits, path = list(fast.hits), "fast"
    if exclude:
        hits = [h for h in hits if not any(h.region.box.intersection(b) for b in exclude)]
    if fast.confident and slow != "always":
        reason = f"{len(fast.confident)} fast-path hits reached confidence {threshold:g}"
    elif kb is None or slow == "never":
        reason = f"no fast-path hit reached confidence {threshold:g}; no slow path " + (
            "(no visual concept library)" if kb is None else "(not asked for)")
    else:
        reason = "slow path requested" if slow == "always" else f"no fast-path hit reached confidence {threshold:g}"
        if slow_result is not None and slow_result.reason:
            reason += f"; slow path: {slow_result.reason}"
    confident = [h for h in hits if h.confidence >= threshold]
    finding: Finding | None = None
    note = None
    if presence is not None and presence.calibrated:
        sites, candidates, finding = _presence_sites(store, index, fast.phrases, hits, confident, presence, top_k, touch_px,
                                                     encoder=encoder, refine=refine, exclude=exclude)
    else:
        sites = group_sites(confident, touch_px=touch_px)
        candidates = [] if sites else group_sites(rank_by_confidence(hits)[:top_k], touch_px=touch_px)
        if presence is not None:  # uncalibrated: never a silent verdict, and the note says how to fit one
            finding, note = "uncertain", presence.message
    versions = [fast.index_version] + ([slow_result.index_version] if slow_result is not None else [])
    # a pyramid's hits say what share of its finest level was encoded (and so ranked) when they were found
    shares = [float(h.extra["searched_share"]) for h in hits if "searched_share" in h.extra]
    return RetrievalResult(
        hits=hits, sites=sites, candidates=candidates, phrases=fast.phrases, threshold=threshold, top_k=top_k,
        finding=finding, presence_note=note, path=path, used_slow=slow_result is not None, reason=reason, fast=fast,
        slow=slow_result, index_key=index.key, index_version=max(versions), encoder=index.encoder,
        levels=[index.tiling], truncated=fast.truncated or bool(slow_result is not None and slow_result.truncated),
        searched_share=min(1.0, max(shares)) if shares else 1.0, ms=(time.perf_counter() - t0) * 1e3,
    )


def with_related_concepts(presence: PresenceModel, phrases: Sequence[str], min_similarity: float) -> list[str]:
    """The phrases, then the labelled class each one stands for where it is another name for one (see
    :meth:`~rsrag.tools.calibration.PresenceModel.related_concept`), without repeats."""
    out = list(dict.fromkeys(phrases))
    for phrase in list(out):
        concept = presence.related_concept(phrase, min_similarity)
        if concept is not None and concept not in out:
            out.append(concept)
    return out


def window_vectors(store: PatchStore, index: IndexInfo | PyramidIndex, hits: Sequence[Hit], dim: int | None = None,
                   ) -> dict[tuple[str, int], np.ndarray]:
    """The stored vectors of hits' windows, by ``(index key, patch number)`` (a pyramid's hits come from
    several level indexes; hits without a stored patch are skipped); with ``dim``, as the encoder's plain
    ``dim``-dimensional vectors (:func:`~rsrag.tools.encoders.hubness.plain` of hub-corrected keys)."""
    wanted: dict[str, set[int]] = {}
    for h in hits:
        if h.patch is not None and h.index_key is not None:
            wanted.setdefault(h.index_key, set()).add(h.patch)
    out: dict[tuple[str, int], np.ndarray] = {}
    for key, patch_ids in wanted.items():
        info = store.info(key)
        if info is None:
            continue
        found = store.vectors(info, sorted(patch_ids))
        if dim is not None and found:
            rows = plain(np.stack(list(found.values())), dim)
            found = dict(zip(found, rows))
        out.update(((key, p), v) for p, v in found.items())
    return out


def _presence_sites(
    store: PatchStore, index: IndexInfo | PyramidIndex, phrases: Sequence[str], hits: Sequence[Hit], confident: Sequence[Hit],
    presence: PresenceModel, top_k: int, touch_px: int, *, encoder: Encoder | None = None, refine: int = 0,
    exclude: Sequence[PixelBox] = (),
) -> tuple[list[Site], list[Site], Finding]:
    """Found sites, candidates and the finding of one target, by calibrated presence (best over its phrases).

    With ``refine`` (and a pyramid index), the ``refine`` strongest distinct candidate windows are looked
    into through finer windows (:func:`rsrag.tools.refine.refine`): a finer window reaching ``site_at``
    joins the target's sites once the target is found, and one reaching the calibration's
    ``refined_found_at`` makes it found (a small object the indexed windows dilute).
    """
    ranked = rank_by_confidence(hits)
    pool = dedupe_regions([*confident, *ranked[:PRESENCE_POOL]])
    vectors = window_vectors(store, index, pool, presence.dim)
    scored = [h for h in pool if (h.index_key, h.patch) in vectors]
    if not scored:
        return [], [], presence.finding_for([])
    matrix = np.stack([vectors[(h.index_key, h.patch)] for h in scored])  # type: ignore[index]
    prob = _best_presence(presence, phrases, matrix)
    p_of = {id(h): float(p) for h, p in zip(scored, prob)}
    # windows of found sites: none unless one reaches found_at; then every window reaching site_at
    found = presence.window_found(prob)
    site_windows = [h for h, f in zip(scored, found) if f]
    alone = presence.refined_found_at
    if refine > 0 and encoder is not None and (found.any() or alone is not None):
        fine_hits, fine_prob = _refined(index, encoder, presence, phrases, scored, prob, refine, exclude)
        p_of.update((id(h), float(p)) for h, p in zip(fine_hits, fine_prob))
        target_found = bool(found.any()) or bool(alone is not None and len(fine_prob) and fine_prob.max() >= alone)
        site_at = presence.site_at
        if target_found and site_at is not None:
            site_windows += [h for h, p in zip(fine_hits, fine_prob) if p >= site_at]
            if not found.any():  # found through a refined window: the indexed windows reaching site_at join too
                site_windows += [h for h, p in zip(scored, prob) if p >= site_at]

    def with_presence(sites: list[Site]) -> list[Site]:
        # a site's presence is its best member's (as PresenceModel.site_presence defines it)
        out = [s.with_presence(max(p_of.get(id(m), 0.0) for m in s.members)) for s in sites]
        return sorted(out, key=lambda s: (-(s.presence or 0.0), -s.confidence, -s.score))

    grouped = with_presence(group_sites(site_windows, touch_px=touch_px))
    sites = presence.found_sites(grouped)  # lone windows below the bar for a window seen alone are not sites
    by_presence = sorted(scored, key=lambda h: (-p_of[id(h)], -h.confidence))
    # unconfirmed candidates: the strongest windows, and the windows of lone sites that were not enough
    unconfirmed = list({id(h): h for h in [*site_windows, *by_presence[:top_k]]}.values())
    candidates = [] if sites else with_presence(group_sites(unconfirmed, touch_px=touch_px))
    finding: Finding = "found" if sites else presence.finding_for([s.presence for s in candidates[:top_k]])
    if finding == "found" and not sites:
        finding = "uncertain"  # only lone windows reached found_at
    return sites, candidates, finding


def _best_presence(presence: PresenceModel, phrases: Sequence[str], matrix: np.ndarray) -> np.ndarray:
    """Presence of a target (its best phrase) in each window of ``matrix``."""
    per_phrase = [presence.presence(p, matrix) for p in phrases]
    known = [p for p in per_phrase if p is not None]
    return np.max(np.stack(known), axis=0) if known else np.zeros(len(matrix))


def refinement_candidates(boxes: Sequence[PixelBox], prob: np.ndarray, n: int) -> list[PixelBox]:
    """The ``n`` windows a target's refinement looks into: alternately the next strongest by presence and
    the next by *presence contrast* (its presence minus the mean presence of the windows around it that
    do not overlap it, 0 for a neighbour that was not scored), skipping windows that overlap a pick by more
    than :data:`REFINE_OVERLAP`. Presence alone spends the candidates on a background that resembles the
    target (a park-like quadrant for "woods"); contrast finds the small site inside it."""
    p = np.asarray(prob, dtype=np.float64)
    xy = np.array([box.as_tuple() for box in boxes], dtype=np.float64).reshape(-1, 4)
    # gaps between every pair of boxes along x and y (negative: they overlap along that axis)
    gap_x = np.maximum(xy[:, None, 0], xy[None, :, 0]) - np.minimum(xy[:, None, 2], xy[None, :, 2])
    gap_y = np.maximum(xy[:, None, 1], xy[None, :, 1]) - np.minimum(xy[:, None, 3], xy[None, :, 3])
    overlap = (gap_x < 0) & (gap_y < 0)
    side = np.maximum(xy[:, 2] - xy[:, 0], xy[:, 3] - xy[:, 1])[:, None]
    near = ~overlap & (np.maximum(np.maximum(gap_x, gap_y), 0) <= side)
    np.fill_diagonal(near, False)
    ring = 8  # windows around a window of a half-overlapping grid that do not overlap it, within a side
    contrast = p - (near @ p) / np.maximum(ring, near.sum(axis=1))
    orders = [list(np.argsort(-p, kind="stable")), list(np.argsort(-contrast, kind="stable"))]
    picked: list[PixelBox] = []
    tried: set[int] = set()
    turn = 0
    while len(picked) < n and len(tried) < len(boxes):
        order = orders[turn % 2]
        turn += 1
        while order and int(order[0]) in tried:
            order.pop(0)
        if not order:
            continue
        i = int(order.pop(0))
        tried.add(i)
        box = boxes[i]
        if all(box.intersection(b) <= REFINE_OVERLAP * box.area for b in picked):
            picked.append(box)
    return picked


def _refined(index: IndexInfo | PyramidIndex, encoder: Encoder, presence: PresenceModel, phrases: Sequence[str],
             scored: Sequence[Hit], prob: np.ndarray, n: int, exclude: Sequence[PixelBox]) -> tuple[list[Hit], np.ndarray]:
    """Finer windows inside the ``n`` strongest distinct candidate windows, with their presence."""
    from rsrag.tools.refine import refinable, refine

    fine = refinable(index, encoder)
    if fine is None:
        return [], np.zeros(0)
    boxes = refinement_candidates([h.region.box for h in scored], prob, n)
    pyramid = index.pyramid  # type: ignore[union-attr]
    extra: dict[str, str | float | int] = {"level": pyramid.n_levels, "levels": pyramid.n_levels + 1, "pyramid": pyramid.id}
    result = refine(fine, boxes, presence.embed(list(phrases)), list(phrases), prompt_version=scored[0].prompt_version,
                    extra=extra)
    hits = result.hits
    keep = [i for i, h in enumerate(hits) if not any(h.region.box.intersection(b) for b in exclude)]
    if not keep:
        return [], np.zeros(0)
    return [hits[i] for i in keep], _best_presence(presence, phrases, result.vectors[keep])
