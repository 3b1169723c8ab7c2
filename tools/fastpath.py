"""The fast path (ImageRAG): key phrases -> text embeddings -> top-k patches of a scene's index -> Hits.

Each key phrase is embedded with every prompt template of ``prompts/fastpath_templates.v1.txt`` and the
unit embeddings are averaged (then re-normalised), as ImageRAG does. Each phrase retrieves its top patches
through :func:`rsrag.tools.retrieval.search_index` (the one vector search); hits of all phrases are merged,
and overlapping hits (the same place at different scales) are merged by non-maximum suppression
(:func:`rsrag.tools.rerank.merge_spatial`), so a place is returned once, unless the caller keeps them apart
to group them into sites (:func:`rsrag.tools.retrieval.cascade` does).

Confidence (independent of patch count)
    ImageRAG scores a patch by a softmax over all patches, which shrinks as the image grows (a patch that is
    a perfect match gets ~1/N of the mass when N similar patches exist), so one threshold cannot serve
    small and large images. Here the confidence of a patch is a z-score of its cosine score within its own
    scene, mapped to [0, 1] (:class:`rsrag.tools.retrieval.Calibration`)::

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

import os
import re
import time
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rsrag.tools.errors import EncoderError, IndexNotFoundError, QueryError
from rsrag.tools.hit import Hit
from rsrag.tools.store import IndexInfo, PatchStore, Store, as_patch_store
from rsrag.tools.store.patches import EXACT_SEARCH_MAX

if TYPE_CHECKING:
    from rsrag.tools.encoders.base import Encoder
    from rsrag.tools.pyramid import PyramidIndex, PyramidSearch
    from rsrag.tools.retrieval import Calibration

TEMPLATES_FILE = "fastpath_templates.v1.txt"
PROMPT_VERSION = "fastpath_templates.v1"
DEFAULT_THRESHOLD = 0.5
DEFAULT_TOP_K = 20


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
    "kind type color colour about regarding then now ok okay thanks evidence anything something everything nothing "
    "i'm im i've i'd we're you're looking searching seeking want need like would r u pls plz list display "
    "identify detect highlight mark what's where's there's it's that's how's".split()
)
_ORDINAL_TOKEN = re.compile(r"^\d+(?:st|nd|rd|th)$")
REQUEST_WORDS = frozenset(
    "big bigger biggest large larger largest huge small smaller smallest tiny size sizes sized extent area wide "
    "long tall far apart distance distances away closest nearest furthest farthest coordinates coordinate "
    "position positions harder search searched whole entire everywhere thoroughly each other exactly exact "
    "precisely latitude longitude gps out wider strongest weakest best others another else elsewhere closer "
    "close zoom zoomed more again also too rest remaining "
    "additional further one ones them first second third fourth fifth sixth seventh eighth ninth tenth last "
    "previous next north south east west northern southern eastern western northernmost southernmost easternmost "
    "westernmost northeast northwest southeast "
    "southwest north-east north-west south-east south-west top bottom left right upper lower corner middle "
    "centre center number look looks give describe parked placed lying standing built shown depicted site sites "
    "place places spot spots location locations candidate candidates result results match matches "
    "order ordered sort sorted rank ranked arrange arranged".split()
)
"""Words that say what to do with a thing, or which one, not what it is ("how big", "other", "elsewhere",
"zoom closer", "the second one", "in the north-west"): dropped from key phrases, so a search looks for the
object only."""


def is_content_word(token: str) -> bool:
    """Whether a lower-case token can be part of a key phrase: not a function word, not a request word
    (:data:`REQUEST_WORDS`), not an ordinal ("3rd"), not a single letter, not punctuation."""
    return len(token) > 1 and token[0].isalnum() and token not in _STOP and token not in REQUEST_WORDS \
        and not _ORDINAL_TOKEN.match(token)  # one letter ("r" for "are") is never an object


def extract_key_phrases(question: str, max_phrases: int = 4) -> list[str]:
    """Fallback key-phrase extractor for a plain question (used when the agent passes no phrases).

    Removes the question's lead ("how many", "is there", "where are"...), then splits the rest at function
    words, request words (:data:`REQUEST_WORDS`: "big", "other", "elsewhere", "closer"...) and punctuation;
    the remaining runs of content words are the phrases, longest first. A question with no content word
    left (``"zoom closer"``) yields its own text as the only phrase.

    Raises:
        QueryError: the question is empty.
    """
    text = " ".join((question or "").split()).lower()
    if not text.strip(" ?!.,;:"):
        raise QueryError("the question is empty: ask about something in the image, e.g. 'where are the ships?'")
    text = _LEADS.sub("", text.strip(" ?!."))
    runs: list[list[str]] = [[]]
    for token in re.findall(r"[a-z0-9][a-z0-9'\-]*|[,;:?!.()]", text):
        if not is_content_word(token):
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
    truncated: bool = False
    levels: list[str] = Field(default_factory=list)
    searched_share: float = 1.0

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
    index: IndexInfo | PyramidIndex,
    encoder: Encoder,
    *,
    phrases: Sequence[str] | None = None,
    question: str | None = None,
    store: Store | PatchStore | str | os.PathLike[str] | None = None,
    top_k: int = DEFAULT_TOP_K,
    threshold: float = DEFAULT_THRESHOLD,
    calibration: Calibration | None = None,
    templates: Sequence[str] | None = None,
    max_overlap: float | None = 0.5,
    candidates: int | None = None,
    complete: bool = False,
) -> FastPathResult:
    """Search one scene's patch index with key phrases (or a question's extracted phrases).

    Args:
        index: the index to search (see :func:`find_index`).
        encoder: the encoder that built it (its id must match).
        phrases: key phrases; when empty or ``None`` they are extracted from ``question``.
        question: the analyst's question (used when no phrases are given).
        store: the store holding the index (as for :func:`~rsrag.tools.indexing.index_scene`).
        top_k: hits returned after merging (with ``complete``: at least, after every confident hit).
        threshold: confidence a hit needs to count as found (see :attr:`FastPathResult.confident`).
        calibration: z-score to confidence mapping.
        templates: prompt templates (default: the versioned file in ``rsrag.prompts``).
        max_overlap: overlap (intersection over the smaller box) above which hits are merged
            (:func:`rsrag.tools.rerank.merge_spatial`); ``None``: only hits of the same box are merged, so
            overlapping windows stay apart (to be grouped into sites).
        candidates: patches fetched per phrase before merging (default ``4 * top_k``, ``2 * top_k`` for
            indexes searched with the ANN index).
        complete: return every hit at or above ``threshold`` (the search goes as deep as needed), then the
            best ``top_k`` below it.

    Raises:
        QueryError: no phrase and an empty question, or a non-positive ``top_k``.
        EncoderError: the encoder is not the one the index was built with.
    """
    from rsrag.tools.rerank import merge_spatial
    from rsrag.tools.retrieval import MAX_HITS, dedupe_regions, rank_by_confidence, search_index

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
    version_tag = PROMPT_VERSION if templates is None else "custom"
    t0 = time.perf_counter()
    queries = embed_phrases(encoder, clean, templates)
    t1 = time.perf_counter()
    # Headroom for NMS merges: 4x on exhaustively searched (small) indexes, where k costs nothing; 2x on
    # large ones, where every candidate is re-ranked with its full vector (refine_factor).
    k = candidates or min(index.n_patches, (4 if index.n_patches < EXACT_SEARCH_MAX else 2) * top_k)
    searches: list[PyramidSearch] = []
    lists = search_index(patches, index, queries, clean, k=k, path="fast", calibration=calibration,
                         min_confidence=threshold if complete else None, prompt_version=version_tag, searches=searches)
    ranked = rank_by_confidence([h for hits in lists for h in hits])
    merged = dedupe_regions(ranked) if max_overlap is None else merge_spatial(ranked, max_overlap)
    n_confident = sum(1 for h in merged if h.confidence >= threshold) if complete else 0
    kept = merged[:n_confident + top_k] if complete else merged[:top_k]
    t2 = time.perf_counter()
    versions = [h.index_version for hits in lists for h in hits[:1] if h.index_version is not None]
    return FastPathResult(
        hits=kept, phrases=clean, threshold=threshold, index_key=index.key, index_version=max(versions, default=-1),
        encoder=index.encoder, tiling=index.tiling, prompt_version=version_tag,
        text_ms=(t1 - t0) * 1e3, search_ms=(t2 - t1) * 1e3,
        truncated=complete and any(len(hits) >= MAX_HITS for hits in lists),
        levels=searches[-1].levels if searches else [index.tiling],
        searched_share=min((s.finest_share for s in searches), default=1.0),
    )
