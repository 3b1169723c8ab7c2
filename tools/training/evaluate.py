"""Image-text retrieval metrics (RSICD protocol) and zero-shot classification.

Image -> text: for each image, the rank of its best-ranked own caption among all captions.
Text -> image: for each caption, the rank of its image among all images. R@K is the percentage of queries
whose target ranks within the first K; mR is the mean of the six recalls. Ties count in the query's favour
(rank = number of candidates with a strictly higher score).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from rsrag.tools.encoders.hubness import HubCorrection, as_queries, hub_of
from rsrag.tools.encoders.base import Encoder
from rsrag.tools.captioned import Chip, class_prompts, folder_fingerprint, image_fingerprints, select_split
from rsrag.tools.errors import DataError

#: length of the image-hash prefixes a heads file records for the images it was trained on
SKETCH_CHARS = 8

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


def retrieval_metrics(sim: np.ndarray, text_image: np.ndarray, ks: Sequence[int] = KS,
                      t2i_sim: np.ndarray | None = None) -> dict[str, float]:
    """Image->text and text->image R@K and their mean ``mR``, all in percent.

    ``t2i_sim`` scores text -> image retrieval instead of ``sim`` when given (the hub-corrected scores a
    window index ranks by; :func:`hub_scores`)."""
    text_image = np.asarray(text_image)
    i2t = recalls(image_to_text_ranks(sim, text_image), ks)
    t2i = recalls(text_to_image_ranks(sim if t2i_sim is None else t2i_sim, text_image), ks)
    out = {f"i2t_R@{k}": v for k, v in i2t.items()} | {f"t2i_R@{k}": v for k, v in t2i.items()}
    out["mR"] = float(np.mean(list(i2t.values()) + list(t2i.values())))
    return out


def hub_scores(hub: HubCorrection | None, image_emb: np.ndarray, text_emb: np.ndarray) -> np.ndarray | None:
    """Image x text scores as a window index of hub-corrected keys ranks images for text queries (``None``
    without a hub correction): :mod:`rsrag.tools.encoders.hubness`."""
    if hub is None:
        return None
    keys = hub.keys(image_emb)
    return keys @ as_queries(text_emb, keys.shape[1]).T


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
    hub: HubCorrection | None = None,
) -> RetrievalReport:
    """Metrics from precomputed unit embeddings.

    Args:
        image_emb: (n_images, dim), one row per chip.
        chips: the chips, in the same order.
        text_emb: (n_captions, dim) for all captions of all chips in order, or None when no chip has captions.
        class_emb: class vectors for zero-shot accuracy, or None when chips have no labels.
        encoder_id: recorded in the report.
        hub: the encoder's hub correction: text -> image recalls are then scored as its window index ranks
            (image -> text and zero-shot stay plain cosine, as the presence model scores texts).
    """
    metrics: dict[str, float] = {}
    text_image = np.asarray([i for i, c in enumerate(chips) for _ in c.captions], dtype=np.int64)
    if text_emb is not None and len(text_image):
        if not all(c.captions for c in chips):
            raise DataError("some chips have no captions; retrieval needs captions for every chip")
        metrics.update(retrieval_metrics(image_emb @ text_emb.T, text_image,
                                         t2i_sim=hub_scores(hub, image_emb, text_emb)))
    labels = [c.label for c in chips]
    if class_emb and all(labels):
        metrics["zero_shot_acc"] = zero_shot_accuracy(image_emb, labels, class_emb)
    return RetrievalReport(metrics, len(chips), len(text_image), len(set(labels) - {None}), encoder_id,
                           extra={"t2i_scores": "hub-corrected" if hub is not None else "cosine"})


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
    return evaluate_embeddings(image_emb, chips, text_emb, class_emb, encoder.id, hub=hub_of(encoder))


class TrainingRecord(BaseModel):
    """What a heads file says about its training data (written by ``rsrag encoder train``).

    Attributes:
        fingerprint: :func:`~rsrag.tools.captioned.folder_fingerprint` of the whole training folder.
        val_fraction: share of that folder held out as the ``val`` split (never trained on).
        n_train: images trained on.
        sketch: the first :data:`SKETCH_CHARS` hex digits of each trained image's SHA-1 (to count overlaps).
    """

    model_config = ConfigDict(frozen=True)

    fingerprint: str
    val_fraction: float
    n_train: int
    sketch: frozenset[str] = frozenset()

    def to_metadata(self) -> dict[str, str]:
        """String metadata for a safetensors header."""
        return {"train_fingerprint": self.fingerprint, "train_val_fraction": repr(self.val_fraction),
                "n_train": str(self.n_train), "train_image_sketch": ",".join(sorted(self.sketch))}

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> TrainingRecord | None:
        """Parse :meth:`to_metadata`; None for heads trained before fingerprints were recorded."""
        if "train_fingerprint" not in meta:
            return None
        sketch = frozenset(x for x in meta.get("train_image_sketch", "").split(",") if x)
        return cls(fingerprint=meta["train_fingerprint"], val_fraction=float(meta.get("train_val_fraction", "0.1")),
                   n_train=int(meta.get("n_train", "0")), sketch=sketch)

    @classmethod
    def of(cls, chips: Sequence[Chip], train: Sequence[Chip], val_fraction: float) -> TrainingRecord:
        """The record of heads trained on ``train``, a split of the folder ``chips``."""
        digests = dict(zip([c.image for c in chips], image_fingerprints(chips), strict=True))
        return cls(fingerprint=folder_fingerprint(chips), val_fraction=val_fraction, n_train=len(train),
                   sketch=frozenset(digests[c.image][:SKETCH_CHARS] for c in train))


def training_record(spec: str | None) -> TrainingRecord | None:
    """The training record of the heads an encoder spec loads; None for other encoders or unrecorded heads."""
    from rsrag.tools.encoders.lit import DEFAULT_HEADS, read_heads
    from rsrag.tools.encoders.spec import parse_spec

    parsed = parse_spec(spec)
    if parsed.kind != "lit" or parsed.weights == "random":
        return None
    _, _, meta = read_heads(Path(parsed.weights) if parsed.weights else DEFAULT_HEADS)
    return TrainingRecord.from_metadata(meta)


class EvalSelection(BaseModel):
    """Which chips of a folder an evaluation scores, and why.

    Attributes:
        split: ``all``, ``val`` or ``train``.
        reason: one line saying why this split (the default depends on the heads' training data).
        training_folder: DATA is the folder the encoder's heads were trained on.
        seen: how many of the selected images the heads were trained on (0 when unknown).
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    split: str
    chips: tuple[Chip, ...]
    reason: str
    training_folder: bool
    seen: int


def select_for_eval(chips: Sequence[Chip], record: TrainingRecord | None, split: str | None = None,
                    val_fraction: float | None = None) -> EvalSelection:
    """Pick the chips to evaluate.

    Default (``split`` None): the held-out ``val`` split when ``chips`` is the folder the heads were trained on
    (same content fingerprint, same ``val_fraction`` as in training), otherwise the whole folder.

    Args:
        chips: every chip of DATA.
        record: the heads' training record (None: not a LiT encoder, or heads without a record).
        split: ``all``, ``val``, ``train`` or None for the default.
        val_fraction: held-out share for ``val``/``train``; None uses the one the heads were trained with.
    """
    digests = image_fingerprints(chips) if record is not None else []
    is_training = record is not None and folder_fingerprint(chips) == record.fingerprint
    frac = val_fraction if val_fraction is not None else (record.val_fraction if record is not None else 0.1)
    if split is None:
        split = "val" if is_training else "all"
        if is_training:
            reason = "DATA is the folder the encoder's heads were trained on: its held-out val split"
        elif record is None:
            reason = "the encoder records no training data: the whole folder"
        else:
            reason = "DATA is not the folder the encoder's heads were trained on: the whole folder"
    else:
        reason = f"--split {split}"
    chosen = select_split(list(chips), split, frac)
    seen = 0
    if record is not None and record.sketch:
        by_path = dict(zip([c.image for c in chips], digests, strict=True))
        seen = sum(by_path[c.image][:SKETCH_CHARS] in record.sketch for c in chosen)
    return EvalSelection(split=split, chips=tuple(chosen), reason=reason, training_folder=is_training, seen=seen)
