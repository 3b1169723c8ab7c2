"""Hub correction of window vectors: querybank normalisation folded into one extra coordinate.

A contrastive space has *hubs*: images that sit near many texts and so crowd the top of every text query's
ranking whatever it asks. Querybank normalisation (Bogolin et al., CVPR 2022) scores a gallery item ``g`` for
a query ``q`` as ``q . g - h(g)``, where the hub term ``h(g) = logsumexp_b(beta * b . g) / beta`` measures how
close ``g`` is to a bank of training captions ``b`` it should not match in general. Cross-validated on
held-out caption templates it adds about +1 mR to text -> image retrieval on every fold (BENCHMARKS.md,
Encoder).

The fast path ranks windows inside a vector store by cosine, exact or ANN, and turns scores into z-scores
with each index's vector statistics; a per-window score offset would fit none of that. So the offset is
folded into the vectors: a window is stored as the unit *key* ``[a * g, u]`` with ``u = -w * (h(g) - c) *
sqrt(1 - B^2) / B`` (``c`` centres the hub terms of the training images, ``w`` weighs the correction; ``h(g) -
c`` is floored at its 5th percentile over the training images, so a window far from every caption, such as a
uniform colour, is raised no more than real images are) and
``a = sqrt(1 - u^2)``, and every query is searched as the unit vector ``[sqrt(1 - B^2) * q, B]``
(:data:`QUERY_COORD` ``B``). Their dot product is ``sqrt(1 - B^2) * (a * q . g - w * (h(g) - c))``: the
corrected score up to a constant factor (``a`` stays within a few per mille of 1), in any store, with
statistics and z-scores computed as before. The plain vector is recovered exactly from a key
(:func:`plain`), so everything that compares windows with texts itself (the presence model) reads plain
vectors.

The bank (a few thousand training captions through the trained text head) ships in the heads file
(``hub.bank``, float16, with the parameters in the metadata key ``hub``); ``rsrag encoder train`` fits it.
Encoders without one (open_clip models, older heads) store plain vectors: :func:`index_dim` is then the
encoder's own dimension and every function here passes vectors through.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rsrag.tools.errors import CheckpointMismatchError, EncoderError

if TYPE_CHECKING:
    from rsrag.tools.encoders.base import Encoder

__all__ = ["BANK_TENSOR", "FLOOR_PERCENTILE", "META_KEY", "QUERY_COORD", "HubCorrection", "as_queries", "fit_hub_correction",
           "hub_of", "index_dim", "index_keys", "plain"]

QUERY_COORD = 0.5
"""The query's extra coordinate ``B`` (fixed, so a query needs no bank). 0.5 keeps ``a`` within ~1.5% of 1
for the bundled heads' hub terms; smaller values need larger ``u`` and distort more (BENCHMARKS.md)."""
BANK_TENSOR = "hub.bank"
META_KEY = "hub"
_Q_SCALE = float(np.sqrt(1.0 - QUERY_COORD ** 2))
_MAX_U = 0.8


@dataclass(frozen=True)
class HubCorrection:
    """A hub bank and how it corrects window vectors.

    Attributes:
        bank: ``(n, dim)`` unit text vectors of training captions.
        beta: inverse temperature of the log-sum-exp.
        centre: the mean hub term of the training images (so stored ``u`` are centred on 0).
        weight: how much of the hub term is subtracted (1: plain querybank normalisation).
        floor: the least centred hub term used (``None``: no floor). A window far from every caption (a uniform
            colour, water, a blank collar) has a very low hub term and would be *raised* for every query;
            the floor (the 5th percentile of the training images') bounds that raise to what real images get.
    """

    bank: np.ndarray
    beta: float = 10.0
    centre: float = 0.0
    weight: float = 1.0
    floor: float | None = None

    @property
    def dim(self) -> int:
        """Dimension of the plain vectors the bank corrects."""
        return int(self.bank.shape[1])

    def hub_terms(self, vectors: np.ndarray) -> np.ndarray:
        """``h(g)`` of each unit row of ``vectors`` ``(n, dim)``."""
        x = self.beta * (np.asarray(vectors, np.float32) @ self.bank.T).astype(np.float64)
        m = x.max(axis=1, keepdims=True)
        return (m[:, 0] + np.log(np.exp(x - m).sum(axis=1))) / self.beta

    def keys(self, vectors: np.ndarray) -> np.ndarray:
        """Unit keys ``(n, dim + 1)`` of unit plain vectors, as a window index stores them."""
        v = np.asarray(vectors, np.float32).reshape(-1, self.dim)
        d = self.hub_terms(v) - self.centre
        if self.floor is not None:
            d = np.maximum(d, self.floor)
        u = -self.weight * d * _Q_SCALE / QUERY_COORD
        u = np.clip(u, -_MAX_U, _MAX_U)
        a = np.sqrt(1.0 - u * u)
        return np.concatenate([v * a[:, None].astype(np.float32), u[:, None].astype(np.float32)], axis=1)

    def tensors(self) -> dict[str, Any]:
        """What a heads file stores: ``{BANK_TENSOR: float16 tensor}`` (torch is imported here)."""
        import torch

        return {BANK_TENSOR: torch.from_numpy(np.ascontiguousarray(self.bank, dtype=np.float16))}

    def metadata(self) -> dict[str, str]:
        """The heads-file metadata entry describing this correction."""
        return {META_KEY: json.dumps({"beta": self.beta, "centre": self.centre, "weight": self.weight,
                                      "floor": self.floor, "query_coord": QUERY_COORD, "bank": int(self.bank.shape[0])})}

    @classmethod
    def from_heads(cls, bank: np.ndarray | None, meta: dict[str, str], source: str) -> HubCorrection | None:
        """The correction a heads file holds (``bank`` is its :data:`BANK_TENSOR`), or ``None`` if it holds none.

        Raises:
            CheckpointMismatchError: the metadata and the bank disagree, or were written for another
                :data:`QUERY_COORD`.
        """
        raw = meta.get(META_KEY)
        if raw is None and bank is None:
            return None
        try:
            params = json.loads(raw or "")
            assert bank is not None and bank.ndim == 2 and int(params["bank"]) == bank.shape[0]
            if abs(float(params["query_coord"]) - QUERY_COORD) > 1e-9:
                raise CheckpointMismatchError(f"{source}: hub bank written for query coordinate {params['query_coord']}, "
                                              f"this version uses {QUERY_COORD}; retrain with `rsrag encoder train`")
            floor = params.get("floor")
            return cls(bank=np.asarray(bank, np.float32), beta=float(params["beta"]), centre=float(params["centre"]),
                       weight=float(params["weight"]), floor=None if floor is None else float(floor))
        except (ValueError, KeyError, TypeError, AssertionError) as exc:
            raise CheckpointMismatchError(f"{source}: unreadable hub bank ({exc!r}); retrain with `rsrag encoder train`") from None


FLOOR_PERCENTILE = 5.0
"""The floor of the centred hub term: this percentile of the training images' (cross-validated: the 1st and
5th cost nothing against no floor, within 0.05 mR; BENCHMARKS.md, Encoder)."""


def fit_hub_correction(train_images: np.ndarray, bank_texts: np.ndarray, *, beta: float = 10.0,
                       weight: float = 1.0) -> HubCorrection:
    """A correction from trained embeddings: ``bank_texts`` are the bank, the hub terms of ``train_images``
    (unit rows of the training images) set its centre and its floor (:data:`FLOOR_PERCENTILE`)."""
    hub = HubCorrection(bank=np.asarray(bank_texts, np.float32), beta=beta, weight=weight)
    terms = hub.hub_terms(train_images) if len(train_images) else np.zeros(1)
    centre = float(np.mean(terms))
    floor = float(np.percentile(terms - centre, FLOOR_PERCENTILE))
    return HubCorrection(bank=hub.bank, beta=beta, centre=centre, weight=weight, floor=floor)


def hub_of(encoder: Encoder) -> HubCorrection | None:
    """The hub correction of an encoder (its optional ``hub`` attribute), ``None`` for encoders without one."""
    hub = getattr(encoder, "hub", None)
    return hub if isinstance(hub, HubCorrection) else None


def index_dim(encoder: Encoder) -> int:
    """Dimension of the vectors a window index of ``encoder`` stores (its dimension, + 1 with a hub bank)."""
    return int(encoder.dim) + (1 if hub_of(encoder) is not None else 0)


def index_keys(encoder: Encoder, vectors: np.ndarray) -> np.ndarray:
    """What a window index stores for the encoder's unit image vectors: hub-corrected keys, or the vectors."""
    hub = hub_of(encoder)
    return np.asarray(vectors, np.float32) if hub is None else hub.keys(vectors)


def as_queries(vectors: np.ndarray, dim: int, *, correct: bool = True) -> np.ndarray:
    """Unit query vectors ``(n, d)`` as an index of ``dim``-dimensional vectors is searched: unchanged when
    ``d == dim``; when the index holds hub-corrected keys (``d + 1``), with the query coordinate appended
    (``correct``: text queries) or a zero one (image queries: the windows' plain cosine, scaled by ``a``;
    the hub terms measure closeness to captions, which says nothing about an image query)."""
    q = np.asarray(vectors, np.float32)
    q = q[None] if q.ndim == 1 else q
    if q.shape[1] == dim:
        return q
    if q.shape[1] + 1 != dim:
        raise EncoderError(f"query vectors have {q.shape[1]} dimensions, the index holds {dim}")
    scale, coord = (_Q_SCALE, QUERY_COORD) if correct else (1.0, 0.0)
    return np.concatenate([q * np.float32(scale), np.full((len(q), 1), coord, np.float32)], axis=1)


def plain(vectors: np.ndarray, dim: int) -> np.ndarray:
    """The plain unit vectors ``(n, dim)`` of stored rows: a key's first ``dim`` coordinates divided by ``a``
    (exact), or the rows themselves when they are plain already."""
    v = np.asarray(vectors, np.float32)
    v = v[None] if v.ndim == 1 else v
    if v.shape[1] == dim:
        return v
    head = v[:, :dim]
    return head / np.maximum(np.linalg.norm(head, axis=1, keepdims=True), 1e-12)
