"""The slow path (ImageRAG): key phrase -> concept labels -> their image vectors as proxies -> patches.

When the fast path finds no patch above its confidence threshold (the phrase names something the text
tower cannot place in the image), the slow path takes a detour through labelled examples:

1. text -> text: each key phrase is matched against the concept entries of a knowledge base (their text
   vectors); labels with cosine >= ``label_threshold`` are kept (at most ``max_labels`` per phrase).
2. each matched concept's chip vectors are reduced to proxies (ImageRAG's ``reduce_fn``): ``mean`` (one
   unit mean vector), ``cluster`` (the centroid of the largest k-means cluster: robust to outlier chips) or
   ``topk`` (the ``proxies`` chips most similar to the phrase's text embedding).
3. image -> image: each proxy searches the scene's patch index; confidences are the same within-scene
   z-score calibration as the fast path (:mod:`rsrag.tools.fastpath`), computed for the proxy vector.

Every hit records why it was found: ``extra`` holds the concept ``label``, its ``entry_id``, the label
match score and the ``proxy`` used. :func:`rsrag.tools.retrieval.cascade` runs fast then (when needed) slow
and fuses them; the vector search itself is :func:`rsrag.tools.retrieval.search_index`, as for the fast path.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from rsrag.tools.errors import EncoderError, QueryError
from rsrag.tools.fastpath import DEFAULT_THRESHOLD, DEFAULT_TOP_K, embed_phrases, extract_key_phrases
from rsrag.tools.hit import Hit
from rsrag.tools.knowledge.base import KnowledgeBase
from rsrag.tools.store import IndexInfo, PatchStore, Store, as_patch_store

if TYPE_CHECKING:
    from rsrag.tools.encoders.base import Encoder
    from rsrag.tools.pyramid import PyramidIndex
    from rsrag.tools.retrieval import Calibration

Reduce = Literal["mean", "cluster", "topk"]
DEFAULT_LABEL_THRESHOLD = 0.3
"""Cosine between a phrase and a concept's text vector needed to use that concept (encoder-dependent)."""


class ConceptMatch(BaseModel):
    """A concept label matched to a key phrase (text -> text)."""

    model_config = ConfigDict(frozen=True)

    phrase: str
    entry_id: str
    label: str
    score: float
    chips: int


class SlowPathResult(BaseModel):
    """Hits of one slow-path query, with the label matches that proxied them."""

    model_config = ConfigDict(frozen=True)

    hits: list[Hit]
    phrases: list[str]
    matches: list[ConceptMatch]
    reduce: str
    label_threshold: float
    threshold: float
    index_key: str
    index_version: int
    kb_table: str
    kb_version: int
    encoder: str
    reason: str | None = None
    text_ms: float = 0.0
    search_ms: float = 0.0
    truncated: bool = False

    @property
    def confident(self) -> list[Hit]:
        """Hits whose confidence reaches the threshold."""
        return [h for h in self.hits if h.confidence >= self.threshold]


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def reduce_vectors(vectors: np.ndarray, how: Reduce = "mean", text: np.ndarray | None = None, proxies: int = 3,
                   clusters: int = 3, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Reduce a concept's chip vectors to proxy query vectors.

    Returns:
        ``(proxies, names)``: unit rows and a name per proxy (``mean``, ``cluster:<size>/<n>``, ``topk:<i>``).

    Raises:
        QueryError: unknown method, no vectors, or ``topk`` without a text vector.
    """
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim != 2 or len(v) == 0:
        raise QueryError("a concept has no image vectors to reduce; add images to its entry")
    if how == "mean":
        return _unit(v.mean(axis=0))[None], ["mean"]
    if how == "cluster":
        k = max(1, min(clusters, len(v)))
        rng = np.random.default_rng(seed)
        centres = v[rng.choice(len(v), size=k, replace=False)]
        for _ in range(20):
            assign = np.argmax(v @ _unit(centres).T, axis=1)
            centres = np.stack([v[assign == c].mean(axis=0) if np.any(assign == c) else centres[c] for c in range(k)])
        sizes = np.bincount(assign, minlength=k)
        big = int(np.argmax(sizes))
        return _unit(centres[big])[None], [f"cluster:{int(sizes[big])}/{len(v)}"]
    if how == "topk":
        if text is None:
            raise QueryError("reduce='topk' needs the phrase's text vector")
        order = np.argsort(-(v @ np.asarray(text, dtype=np.float32)), kind="stable")[: max(1, proxies)]
        return _unit(v[order]), [f"topk:{i + 1}" for i in range(len(order))]
    raise QueryError(f"unknown reduce method {how!r}; use mean, cluster or topk")


def match_concepts(kb: KnowledgeBase, phrases: Sequence[str], vectors: np.ndarray, threshold: float,
                   max_labels: int) -> tuple[list[ConceptMatch], int]:
    """Concept labels per phrase (text -> text over the concept entries); returns matches and table version."""
    table = kb.entries_table()
    if table is None:
        return [], -1
    out: list[ConceptMatch] = []
    version = -1
    for phrase, q in zip(phrases, vectors):
        res = table.search("text", q, max_labels, where={"kind": "concept"}, fields=["id", "name", "n_images"])
        version = max(version, res.version)
        out += [ConceptMatch(phrase=phrase, entry_id=r["id"], label=r["name"], score=float(s), chips=int(r["n_images"]))
                for r, s in zip(res.rows, res.scores) if s >= threshold and r["n_images"] > 0]
    return out, version


def slow_search(
    index: IndexInfo | PyramidIndex,
    encoder: Encoder,
    kb: KnowledgeBase,
    *,
    phrases: Sequence[str] | None = None,
    question: str | None = None,
    store: Store | PatchStore | str | os.PathLike[str] | None = None,
    top_k: int = DEFAULT_TOP_K,
    threshold: float = DEFAULT_THRESHOLD,
    label_threshold: float = DEFAULT_LABEL_THRESHOLD,
    max_labels: int = 2,
    reduce: Reduce = "mean",
    proxies: int = 3,
    calibration: Calibration | None = None,
    candidates: int | None = None,
    max_overlap: float | None = 0.5,
    complete: bool = False,
) -> SlowPathResult:
    """Search one scene's patch index through the concept library (see the module docs).

    ``max_overlap``, ``candidates`` and ``complete`` mean what they mean for
    :func:`~rsrag.tools.fastpath.fast_search`: merge overlapping hits (``None``: only identical boxes),
    patches fetched per proxy, every hit at or above ``threshold`` returned.

    Raises:
        QueryError: empty question and no phrases, bad ``top_k``/thresholds, unknown ``reduce``.
        EncoderError: the encoder is not the one the index (or the knowledge base) was built with.
    """
    if top_k <= 0:
        raise QueryError(f"top_k must be positive, got {top_k}")
    if not -1.0 <= label_threshold <= 1.0:
        raise QueryError(f"label_threshold is a cosine in [-1, 1], got {label_threshold}")
    if encoder.id != index.encoder or kb.encoder.id != index.encoder:
        raise EncoderError(f"index {index.key} was built with encoder {index.encoder!r}; the slow path got encoder "
                           f"{encoder.id!r} and a knowledge base embedded with {kb.encoder.id!r}: use the same for all")
    from rsrag.tools.rerank import merge_spatial
    from rsrag.tools.retrieval import MAX_HITS, dedupe_regions, rank_by_confidence, search_index

    clean = [p.strip() for p in (phrases or []) if p and p.strip()] or extract_key_phrases(question or "")
    patches = as_patch_store(store)
    t0 = time.perf_counter()
    label_q = _unit(np.asarray(encoder.encode_texts(clean), dtype=np.float32))
    image_q = embed_phrases(encoder, clean) if reduce == "topk" else label_q
    t1 = time.perf_counter()
    matches, kb_version = match_concepts(kb, clean, label_q, label_threshold, max_labels)
    common = dict(phrases=clean, matches=matches, reduce=reduce, label_threshold=label_threshold, threshold=threshold,
                  index_key=index.key, kb_table=kb.entry_schema.name, kb_version=kb_version, encoder=index.encoder)
    if not matches:
        why = (f"no concept label reached cosine {label_threshold:g} for {clean}" if kb_version >= 0
               else f"knowledge base {kb.name!r} has no entries for encoder {encoder.id!r}; build a concept library")
        return SlowPathResult(hits=[], index_version=-1, reason=why, text_ms=(t1 - t0) * 1e3, **common)
    k = candidates or min(index.n_patches, 4 * top_k)
    vectors, texts, extras = [], [], []
    for m in matches:
        text_vec = image_q[clean.index(m.phrase)]
        vecs, names = reduce_vectors(kb.image_vectors(m.entry_id), reduce, text_vec, proxies)
        for proxy, pname in zip(vecs, names):
            vectors.append(proxy)
            texts.append(m.phrase)
            extras.append({"label": m.label, "entry_id": m.entry_id, "label_score": round(m.score, 4), "proxy": pname})
    lists = search_index(patches, index, np.stack(vectors), texts, k=k, path="slow", calibration=calibration,
                         min_confidence=threshold if complete else None, extras=extras)
    ranked = rank_by_confidence([h for hits in lists for h in hits])
    merged = dedupe_regions(ranked) if max_overlap is None else merge_spatial(ranked, max_overlap)
    n_confident = sum(1 for h in merged if h.confidence >= threshold) if complete else 0
    kept = merged[:n_confident + top_k] if complete else merged[:top_k]
    t2 = time.perf_counter()
    version = max((h.index_version for hits in lists for h in hits[:1] if h.index_version is not None), default=-1)
    return SlowPathResult(hits=kept, index_version=version, text_ms=(t1 - t0) * 1e3, search_ms=(t2 - t1) * 1e3,
                          truncated=complete and any(len(hits) >= MAX_HITS for hits in lists), **common)
