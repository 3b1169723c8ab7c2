"""Search every indexed scene of a catalog at once: the retrieval cascade per scene, sites per scene.

:func:`search_catalog` runs :func:`rsrag.tools.retrieval.cascade` on each scene's index (the finest complete
index of the scene for the encoder: a flat tiling or a complete pyramid level) and ranks the scenes by their
best site. Scenes that have no complete index for the encoder are listed as skipped, never indexed here (an
archive is indexed ahead of time with ``rsrag index`` or ``rsrag index --ray``). Every hit's region names its
scene fingerprint, and each result names the scene's source, so evidence from several scenes stays apart.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pydantic import BaseModel, ConfigDict, Field

from rsrag.tools.catalog import Catalog, CatalogScene
from rsrag.tools.errors import QueryError
from rsrag.tools.fastpath import extract_key_phrases
from rsrag.tools.retrieval import RetrievalResult, cascade, with_related_concepts
from rsrag.tools.store import IndexInfo, PatchStore

if TYPE_CHECKING:
    from rsrag.tools.calibration import PresenceModel
    from rsrag.tools.encoders.base import Encoder
    from rsrag.tools.knowledge.base import KnowledgeBase

__all__ = ["CatalogSearchResult", "SceneResult", "scene_index", "scene_indexes", "search_catalog"]


class SceneResult(BaseModel):
    """One scene's share of a catalog search."""

    model_config = ConfigDict(frozen=True)

    scene: CatalogScene
    result: RetrievalResult

    @property
    def best(self) -> float:
        """The scene's best site: its calibrated presence where there is one (comparable across scenes),
        else its within-scene confidence."""
        sites = self.result.all_sites
        return max(((s.presence if s.presence is not None else s.confidence) for s in sites), default=0.0)

    @property
    def found(self) -> bool:
        """Whether the target was found in this scene: the calibrated finding where there is one, else any
        site at or above the threshold."""
        if self.result.finding is not None and self.result.presence_note is None:
            return self.result.finding == "found"
        return bool(self.result.sites)


class CatalogSearchResult(BaseModel):
    """What a search across a catalog found, scenes ranked by their best site."""

    model_config = ConfigDict(frozen=True)

    phrases: list[str]
    threshold: float
    scenes: list[SceneResult]
    """Searched scenes: those where the target was found first, each group by its best site."""
    skipped: list[str] = Field(default_factory=list)
    """Ids of scenes with no complete index for the encoder (index them to include them)."""
    ms: float = 0.0

    @property
    def matching(self) -> list[SceneResult]:
        """Scenes with at least one site at or above the threshold."""
        return [s for s in self.scenes if s.found]


class _TextCache:
    """An encoder whose text embeddings are computed once per search: every scene's cascade embeds the same
    phrases (and the presence calibration the same prompts), so a search across N scenes encodes them once,
    not N times. Everything else is the wrapped encoder's."""

    def __init__(self, encoder: Encoder) -> None:
        self._encoder = encoder
        self._texts: dict[tuple[str, ...], np.ndarray] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._cached("search", texts, self._encoder.encode_texts)

    def encode_presence_texts(self, texts: Sequence[str]) -> np.ndarray:
        """The wrapped encoder's presence text vectors (its ``encode_presence_texts``, else its ``encode_texts``)."""
        from rsrag.tools.encoders.base import encode_presence_texts

        return self._cached("presence", texts, lambda t: encode_presence_texts(self._encoder, t))

    def _cached(self, head: str, texts: Sequence[str], encode: Any) -> np.ndarray:
        key = (head, *texts)
        if key not in self._texts:
            self._texts[key] = np.asarray(encode(texts))
        return self._texts[key].copy()


def scene_index(patches: PatchStore, fingerprint: str, encoder_id: str, tiling: str | None = None) -> IndexInfo | None:
    """The index a catalog search uses for a scene: among its complete indexes for the encoder (and tiling,
    when given), the finest (most windows); ``None`` when there is none."""
    return _finest(patches.find(scene=fingerprint, encoder=encoder_id), tiling)


def scene_indexes(patches: PatchStore, encoder_id: str, tiling: str | None = None) -> dict[str, IndexInfo]:
    """:func:`scene_index` of every scene at once (scene fingerprint -> index), from one read of the store's
    index records (a search across N scenes would otherwise read them N times)."""
    by_scene: dict[str, list[IndexInfo]] = {}
    for info in patches.find(encoder=encoder_id):
        by_scene.setdefault(info.scene, []).append(info)
    out = {scene: _finest(infos, tiling) for scene, infos in by_scene.items()}
    return {scene: info for scene, info in out.items() if info is not None}


def _finest(infos: list[IndexInfo], tiling: str | None) -> IndexInfo | None:
    if tiling is not None:
        infos = [i for i in infos if i.tiling == tiling or i.tiling.startswith(tiling + ":")]
    return max(infos, key=lambda i: (i.n_patches, i.updated), default=None)


def search_catalog(
    catalog: Catalog,
    patches: PatchStore,
    encoder: Encoder,
    *,
    phrases: Sequence[str] | None = None,
    question: str | None = None,
    scenes: Sequence[CatalogScene] | None = None,
    top_k: int,
    threshold: float,
    kb: KnowledgeBase | None = None,
    presence: PresenceModel | None = None,
    tiling: str | None = None,
    concept_match: float = 1.1,
) -> CatalogSearchResult:
    """Run the retrieval cascade over every indexed scene of ``catalog`` (or of ``scenes``, e.g. the result
    of :meth:`Catalog.find`) and rank the scenes.

    Args:
        catalog: the catalog whose scenes are searched.
        patches: the patch store holding their indexes.
        encoder: the encoder the indexes were built with.
        phrases / question: what to look for (key phrases, or a question they are extracted from).
        scenes: a subset of the catalog's scenes (default: all).
        top_k: sites shown per scene (all confident sites are kept).
        threshold: confidence a site needs to count as found.
        kb: knowledge base for the slow path (a scene's cascade runs it when its fast path is not confident).
        presence: the encoder's presence calibration: each scene gets a finding, and scenes are ranked by
            calibrated presence, which (unlike the within-scene confidence) means the same in every scene.
        tiling: only use indexes of this tiling id (default: each scene's finest complete index).
        concept_match: a phrase that is another name for a labelled class is searched as that class too
            (see :func:`rsrag.tools.retrieval.cascade`; above 1: never).

    Raises:
        QueryError: no phrases and no question, or the catalog is empty.
    """
    if not phrases and not (question and question.strip()):
        raise QueryError("give key phrases or a question to search the catalog for")
    pool = list(scenes) if scenes is not None else catalog.scenes()
    if not pool:
        raise QueryError(f"catalog {catalog.name!r} has no scenes: add some with `rsrag catalog add`")
    t0 = time.perf_counter()
    if presence is not None and presence.calibrated and concept_match <= 1.0:  # once, not once per scene
        phrases = with_related_concepts(presence, list(phrases) if phrases else extract_key_phrases(question or ""),
                                        concept_match)
    cached: Any = _TextCache(encoder)  # an Encoder: the phrases' embeddings are shared by every scene's cascade
    shared = presence
    if presence is not None and getattr(presence, "encoder", None) is encoder:
        presence = copy.copy(presence)  # the same calibration (and its embedded vocabulary), phrases embedded once
        presence.encoder = cached
    indexes = scene_indexes(patches, encoder.id, tiling) if len(pool) > 1 else {}
    if len(pool) == 1:  # one scene: read only its records
        one = scene_index(patches, pool[0].fingerprint, encoder.id, tiling)
        indexes = {pool[0].fingerprint: one} if one is not None else {}
    found: list[SceneResult] = []
    skipped: list[str] = []
    searched_phrases: list[str] = list(phrases or [])
    for scene in pool:
        info = indexes.get(scene.fingerprint)
        if info is None:
            skipped.append(scene.id)
            continue
        result = cascade(info, cached, phrases=phrases, question=question, store=patches, kb=kb, top_k=top_k,
                         threshold=threshold, presence=presence)
        searched_phrases = result.phrases
        found.append(SceneResult(scene=scene, result=result))
    if shared is not presence and getattr(shared, "_vocab", True) is None:
        shared._vocab = getattr(presence, "_vocab", None)  # type: ignore[union-attr]  # keep the vocabulary embedded here
    found.sort(key=lambda s: (not s.found, -s.best, s.scene.id))
    return CatalogSearchResult(phrases=searched_phrases, threshold=threshold, scenes=found, skipped=skipped,
                               ms=(time.perf_counter() - t0) * 1e3)
