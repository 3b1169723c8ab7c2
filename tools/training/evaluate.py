"""Image-text retrieval metrics (RSICD protocol) and zero-shot classification.

Image -> text: for each image, the rank of its best-ranked own caption among all captions.
Text -> image: for each caption, the rank of its image among all images. R@K is the percentage of queries
whose target ranks within the first K; mR is the mean of the six recalls. Ties count in the query's favour
(rank = number of candidates with a strictly higher score).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rsrag.tools.encoders.base import Encoder
from rsrag.tools.captioned import Chip, class_prompts
from rsrag.tools.errors import DataError

KS: tuple[int, ...] = (1, 5, 10)


def image_to_text_ranks(sim: np.ndarray, text_image: np.ndarray) -> np.ndarray:
    """Rank (0 = first) of each image's best own caption.

    Args:
        sim: (n_images, n_texts) similarities.
        text_image: (n_texts,) index of the image each text describes.
    """
    n_img = sim.shape[0]
    own = text_image[None, :] == np.arange(n_img)[:, None]
    if not own.any(axis=1).all():
        raise DataError("every image needs at least one caption for image->text retrieval")
    best = np.where(own, sim, -np.inf).max(axis=1)
    return (sim > best[:, None]).sum(axis=1)


def text_to_image_ranks(sim: np.ndarray, text_image: np.ndarray) -> np.ndarray:
    """Rank (0 = first) of each text's own image among all images."""
    target = sim[text_image, np.arange(sim.shape[1])]
    return (sim > target[None, :]).sum(axis=0)


def recalls(ranks: np.ndarray, ks: Sequence[int] = KS) -> dict[int, float]:
    """Percentage of ranks below each K."""
    return {k: float(100.0 * np.mean(ranks < k)) for k in ks}


def retrieval_metrics(sim: np.ndarray, text_image: np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    """Image->text and text->image R@K and their mean ``mR``, all in percent."""
    text_image = np.asarray(text_image)
    i2t = recalls(image_to_text_ranks(sim, text_image), ks)
    t2i = recalls(text_to_image_ranks(sim, text_image), ks)
    out = {f"i2t_R@{k}": v for k, v in i2t.items()} | {f"t2i_R@{k}": v for k, v in t2i.items()}
    out["mR"] = float(np.mean(list(i2t.values()) + list(t2i.values())))
    return out


def zero_shot_accuracy(image_emb: np.ndarray, labels: Sequence[str], class_emb: dict[str, np.ndarray]) -> float:
    """Percentage of images whose most similar class embedding is their own class."""
    names = sorted(class_emb)
    weights = np.stack([class_emb[n] for n in names])
    pred = np.asarray(names)[np.argmax(image_emb @ weights.T, axis=1)]
    return float(100.0 * np.mean(pred == np.asarray(labels)))


def class_embeddings(encode_texts, labels: Sequence[str]) -> dict[str, np.ndarray]:
    """Unit class vectors: the mean of the class's prompt embeddings (``encode_texts`` returns unit rows)."""
    out = {}
    for label in sorted(set(labels)):
        mean = encode_texts(class_prompts(label)).mean(axis=0)
        out[label] = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return out


def class_embeddings_from(text_emb: dict[str, np.ndarray], labels: Sequence[str | None]) -> dict[str, np.ndarray] | None:
    """Unit class vectors from already-embedded prompt texts (mean over the class's templates); None if unlabelled."""
    if not labels or not all(labels):
        return None
    out = {}
    for label in sorted(set(labels)):
        mean = np.mean([text_emb[p] for p in class_prompts(label)], axis=0)
        out[label] = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return out


@dataclass
class RetrievalReport:
    """Result of :func:`evaluate`: metrics in percent plus what was measured."""

    metrics: dict[str, float]
    n_images: int
    n_texts: int
    n_classes: int
    encoder: str
    extra: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """Flat JSON-ready dict (metrics at top level)."""
        return {**self.metrics, "n_images": self.n_images, "n_texts": self.n_texts,
                "n_classes": self.n_classes, "encoder": self.encoder, **self.extra}


def evaluate_embeddings(
    image_emb: np.ndarray,
    chips: Sequence[Chip],
    text_emb: np.ndarray | None,
    class_emb: dict[str, np.ndarray] | None,
    encoder_id: str,
) -> RetrievalReport:
    """Metrics from precomputed unit embeddings.

    Args:
        image_emb: (n_images, dim), one row per chip.
        chips: the chips, in the same order.
        text_emb: (n_captions, dim) for all captions of all chips in order, or None when no chip has captions.
        class_emb: class vectors for zero-shot accuracy, or None when chips have no labels.
        encoder_id: recorded in the report.
    """
    metrics: dict[str, float] = {}
    text_image = np.asarray([i for i, c in enumerate(chips) for _ in c.captions], dtype=np.int64)
    if text_emb is not None and len(text_image):
        if not all(c.captions for c in chips):
            raise DataError("some chips have no captions; retrieval needs captions for every chip")
        metrics.update(retrieval_metrics(image_emb @ text_emb.T, text_image))
    labels = [c.label for c in chips]
    if class_emb and all(labels):
        metrics["zero_shot_acc"] = zero_shot_accuracy(image_emb, labels, class_emb)
    return RetrievalReport(metrics, len(chips), len(text_image), len(set(labels) - {None}), encoder_id)


def evaluate(encoder: Encoder, chips: Sequence[Chip], progress=None) -> RetrievalReport:
    """Encode ``chips`` (images, captions, class prompts) with ``encoder`` and compute all metrics.

    Args:
        encoder: any encoder.
        chips: the evaluation set.
        progress: optional callable ``(n_done)`` advanced after each image batch.
    """
    from PIL import Image

    rows = []
    step = 64
    for start in range(0, len(chips), step):
        imgs = []
        for chip in chips[start : start + step]:
            with Image.open(chip.image) as im:
                imgs.append(im.convert("RGB"))
        rows.append(encoder.encode_images(imgs))
        if progress is not None:
            progress(len(imgs))
    image_emb = np.concatenate(rows)
    texts = [t for c in chips for t in c.captions]
    text_emb = encoder.encode_texts(texts) if texts and all(c.captions for c in chips) else None
    labels = [c.label for c in chips]
    class_emb = class_embeddings(encoder.encode_texts, labels) if all(labels) else None
    return evaluate_embeddings(image_emb, chips, text_emb, class_emb, encoder.id)
