"""Refinement: a target's candidate places seen again through windows half the encoder's input.

The finest level of the default pyramid has windows of about the encoder's input (224 px at full
resolution). An object smaller than that fills only part of every window that holds it, so its calibrated
presence is diluted: on the analyst benchmark's scenes a one-chip (150 px) site scores 0.3-0.6 where a
2 x 2-chip site scores above 0.9, and most one-chip sites were missed. Encoding the whole scene again at
half the window side would cost four times the finest level; refinement encodes only the windows of that
finer footprint that lie inside a target's strongest candidate windows (its *refinement candidates*),
scores their presence, and lets those that reach the calibration's ``site_at`` join the target's sites.

The finer windows are the finest level of the scene's pyramid ``pyramid:SIZE/2`` (half the side,
overlapping by half), stored in the same :class:`~rsrag.tools.store.PatchStore` as any pyramid level, so a
later question reuses them; only the windows a refinement visits are ever encoded (plus the level's small
statistics sample, the first time). :func:`refine` does the encoding and returns the windows as
:class:`~rsrag.tools.hit.Hit` s with their stored vectors; :func:`rsrag.tools.retrieval.cascade` decides
which windows to refine and what they change.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from rsrag.tools.encoders.hubness import as_queries, plain
from rsrag.tools.hit import Hit, HitPath
from rsrag.tools.region import PixelBox
from rsrag.tools.store import PatchStore, region_from_row

if TYPE_CHECKING:
    from rsrag.tools.encoders.base import Encoder
    from rsrag.tools.pyramid import Pyramid
    from rsrag.tools.retrieval import Calibration


@dataclass(frozen=True)
class Refinement:
    """Finer windows inside refinement candidates, for one target.

    Attributes:
        hits: one hit per finer window (score and confidence against the best of the target's query
            vectors), in the order of ``vectors``.
        vectors: the windows' plain unit vectors (the encoder's, not hub-corrected keys), ``(len(hits), dim)``.
        encoded: windows this refinement had to encode (0 when all were stored).
    """

    hits: list[Hit] = field(default_factory=list)
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    encoded: int = 0


def fine_size(encoder: Encoder) -> int:
    """Side of a refinement window: half the encoder's input size (at least 8 px)."""
    return max(8, encoder.image_size // 2)


def refinable(index: object, encoder: Encoder) -> Pyramid | None:
    """The finer pyramid a search of ``index`` refines into, or ``None`` when it cannot be refined (a flat
    index, whose scene the cascade does not hold, or a pyramid whose finest windows are already that fine)."""
    if not getattr(index, "is_pyramid", False):
        return None
    pyramid: Pyramid = index.pyramid  # type: ignore[attr-defined]
    size = fine_size(encoder)
    if pyramid.finest.window <= size or min(pyramid.scene.width, pyramid.scene.height) < size:
        return None
    return pyramid.finer(size)


def refine(
    fine: Pyramid,
    boxes: Sequence[PixelBox],
    queries: np.ndarray,
    texts: Sequence[str],
    *,
    path: HitPath = "fast",
    calibration: Calibration | None = None,
    prompt_version: str | None = None,
    extra: dict[str, str | float | int] | None = None,
) -> Refinement:
    """Encode (where not stored yet) and return the finer windows inside ``boxes``.

    Args:
        fine: the finer pyramid (:func:`refinable`); its finest level holds the refinement windows.
        boxes: the candidate windows to look inside (full-resolution pixel boxes).
        queries: the target's unit query vectors ``(n, dim)``; a window's score is its best over them.
        texts: the phrase each query vector stands for (the hit's ``query`` is the best one's).
        path: the retrieval path the hits are recorded as.
        calibration: z-score to confidence mapping (default :class:`~rsrag.tools.retrieval.Calibration`).
        prompt_version: recorded on the hits.
        extra: provenance copied into each hit's ``extra`` (besides the window footprint).
    """
    from rsrag.tools.retrieval import Calibration

    level = fine.n_levels - 1
    lv = fine.levels[level]
    wanted: list[int] = []
    for box in boxes:
        wanted += [i for i in lv.inside(box) if _within(lv.box(i), box)]
    wanted = sorted(set(wanted))
    if not wanted:
        return Refinement()
    encoded = fine.ensure(level, wanted, stage="refine")
    info = fine.info(level)
    assert info is not None
    patches: PatchStore = fine.patches
    rows: list[dict[str, object]] = []
    vectors: list[np.ndarray] = []
    for row, vector in patches.patch_rows(info, wanted):  # from the level's receipt when valid
        rows.append(row)
        vectors.append(vector)
    if not rows:
        return Refinement(encoded=encoded)
    matrix = np.stack(vectors)
    plain_q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    q = as_queries(plain_q, info.dim)  # scored as the level's search scores them (hub-corrected keys)
    scores = matrix @ q.T  # (windows, queries)
    best = scores.argmax(axis=1)
    stats = patches.stats(info)
    version = patches.table_version(info.encoder, info.dim)[1]
    cal = calibration or Calibration()
    hits = []
    for row, b, s in zip(rows, best, scores):
        z = float(stats.zscores(q[b], np.asarray([s[b]]))[0])
        hits.append(Hit(
            region=region_from_row(row), score=float(s[b]), confidence=float(cal.confidence(np.asarray([z]))[0]),
            path=path, query=texts[int(b)], queries=(texts[int(b)],), z=z if math.isfinite(z) else None,
            index_key=info.key, index_version=version,
            encoder=info.encoder, prompt_version=prompt_version, patch=int(row["patch"]),  # type: ignore[call-overload]
            extra={**(extra or {}), "window": lv.window, "px_per_input_px": round(lv.window / fine.encoder.image_size, 3),
                   "refined": 1},
        ))
    return Refinement(hits=hits, vectors=plain(matrix, plain_q.shape[1]), encoded=encoded)


def _within(inner: PixelBox, outer: PixelBox) -> bool:
    return inner.x0 >= outer.x0 and inner.y0 >= outer.y0 and inner.x1 <= outer.x1 and inner.y1 <= outer.y1

