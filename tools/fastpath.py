"""The fast path (ImageRAG): key phrases -> text embeddings -> top-k patches of a scene's index -> Hits.

Each key phrase is embedded with every prompt template of ``prompts/fastpath_templates.v1.txt`` and the
unit embeddings are averaged (then re-normalised), as ImageRAG does. Each phrase retrieves its top patches;
hits of all phrases are merged, and overlapping hits (the same place at different scales) are merged by
non-maximum suppression, so a place is returned once.

Confidence (independent of patch count)
    ImageRAG scores a patch by a softmax over all patches, which shrinks as the image grows (a patch that is
    a perfect match gets ~1/N of the mass when N similar patches exist), so one threshold cannot serve
    small and large images. Here the confidence of a patch is a z-score of its cosine score within its own
    scene, mapped to [0, 1]::

        z = (s - mean_scene(s)) / sd_scene(s),      confidence = 1 / (1 + exp(-slope * (z - center)))

    ``mean_scene`` and ``sd_scene`` are the mean and standard deviation of this query's cosine scores over
    *all* patches of the index. They are exact and need no pass over the patches: for a unit query ``q``,
    mean = q . m and var = q^T C q, where m and C are the mean vector and covariance of the index's patch
    vectors, computed once at indexing time. Adding more patches drawn from the same scene leaves m, C and
    therefore every patch's confidence unchanged (tested). With the defaults (``center=3``, ``slope=2``) a
    confidence of 0.5 means "3 standard deviations above this scene's average patch for this phrase";
    0.88 means 4. The threshold (default 0.5) is an explicit argument.

    Limits: the score is relative to the scene. A phrase that matches the whole scene equally (``forest``
    over a forest) has no standout patch and gets low confidence; the raw cosine ``score`` is kept on every
    hit for such cases. Indexes with very few patches (< ~20) give noisy standard deviations.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict

from rsrag.tools.errors import EncoderError, IndexNotFoundError, QueryError
from rsrag.tools.hit import Hit
from rsrag.tools.region import PixelBox
from rsrag.tools.store import IndexInfo, PatchStore, Store, as_patch_store, region_from_row
from rsrag.tools.store.patches import EXACT_SEARCH_MAX

if TYPE_CHECKING:
    from rsrag.tools.encoders.base import Encoder

TEMPLATES_FILE = "fastpath_templates.v1.txt"
PROMPT_VERSION = "fastpath_templates.v1"
DEFAULT_THRESHOLD = 0.5
DEFAULT_TOP_K = 20


@dataclass(frozen=True)
class Calibration:
    """Mapping of a within-scene z-score to a confidence: ``sigmoid(slope * (z - center))``."""

    center: float = 3.0
    slope: float = 2.0

    def confidence(self, z: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.slope * (np.asarray(z, dtype=np.float64) - self.center)))


@lru_cache(maxsize=4)
def load_templates(name: str = TEMPLATES_FILE) -> tuple[str, ...]:
    """Prompt templates from ``rsrag.prompts`` (one per line, ``{}`` marks the phrase)."""
    text = resources.files("rsrag.prompts").joinpath(name).read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


_LEADS = re.compile(
    r"^(?:please\s+)?(?:(?:can|could|would)\s+you\s+)?(?:tell\s+me\s+|show\s+me\s+|find\s+|locate\s+|identify\s+|"
    r"count\s+|list\s+|detect\s+|point\s+out\s+|highlight\s+)?(?:(?:is|are)\s+there\s+(?:any\s+)?|"
    r"how\s+many\s+|how\s+much\s+|where\s+(?:is|are|can\s+i\s+see)?\s*|what\s+(?:is|are)?\s*|which\s+)?"
)
_STOP = frozenset(
    "a an the this that these those there here is are was were be been being do does did has have had of in on "
    "at to for from by with within near next into onto over under above below between around along across "
    "and or but not no any some all each every many much how what where which who whom whose why when can "
    "could would should will may might must i you we they it its their image picture photo scene shown "
    "visible see seen located situated appear appears present please me us show find locate tell count "
    "kind type color colour".split()
)


def extract_key_phrases(question: str, max_phrases: int = 4) -> list[str]:
    """Fallback key-phrase extractor for a plain question (used when the agent passes no phrases).

    Removes the question's lead ("how many", "is there", "where are"...), then splits the rest at function
    words and punctuation; the remaining runs of content words are the phrases, longest first.

    Raises:
        QueryError: the question is empty.
    """
    text = " ".join((question or "").split()).lower()
    if not text.strip(" ?!.,;:"):
        raise QueryError("the question is empty: ask about something in the image, e.g. 'where are the ships?'")
    text = _LEADS.sub("", text.strip(" ?!."))
    runs: list[list[str]] = [[]]
    for token in re.findall(r"[a-z0-9][a-z0-9'\-]*|[,;:?!.()]", text):
        if token in _STOP or not token[0].isalnum():
            runs.append([])
        else:
            runs[-1].append(token)
    phrases = list(dict.fromkeys(" ".join(r) for r in runs if r))
    phrases.sort(key=lambda p: -len(p.split()))
    return phrases[:max_phrases] or [text.strip(" ,;:") or question.strip()]


def embed_phrases(encoder: Encoder, phrases: Sequence[str], templates: Sequence[str] | None = None) -> np.ndarray:
    """One unit vector per phrase: the re-normalised mean of its template embeddings."""
    temps = list(templates) if templates is not None else list(load_templates())
    texts = [t.replace("{}", p) for p in phrases for t in temps]
    emb = np.asarray(encoder.encode_texts(texts), dtype=np.float64).reshape(len(phrases), len(temps), -1)
    mean = emb.mean(axis=1)
    return (mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def overlap(a: PixelBox, b: PixelBox) -> float:
    """Intersection over the smaller box's area (1.0 when one box contains the other)."""
    inter = a.intersection(b)
    return inter / min(a.area, b.area) if inter else 0.0


def merge_hits(hits: Sequence[Hit], max_overlap: float = 0.5) -> list[Hit]:
    """Non-maximum suppression across phrases and scales.

    Hits are taken by decreasing confidence (then score); a hit whose box overlaps an already kept box by
    more than ``max_overlap`` of the smaller box is merged into it (its queries are added, ``merged`` grows).
    """
    kept: list[Hit] = []
    for hit in sorted(hits, key=lambda h: (-h.confidence, -h.score)):
        for i, k in enumerate(kept):
            if overlap(k.region.box, hit.region.box) > max_overlap:
                queries = tuple(dict.fromkeys(k.queries + hit.queries))
                kept[i] = k.model_copy(update={"queries": queries, "merged": k.merged + 1 + hit.merged})
                break
        else:
            kept.append(hit)
    return kept


class FastPathResult(BaseModel):
    """Hits of one fast-path query, with what produced them."""

    model_config = ConfigDict(frozen=True)

    hits: list[Hit]
    phrases: list[str]
    threshold: float
    index_key: str
    index_version: int
    encoder: str
    tiling: str
    prompt_version: str
    text_ms: float
    search_ms: float

    @property
    def confident(self) -> list[Hit]:
        """Hits whose confidence reaches the threshold."""
        return [h for h in self.hits if h.confidence >= self.threshold]


def find_index(patches: PatchStore, scene: str, encoder: str, tiling: str | None = None) -> IndexInfo:
    """The most recent complete index of a scene for an encoder (and tiling, when given)."""
    found = patches.find(scene=scene, encoder=encoder, tiling=tiling)
    if not found:
        what = f"encoder {encoder!r}" + (f" and tiling {tiling!r}" if tiling else "")
        raise IndexNotFoundError(
            f"scene {scene} has no complete patch index for {what} in store {patches.store.location}; "
            "build one with `rsrag index IMAGE` (same --encoder/--tiling/--store)"
        )
    return found[0]


def fast_search(
    index: IndexInfo,
    encoder: Encoder,
    *,
    phrases: Sequence[str] | None = None,
    question: str | None = None,
    store: Store | PatchStore | str | os.PathLike[str] | None = None,
    top_k: int = DEFAULT_TOP_K,
    threshold: float = DEFAULT_THRESHOLD,
    calibration: Calibration | None = None,
    templates: Sequence[str] | None = None,
    max_overlap: float = 0.5,
    candidates: int | None = None,
) -> FastPathResult:
    """Search one scene's patch index with key phrases (or a question's extracted phrases).

    Args:
        index: the index to search (see :func:`find_index`).
        encoder: the encoder that built it (its id must match).
        phrases: key phrases; when empty or ``None`` they are extracted from ``question``.
        question: the analyst's question (used when no phrases are given).
        store: the store holding the index (as for :func:`~rsrag.tools.indexing.index_scene`).
        top_k: hits returned after merging.
        threshold: confidence a hit needs to count as found (see :attr:`FastPathResult.confident`).
        calibration: z-score to confidence mapping.
        templates: prompt templates (default: the versioned file in ``rsrag.prompts``).
        max_overlap: NMS overlap (intersection over the smaller box) above which hits are merged.
        candidates: patches fetched per phrase before merging (default ``4 * top_k``, ``2 * top_k`` for
            indexes searched with the ANN index).

    Raises:
        QueryError: no phrase and an empty question, or a non-positive ``top_k``.
        EncoderError: the encoder is not the one the index was built with.
    """
    if top_k <= 0:
        raise QueryError(f"top_k must be positive, got {top_k}")
    if not 0.0 <= threshold <= 1.0:
        raise QueryError(f"threshold is a confidence in [0, 1], got {threshold}")
    clean = [p.strip() for p in (phrases or []) if p and p.strip()]
    if not clean:
        clean = extract_key_phrases(question or "")
    if encoder.id != index.encoder:
        raise EncoderError(f"index {index.key} was built with encoder {index.encoder!r}, not {encoder.id!r}")
    patches = as_patch_store(store)
    cal = calibration or Calibration()
    t0 = time.perf_counter()
    queries = embed_phrases(encoder, clean, templates)
    t1 = time.perf_counter()
    stats = patches.stats(index)
    # Headroom for NMS merges: 4x on exhaustively searched (small) indexes, where k costs nothing; 2x on
    # large ones, where every candidate is re-ranked with its full vector (refine_factor).
    k = candidates or min(index.n_patches, (4 if index.n_patches < EXACT_SEARCH_MAX else 2) * top_k)
    hits: list[Hit] = []
    version = -1
    for phrase, q in zip(clean, queries):
        res = patches.search(index, q, k)
        version = max(version, res.version)
        z = stats.zscores(q, np.asarray(res.scores))
        conf = cal.confidence(z)
        for row, s, zi, ci in zip(res.rows, res.scores, z, conf):
            hits.append(Hit(
                region=region_from_row(row), score=float(s), confidence=float(ci), path="fast", query=phrase,
                queries=(phrase,), z=float(zi) if math.isfinite(zi) else None, index_key=index.key,
                index_version=res.version, encoder=index.encoder,
                prompt_version=PROMPT_VERSION if templates is None else "custom", patch=int(row["patch"]),
            ))
    merged = merge_hits(hits, max_overlap)[:top_k]
    t2 = time.perf_counter()
    return FastPathResult(
        hits=merged, phrases=clean, threshold=threshold, index_key=index.key, index_version=version,
        encoder=index.encoder, tiling=index.tiling, prompt_version=PROMPT_VERSION if templates is None else "custom",
        text_ms=(t1 - t0) * 1e3, search_ms=(t2 - t1) * 1e3,
    )
