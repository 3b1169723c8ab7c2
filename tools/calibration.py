"""Absolute presence calibration per encoder: is the asked thing in this window at all?

The fast path's confidence is a z-score within the scene, so the best window of *any* phrase looks good,
present or not. This module learns, once per encoder, a probability that a phrase's object is present in a
window, from features that do not depend on the scene:

* ``score``: the phrase's cosine score on the window;
* ``margin``: the score minus the best score of a fixed vocabulary of *other* concepts (the classes of the
  labelled set plus generic land-cover prompts) on the same window;
* ``logit``: the log-odds of the phrase in a softmax over the phrase and the other concepts;
* ``rank``: how many of the other concepts score above the phrase on this window;
* ``ref_z``: the score standardised against the phrase's score distribution over a reference set of
  labelled windows (its mean and covariance are stored, so this works for any phrase).

"Other" concepts exclude the phrase's own synonyms: a vocabulary concept whose score profile over the
reference windows correlates with the phrase's above ``same_concept`` (e.g. "oil tanks" and "storage tanks")
is the same concept and does not compete with it.

A logistic model over these features is fitted on labelled windows built from the *training* split of a
captioned chip folder (single chips and 2 x 2 / 3 x 3 mosaics of a background class with a planted class, as
retrieval windows see them) and checked on windows built from the validation split. The fit is one
reproducible command (``rsrag encoder calibrate DATA``); it is stored as a small JSON keyed by encoder id,
beside the bundled encoder's heads (``tools/encoders/weights/presence.json``) or under
``$RSRAG_HOME/calibration/`` for other encoders. An encoder whose id has no calibration gets
:data:`UNCALIBRATED`: every finding is ``"uncertain"`` with a message naming the command, never a silently
wrong verdict.

A scene-level verdict (:func:`PresenceModel.finding_for`) turns the presence probabilities of a target's
sites into ``found`` / ``not_found`` / ``uncertain`` with thresholds chosen on simulated scenes from the
training windows (see :func:`fit_calibration`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rsrag.tools.captioned import Chip, class_phrase, read_chips, split_chips
from rsrag.tools.errors import ConfigError, DataError, QueryError

if TYPE_CHECKING:
    from rsrag.tools.encoders.base import Encoder
    from rsrag.tools.sites import Site

Finding = Literal["found", "not_found", "uncertain"]
FORMAT = "rsrag-presence/1"
BUNDLED_FILE = Path(__file__).resolve().parent / "encoders" / "weights" / "presence.json"
CHIP_PX = 150
FIT_COMMAND = "rsrag encoder calibrate DATA"

#: Generic land-cover prompts that compete with every asked phrase (beside the labelled set's classes).
BACKGROUND_PROMPTS: tuple[str, ...] = (
    "land", "bare soil", "grass", "trees", "fields", "water", "roads", "buildings", "houses", "rooftops",
    "sand", "rocks", "a parking lot", "an empty area",
)
FEATURES: tuple[str, ...] = ("score", "margin", "logit", "rank", "ref_z")


# --- labelled windows -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """A labelled calibration window: a crop of a mosaic of chips, and which classes it shows.

    Attributes:
        cells: the chip image of each mosaic cell, row-major (``grid * grid`` paths, 150 px each).
        grid: mosaic cells per side (1: a single chip).
        crop: the window in mosaic pixels ``(x0, y0, x1, y1)``.
        labels: classes the window shows clearly: at least half a chip, or half the window.
        partial: classes visible in the window but less than that (neither present nor absent for fitting).
    """

    cells: tuple[Path, ...]
    grid: int
    crop: tuple[int, int, int, int]
    labels: frozenset[str]
    partial: frozenset[str] = frozenset()


def _label_crop(cells: Sequence[str], grid: int, crop: tuple[int, int, int, int]) -> tuple[set[str], set[str]]:
    x0, y0, x1, y1 = crop
    area: dict[str, int] = {}
    for k, label in enumerate(cells):
        r, c = divmod(k, grid)
        w = min(x1, (c + 1) * CHIP_PX) - max(x0, c * CHIP_PX)
        h = min(y1, (r + 1) * CHIP_PX) - max(y0, r * CHIP_PX)
        if w > 0 and h > 0:
            area[label] = area.get(label, 0) + w * h
    need = min(0.5 * CHIP_PX * CHIP_PX, 0.5 * (x1 - x0) * (y1 - y0))
    clear = {c for c, a in area.items() if a >= need}
    return clear, set(area) - clear


def build_windows(chips: Sequence[Chip], *, per_class: int, n_mosaics: int, seed: int) -> list[Window]:
    """Labelled windows as retrieval sees them: up to ``per_class`` single chips of each class, plus
    ``n_mosaics`` windows cut from 4 x 4 chip mosaics.

    A mosaic is one background class (30%: two, split along a row or column) with one or two other classes
    planted (a chip or a 2 x 2 block each). Its window is a square of 96-450 px at a random position (60%
    of them around a planted class), so windows straddle chips as tiling windows do. Deterministic for a
    given chip list and seed.
    """
    by_class: dict[str, list[Path]] = {}
    for c in chips:
        if c.label:
            by_class.setdefault(str(c.label), []).append(c.image)
    if len(by_class) < 3:
        raise DataError(f"presence calibration needs chips of at least 3 classes, got {len(by_class)}")
    rng = random.Random(seed)
    classes = sorted(by_class)
    for label in classes:
        by_class[label].sort()
    out: list[Window] = []
    full = (0, 0, CHIP_PX, CHIP_PX)
    for label in classes:
        for path in rng.sample(by_class[label], min(per_class, len(by_class[label]))):
            out.append(Window(cells=(path,), grid=1, crop=full, labels=frozenset({label})))
    grid = 4
    side = grid * CHIP_PX
    for _ in range(n_mosaics):
        back = rng.choice(classes)
        names = [back] * (grid * grid)
        if rng.random() < 0.3:
            second = rng.choice([c for c in classes if c != back])
            horizontal, cut = rng.random() < 0.5, rng.randrange(1, grid)
            for k in range(grid * grid):
                r, col = divmod(k, grid)
                if (r if horizontal else col) >= cut:
                    names[k] = second
        planted: list[tuple[int, int, int]] = []
        for _ in range(1 if rng.random() < 0.6 else 2):
            target = rng.choice([c for c in classes if c not in names])
            block = 2 if rng.random() < 0.4 else 1
            r0, c0 = rng.randrange(grid - block + 1), rng.randrange(grid - block + 1)
            for r in range(r0, r0 + block):
                for col in range(c0, c0 + block):
                    names[r * grid + col] = target
            planted.append((r0, c0, block))
        size = rng.randint(96, 3 * CHIP_PX)
        if rng.random() < 0.6:
            r0, c0, block = rng.choice(planted)
            cx = c0 * CHIP_PX + rng.randint(0, block * CHIP_PX)
            cy = r0 * CHIP_PX + rng.randint(0, block * CHIP_PX)
            x0 = min(max(0, cx - rng.randint(0, size)), side - size)
            y0 = min(max(0, cy - rng.randint(0, size)), side - size)
        else:
            x0, y0 = rng.randint(0, side - size), rng.randint(0, side - size)
        crop = (x0, y0, x0 + size, y0 + size)
        clear, partial = _label_crop(names, grid, crop)
        cells = tuple(rng.choice(by_class[n]) for n in names)
        out.append(Window(cells=cells, grid=grid, crop=crop, labels=frozenset(clear), partial=frozenset(partial)))
    return out


def render_window(window: Window) -> np.ndarray:
    """The window's pixels (HxWx3 uint8, the crop of its mosaic)."""
    from PIL import Image

    x0, y0, x1, y1 = window.crop
    canvas = np.zeros((window.grid * CHIP_PX, window.grid * CHIP_PX, 3), np.uint8)
    for k, path in enumerate(window.cells):
        r, c = divmod(k, window.grid)
        if (c + 1) * CHIP_PX <= x0 or c * CHIP_PX >= x1 or (r + 1) * CHIP_PX <= y0 or r * CHIP_PX >= y1:
            continue
        with Image.open(path) as im:
            rgb_im = im.convert("RGB")
            rgb = np.asarray(rgb_im if rgb_im.size == (CHIP_PX, CHIP_PX) else rgb_im.resize((CHIP_PX, CHIP_PX)))
        canvas[r * CHIP_PX:(r + 1) * CHIP_PX, c * CHIP_PX:(c + 1) * CHIP_PX] = rgb
    return np.ascontiguousarray(canvas[y0:y1, x0:x1])


def _windows_digest(windows: Sequence[Window]) -> str:
    h = hashlib.sha1()
    for w in windows:
        h.update(f"{w.grid}|{w.crop}|{'|'.join(p.name for p in w.cells)}\n".encode())
    return h.hexdigest()[:16]


def encode_windows(
    encoder: Encoder, windows: Sequence[Window], cache_dir: Path | None = None,
    progress: Callable[[int], None] | None = None, batch: int = 64,
) -> np.ndarray:
    """Unit image vectors of the windows (cached in ``cache_dir`` per encoder id and window list)."""
    cache = None
    if cache_dir is not None:
        ident = hashlib.sha1(encoder.id.encode()).hexdigest()[:16]
        cache = Path(cache_dir) / f"windows-{ident}-{_windows_digest(windows)}.npy"
        if cache.is_file():
            vecs = np.load(cache, allow_pickle=False)
            if vecs.shape == (len(windows), encoder.dim):
                if progress:
                    progress(len(windows))
                return vecs
    out = []
    for start in range(0, len(windows), batch):
        chunk = windows[start:start + batch]
        out.append(np.asarray(encoder.encode_images([render_window(w) for w in chunk]), np.float32))
        if progress:
            progress(len(chunk))
    vecs = np.concatenate(out) if out else np.zeros((0, encoder.dim), np.float32)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npy")
        np.save(tmp, vecs)
        os.replace(tmp, cache)
    return vecs


# --- the stored calibration -------------------------------------------------------------------------------


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f4").tobytes()).decode("ascii")


def _unb64(s: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype="<f4").reshape(shape).astype(np.float64)


class Reference(BaseModel):
    """Score distribution of any phrase over the reference windows: their mean vector and a low-rank
    covariance ``C ~= U^T U + residual * I`` (``U`` has ``rank`` rows), stored as base64 float32."""

    model_config = ConfigDict(frozen=True)

    dim: int
    rank: int
    mean: str
    factors: str
    residual: float

    @classmethod
    def from_vectors(cls, vectors: np.ndarray, rank: int = 32) -> Reference:
        x = np.asarray(vectors, np.float64)
        mean = x.mean(axis=0)
        cov = np.cov(x - mean, rowvar=False)
        vals, vecs = np.linalg.eigh(cov)
        order = np.argsort(vals)[::-1]
        vals, vecs = vals[order], vecs[:, order]
        r = min(rank, x.shape[1])
        residual = float(vals[r:].mean()) if r < len(vals) else 0.0
        factors = (vecs[:, :r] * np.sqrt(np.maximum(vals[:r] - residual, 0.0))).T
        return cls(dim=x.shape[1], rank=r, mean=_b64(mean), factors=_b64(factors), residual=residual)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return _unb64(self.mean, (self.dim,)), _unb64(self.factors, (self.rank, self.dim))

    def moments(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of each unit query's cosine score over the reference windows."""
        mean, factors = self.arrays()
        q = np.atleast_2d(np.asarray(queries, np.float64))
        proj = q @ factors.T
        var = (proj**2).sum(axis=1) + self.residual * (q**2).sum(axis=1)
        return q @ mean, np.sqrt(np.maximum(var, 1e-12))

    def covariance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``a C b^T`` for rows of ``a`` and ``b`` (the covariance of their score profiles)."""
        _, factors = self.arrays()
        a, b = np.atleast_2d(a).astype(np.float64), np.atleast_2d(b).astype(np.float64)
        return (a @ factors.T) @ (b @ factors.T).T + self.residual * (a @ b.T)


class PresenceCalibration(BaseModel):
    """One encoder's fitted presence calibration (the JSON record stored per encoder id).

    Attributes:
        encoder: the encoder id it was fitted for (must equal the encoder's id to be used).
        prompt_version: the prompt templates phrases and vocabulary were embedded with.
        vocabulary: the competing concepts (the labelled set's class phrases, then generic prompts).
        same_concept: profile correlation at or above which a vocabulary concept counts as the phrase itself.
        temperature: softmax temperature of the ``logit`` feature.
        features: feature names; mean/scale: their standardisation; coef/intercept: the logistic model.
        found_at: presence at or above which a target is ``found`` (its best site reaches it);
            site_at: once a target is found, presence at or above which another of its sites counts as found
            too (at most ``found_at``); not_found_below: a target whose best presence is below it is
            ``not_found``; refined_found_at: presence at or above which a window of the finer refinement
            footprint (:mod:`rsrag.tools.refine`) makes its target found on its own (``None``: refined windows
            only add sites to a target found at the indexed footprint).
        reference: the reference score distribution (for ``ref_z`` and ``same_concept``).
        data: what it was fitted on; metrics: its checks on the training and validation windows.
    """

    model_config = ConfigDict(frozen=True)

    format: str = FORMAT
    encoder: str
    prompt_version: str
    vocabulary: tuple[str, ...]
    same_concept: float
    temperature: float
    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    found_at: float = Field(ge=0.0, le=1.0)
    site_at: float = Field(ge=0.0, le=1.0)
    not_found_below: float = Field(ge=0.0, le=1.0)
    refined_found_at: float | None = Field(default=None, ge=0.0, le=1.0)
    reference: Reference
    data: dict[str, str | int | float]
    metrics: dict[str, float]
    created: float


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):  # every term -inf (no competing concept): the log-sum is -inf
        return (m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))).squeeze(axis)


def compute_features(
    queries: np.ndarray, vocab: np.ndarray, vectors: np.ndarray, reference: Reference, *,
    same_concept: float, temperature: float,
) -> np.ndarray:
    """Presence features of every (query, window) pair: an array (n_queries, n_windows, len(FEATURES)).

    Args:
        queries: (Q, d) unit phrase vectors; vocab: (V, d) unit vocabulary vectors; vectors: (N, d) windows.
        reference: the reference distribution (``ref_z`` and the same-concept test).
        same_concept: profile correlation from which a vocabulary concept is the phrase itself.
        temperature: softmax temperature for ``logit``.
    """
    q = np.atleast_2d(np.asarray(queries, np.float64))
    t = np.atleast_2d(np.asarray(vocab, np.float64))
    v = np.atleast_2d(np.asarray(vectors, np.float64))
    s = q @ v.T                                   # (Q, N)
    c = t @ v.T                                   # (V, N)
    mean_q, sd_q = reference.moments(q)
    _, sd_t = reference.moments(t)
    corr = reference.covariance(q, t) / np.outer(sd_q, sd_t)          # (Q, V)
    competes = (corr < same_concept) & ((q @ t.T) < 0.98)             # (Q, V)
    comp = np.where(competes[:, :, None], c[None, :, :], -np.inf)     # (Q, V, N)
    best = comp.max(axis=1)
    best = np.where(np.isfinite(best), best, s - 1.0)
    margin = s - best
    logit = s / temperature - _logsumexp(comp / temperature, axis=1)
    rank = (comp > s[:, None, :]).sum(axis=1)
    ref_z = (s - mean_q[:, None]) / sd_q[:, None]
    return np.stack([s, margin, np.clip(logit, -50, 50), np.log1p(rank), ref_z], axis=-1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, iters: int = 50,
                 weights: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by Newton's method (deterministic); returns (coef, intercept)."""
    n, f = x.shape
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    w = w / w.mean()
    xb = np.hstack([x, np.ones((n, 1))])
    beta = np.zeros(f + 1)
    reg = np.full(f + 1, l2)
    reg[-1] = 0.0
    for _ in range(iters):
        p = _sigmoid(xb @ beta)
        grad = xb.T @ (w * (p - y)) / n + reg * beta
        hess = (xb * (w * p * (1 - p))[:, None]).T @ xb / n + np.diag(reg) + 1e-9 * np.eye(f + 1)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return beta[:-1], float(beta[-1])


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (ties counted half); NaN when one class is missing."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if not pos or not neg:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1
        i = j + 1
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


# --- fitting ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FitConfig:
    """How a presence calibration is fitted (the defaults are what ``rsrag encoder calibrate`` uses).

    Attributes:
        per_class, n_mosaics: training windows: single chips per class, and 2 x 2 / 3 x 3 mosaics.
        val_per_class, val_mosaics: the same for the validation check.
        same_concept: profile correlation from which a vocabulary concept is the phrase itself.
        temperature: softmax temperature of the ``logit`` feature.
        scene_windows: candidate windows per simulated scene when choosing the thresholds (about the
            windows of a scene's finest level).
        scenes: simulated scenes for the thresholds.
        seed: seed of windows and simulated scenes.
        val_fraction: the chip folder's validation share (as the encoder's training used).
        refined_found_at: recorded as the calibration's ``refined_found_at`` (not fitted: the simulated
            scenes hold no refined windows; 0.9 was chosen on the analyst benchmark's validation scenes,
            where no refined window of an absent class reached it; ``None`` turns it off).
    """

    per_class: int = 60
    n_mosaics: int = 1600
    val_per_class: int = 20
    val_mosaics: int = 600
    same_concept: float = 0.6
    temperature: float = 0.03
    scene_windows: int = 300
    scenes: int = 600
    seed: int = 0
    val_fraction: float = 0.1
    refined_found_at: float | None = 0.9


def vocabulary_for(classes: Sequence[str]) -> tuple[str, ...]:
    """Competing concepts: the labelled set's class phrases, then the generic prompts (deduplicated)."""
    return tuple(dict.fromkeys([*(class_phrase(c) for c in sorted(classes)), *BACKGROUND_PROMPTS]))


class _PresenceTexts:
    """An encoder seen as presence verdicts embed texts: through its ``encode_presence_texts`` when it has one
    (a LiT heads file with a presence text head, :data:`rsrag.tools.encoders.lit.PRESENCE_PREFIX`)."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        from rsrag.tools.encoders.base import encode_presence_texts

        return encode_presence_texts(self.encoder, texts)


def _embed(encoder: Encoder, phrases: Sequence[str]) -> np.ndarray:
    from rsrag.tools.fastpath import embed_phrases

    return np.asarray(embed_phrases(_PresenceTexts(encoder), list(phrases)), np.float64)  # type: ignore[arg-type]


def _prompt_version() -> str:
    from rsrag.tools.fastpath import PROMPT_VERSION

    return PROMPT_VERSION


@dataclass(frozen=True)
class _Simulation:
    """Simulated scenes: best presence per present and absent class, and per present class the best
    presence of each of its sites and the presence of its candidate windows elsewhere."""

    present_best: np.ndarray
    absent_best: np.ndarray
    site_best: list[np.ndarray]
    elsewhere: list[np.ndarray]


def _simulate_scenes(presence: np.ndarray, windows: Sequence[Window], classes: list[str], cfg: FitConfig,
                     seed: int) -> _Simulation:
    """Simulated scenes from labelled windows.

    A simulated scene has 4 background classes, 2 present and 2 absent classes (all distinct; fewer with
    fewer than 8 classes). Its candidate windows are ``scene_windows`` windows showing only scene classes;
    each present class has 2-4 sites, each seen by up to 3 mosaic windows that clearly show the class.
    ``presence`` is (n_classes, n_windows).
    """
    rng = np.random.default_rng(seed)
    n_pick = min(8, len(classes))            # fewer than 8 classes: fewer backgrounds and targets
    n_targets = min(4, n_pick - 1)
    n_present = (n_targets + 1) // 2
    n_back = n_pick - n_targets
    shown = [w.labels | w.partial for w in windows]
    # a site is seen through mosaic windows only: a tiling window never lines up with one chip
    own = {i: np.array([j for j, w in enumerate(windows) if c in w.labels and w.grid > 1])
           for i, c in enumerate(classes)}
    present_best, absent_best, site_best, elsewhere = [], [], [], []
    for _ in range(cfg.scenes):
        pick = rng.choice(len(classes), n_pick, replace=False)
        backs, present, absent = pick[:n_back], pick[n_back:n_back + n_present], pick[n_back + n_present:]
        allowed = {classes[i] for i in (*backs, *present)}
        pool = np.array([j for j, lab in enumerate(shown) if lab <= allowed])
        if len(pool) == 0:
            continue
        cand = rng.choice(pool, min(cfg.scene_windows, len(pool)), replace=False)
        for p in present:
            if len(own[p]) == 0:
                continue
            sites = [presence[p, rng.choice(own[p], min(len(own[p]), 3), replace=False)].max()
                     for _ in range(int(rng.integers(2, 5)))]
            not_here = cand[[classes[p] not in shown[j] for j in cand]]
            site_best.append(np.array(sites))
            elsewhere.append(presence[p, not_here])
            present_best.append(max(presence[p, not_here].max(initial=0.0), max(sites)))
        for a in absent:
            absent_best.append(presence[a, cand].max())
    return _Simulation(np.array(present_best), np.array(absent_best), site_best, elsewhere)


def _choose_thresholds(sim: _Simulation) -> tuple[float, float, float]:
    """``found_at`` maximising (found rate on present + not-found rate on absent); ``not_found_below``
    the best presence that 90% of absent classes stay under (never above ``found_at``): between the two a
    finding is ``uncertain``, so ``not_found`` is said only where absent classes usually are; ``site_at``, the lowest
    presence (not above ``found_at``) at which the sites of found classes keep a precision of 0.9."""
    present_best, absent_best = sim.present_best, sim.absent_best
    grid = np.unique(np.concatenate([present_best, absent_best]))
    found_at, best_j = 0.5, -1.0
    for t in grid:
        j = (present_best >= t).mean() + (absent_best < t).mean()
        if j > best_j + 1e-12:
            found_at, best_j = float(t), float(j)
    not_found_below = min(float(np.quantile(absent_best, 0.90)), found_at)
    site_at = found_at
    for t in np.linspace(found_at, 0.05, 60):
        tp = fp = 0
        for sites, other in zip(sim.site_best, sim.elsewhere):
            if max(sites.max(), other.max(initial=0.0)) >= found_at:
                tp += int((sites >= t).sum())
                fp += int((other >= t).sum())
        if tp + fp and tp / (tp + fp) >= 0.9:
            site_at = float(t)
        else:
            break
    return found_at, not_found_below, site_at


def _site_rates(sim: _Simulation, found_at: float, site_at: float) -> tuple[float, float]:
    tp = fp = n = 0
    for sites, other in zip(sim.site_best, sim.elsewhere):
        n += len(sites)
        if max(sites.max(), other.max(initial=0.0)) >= found_at:
            tp += int((sites >= site_at).sum())
            fp += int((other >= site_at).sum())
    return tp / max(1, n), tp / max(1, tp + fp)


def fit_calibration(
    encoder: Encoder, data: str | os.PathLike[str], *, config: FitConfig | None = None,
    cache_dir: str | os.PathLike[str] | None = None, progress: Callable[[str, int, int], None] | None = None,
) -> PresenceCalibration:
    """Fit an encoder's presence calibration on a labelled chip folder (training split), check it on the
    validation split.

    Args:
        encoder: the encoder to calibrate.
        data: folder with ``captions.jsonl`` (classes are needed; captions are not used).
        config: fit settings (default :class:`FitConfig`).
        cache_dir: where window embeddings are cached (per encoder id and window list).
        progress: called with (stage, done, total) while windows are encoded.

    Raises:
        DataError: the folder has fewer than 3 classes or an empty split.
    """
    cfg = config or FitConfig()
    folder = Path(data)
    chips = read_chips(folder)
    train, val = split_chips(chips, cfg.val_fraction)
    if not val:
        raise DataError(f"{folder}: the validation split is empty (val_fraction={cfg.val_fraction})")
    classes = sorted({c.label for c in train if c.label})
    train_w = build_windows(train, per_class=cfg.per_class, n_mosaics=cfg.n_mosaics, seed=cfg.seed)
    val_w = build_windows(val, per_class=cfg.val_per_class, n_mosaics=cfg.val_mosaics, seed=cfg.seed + 1)
    cache = Path(cache_dir) if cache_dir is not None else None

    def stage(name: str, total: int) -> Callable[[int], None] | None:
        if progress is None:
            return None
        done = [0]

        def step(n: int) -> None:
            done[0] += n
            progress(name, done[0], total)
        return step

    v_train = encode_windows(encoder, train_w, cache, stage("training windows", len(train_w)))
    v_val = encode_windows(encoder, val_w, cache, stage("validation windows", len(val_w)))
    data_info: dict[str, str | int | float] = {
        "folder": folder.name, "chips": len(chips), "train_chips": len(train), "val_chips": len(val)}
    return fit_from_windows(encoder, classes, train_w, v_train, val_w, v_val, config=cfg, data=data_info)


def fit_from_windows(
    encoder: Encoder, classes: Sequence[str], train_w: Sequence[Window], v_train: np.ndarray,
    val_w: Sequence[Window], v_val: np.ndarray, *, config: FitConfig | None = None,
    data: dict[str, str | int | float] | None = None,
) -> PresenceCalibration:
    """The fit of :func:`fit_calibration` from windows already encoded (``v_train``, ``v_val``)."""
    cfg = config or FitConfig()
    classes = sorted(classes)
    vocabulary = vocabulary_for(classes)
    vocab = _embed(encoder, vocabulary)
    queries = vocab[: len(classes)]  # the class phrases come first in the vocabulary
    reference = Reference.from_vectors(v_train)
    f_train = compute_features(queries, vocab, v_train, reference, same_concept=cfg.same_concept,
                               temperature=cfg.temperature)
    y_train = np.array([[c in w.labels for w in train_w] for c in classes], np.float64)
    # a class only partly in a window is neither present nor absent there: left out of the fit
    keep = ~np.array([[c in w.partial for w in train_w] for c in classes]).reshape(-1)
    x = f_train.reshape(-1, len(FEATURES))[keep]
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    coef, intercept = fit_logistic((x - mean) / scale, y_train.reshape(-1)[keep])

    def presence(feats: np.ndarray) -> np.ndarray:
        return _sigmoid(((feats - mean) / scale) @ coef + intercept)

    p_train = presence(f_train)
    # Thresholds are chosen on out-of-fold presence (two folds of the training windows, each scored by a
    # model fitted on the other), so they are not set on scores the model has fitted.
    fold = (np.arange(len(train_w)) % 2)[None, :].repeat(len(classes), axis=0)
    p_oof = np.zeros_like(p_train)
    keep2 = keep.reshape(len(classes), len(train_w))
    for k in (0, 1):
        fit_mask = (fold != k) & keep2
        c_k, b_k = fit_logistic((f_train[fit_mask] - mean) / scale, y_train[fit_mask])
        p_oof[fold == k] = _sigmoid(((f_train[fold == k] - mean) / scale) @ c_k + b_k)
    f_val = compute_features(queries, vocab, v_val, reference, same_concept=cfg.same_concept,
                             temperature=cfg.temperature)
    p_val = presence(f_val)
    y_val = np.array([[c in w.labels for w in val_w] for c in classes], np.float64)
    keep_val = ~np.array([[c in w.partial for w in val_w] for c in classes])
    sim_train = _simulate_scenes(p_oof, train_w, list(classes), cfg, cfg.seed)
    found_at, not_found_below, site_at = _choose_thresholds(sim_train)
    sim_val = _simulate_scenes(p_val, val_w, list(classes), cfg, cfg.seed + 1)
    tp, ta, vp, va = sim_train.present_best, sim_train.absent_best, sim_val.present_best, sim_val.absent_best
    val_recall, val_precision = _site_rates(sim_val, found_at, site_at)
    metrics = {
        "train_window_auroc": auroc(p_train.reshape(-1)[keep], y_train.reshape(-1)[keep]),
        "val_window_auroc": auroc(p_val[keep_val], y_val[keep_val]),
        "val_window_auroc_single_chips": auroc(
            p_val[:, [w.grid == 1 for w in val_w]].reshape(-1), y_val[:, [w.grid == 1 for w in val_w]].reshape(-1)),
        "train_scene_present_found": float((tp >= found_at).mean()),
        "train_scene_absent_not_found": float((ta < found_at).mean()),
        "val_scene_present_found": float((vp >= found_at).mean()),
        "val_scene_absent_not_found": float((va < found_at).mean()),
        "val_scene_absent_uncertain": float(((va >= not_found_below) & (va < found_at)).mean()),
        "val_site_recall": val_recall,
        "val_site_precision": val_precision,
        "val_scene_auroc": auroc(np.concatenate([vp, va]), np.r_[np.ones(len(vp)), np.zeros(len(va))]),
    }
    return PresenceCalibration(
        encoder=encoder.id, prompt_version=_prompt_version(), vocabulary=vocabulary,
        same_concept=cfg.same_concept, temperature=cfg.temperature, features=FEATURES,
        mean=tuple(float(v) for v in mean), scale=tuple(float(v) for v in scale),
        coef=tuple(float(v) for v in coef), intercept=intercept, found_at=found_at, site_at=site_at,
        not_found_below=not_found_below, refined_found_at=cfg.refined_found_at, reference=reference,
        data={**(data or {}), "classes": len(classes), "train_windows": len(train_w), "val_windows": len(val_w),
              "seed": cfg.seed, "scene_windows": cfg.scene_windows},
        metrics={k: round(float(v), 4) for k, v in metrics.items()},
        created=round(time.time(), 1),
    )


# --- storing and loading ----------------------------------------------------------------------------------


def home_file(home: str | os.PathLike[str] | None = None) -> Path:
    """The user's calibration file: ``$RSRAG_HOME/calibration/presence.json`` (or under ``home``)."""
    from rsrag.tools.store.location import rsrag_home

    return Path(home) if home is not None and Path(home).suffix == ".json" else (
        Path(home) if home is not None else rsrag_home()) / "calibration" / "presence.json"


def read_calibrations(path: str | os.PathLike[str]) -> dict[str, PresenceCalibration]:
    """Every calibration in a keyed JSON file (encoder id -> record); ``{}`` when the file is absent.

    Raises:
        ConfigError: the file exists but is not a calibration file of this format.
    """
    p = Path(path)
    if not p.is_file():
        return {}
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
        if raw.get("format") != FORMAT:
            raise ValueError(f"format {raw.get('format')!r}, expected {FORMAT!r}")
        return {k: PresenceCalibration.model_validate(v) for k, v in raw["encoders"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{p} is not a presence calibration file ({exc}); delete it and rerun "
                          f"`{FIT_COMMAND}`") from exc


def save_calibration(calibration: PresenceCalibration, path: str | os.PathLike[str]) -> Path:
    """Add (or replace) an encoder's calibration in a keyed JSON file, atomically."""
    p = Path(path)
    entries = read_calibrations(p)
    entries[calibration.encoder] = calibration
    payload = {"format": FORMAT, "encoders": {k: v.model_dump(mode="json") for k, v in sorted(entries.items())}}
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, p)
    return p


DISTINCT_CONCEPT = 0.2
"""How far ahead of the second nearest class a phrase must be to stand for the nearest one below the
similarity floor (:meth:`PresenceModel.related_concept`)."""


def _family_of(encoder_id: str) -> str:
    return encoder_id.split("#", 1)[0]


class PresenceModel:
    """An encoder's presence calibration, ready to score phrases against window vectors.

    Build with :func:`load_presence`. When no calibration fits the encoder (none fitted, or fitted for other
    weights or prompts), :attr:`calibrated` is False, every probability is ``None``, every finding is
    ``"uncertain"`` and :attr:`message` says which command fits one.
    """

    def __init__(self, calibration: PresenceCalibration | None, encoder: Encoder | None = None,
                 message: str | None = None) -> None:
        self.calibration = calibration
        self.encoder = encoder
        self.message = message
        self._vocab: np.ndarray | None = None
        self._coef = np.asarray(calibration.coef) if calibration else None

    @property
    def calibrated(self) -> bool:
        return self.calibration is not None

    @property
    def dim(self) -> int | None:
        """Dimension of the plain window vectors it scores (its encoder's), ``None`` without an encoder."""
        return int(self.encoder.dim) if self.encoder is not None else None

    @property
    def found_at(self) -> float | None:
        """Presence from which a target is found (``None`` when uncalibrated)."""
        return self.calibration.found_at if self.calibration else None

    @property
    def site_at(self) -> float | None:
        """Presence from which another site of a found target is found too (``None`` when uncalibrated)."""
        return self.calibration.site_at if self.calibration else None

    @property
    def refined_found_at(self) -> float | None:
        """Presence from which one refined (finer) window makes its target found (``None``: never alone)."""
        return self.calibration.refined_found_at if self.calibration else None

    def _vocabulary(self) -> np.ndarray:
        if self._vocab is None:
            if self.encoder is None or self.calibration is None:
                raise ConfigError("this presence model has no encoder bound to embed its vocabulary")
            self._vocab = _embed(self.encoder, self.calibration.vocabulary)
        return self._vocab

    def embed(self, phrases: Sequence[str]) -> np.ndarray:
        """Unit vectors of phrases, embedded as retrieval embeds them (prompt templates averaged)."""
        if self.encoder is None:
            raise ConfigError("this presence model has no encoder bound to embed phrases")
        return _embed(self.encoder, phrases)

    def related_concept(self, phrase: str, min_similarity: float, margin: float = 0.05,
                        distinct: float = DISTINCT_CONCEPT) -> str | None:
        """The labelled class this phrase most likely means, when the phrase is not that class's own name.

        A synonym ("airfields with runways", "oil tanks") competes in the presence features with the class
        phrase it stands for, so a present thing asked for by another name scores low. Searching the class
        too fixes that. The class is the vocabulary's class phrase nearest the phrase in the text space, when

        * their cosine similarity is at least ``min_similarity`` and beats the second nearest class by
          ``margin`` (an ambiguous phrase such as "tightly packed houses", as near dense as medium residential,
          is left alone), or
        * the phrase is clearly nearer that class than any other: similarity at least
          ``min_similarity - distinct`` and ahead of the second nearest by ``distinct`` ("small lakes" ->
          pond, "streams" -> river: plainly that class, though phrased unlike its name).

        ``None`` otherwise, when the phrase already is the class name, or when uncalibrated.
        """
        cal = self.calibration
        if cal is None or min_similarity > 1.0:
            return None
        n_classes = int(cal.data.get("classes", 0))
        if n_classes < 1:
            return None
        vocab = self._vocabulary()[:n_classes]
        sims = vocab @ self.embed([phrase])[0]
        order = np.argsort(-sims)
        best = float(sims[order[0]])
        second = float(sims[order[1]]) if len(order) > 1 else -1.0
        concept = cal.vocabulary[int(order[0])]
        near = best >= min_similarity and best - second >= margin
        distinct_match = best >= min_similarity - distinct and best - second >= distinct
        if not (near or distinct_match) or best >= SAME_PHRASE or names_class(phrase, concept):
            return None
        return concept

    def features(self, queries: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """Raw features (Q, N, F) of unit query vectors against window vectors."""
        cal = self.calibration
        if cal is None:
            raise ConfigError(self.message or "uncalibrated")
        return compute_features(queries, self._vocabulary(), vectors, cal.reference,
                                same_concept=cal.same_concept, temperature=cal.temperature)

    def presence(self, query: str | np.ndarray, vectors: np.ndarray) -> np.ndarray | None:
        """Presence probability of one phrase (text or unit vector) in each window: shape (N,).

        Returns ``None`` when uncalibrated (see :attr:`message`).
        """
        cal = self.calibration
        if cal is None:
            return None
        q = self.embed([query]) if isinstance(query, str) else np.atleast_2d(np.asarray(query, np.float64))
        if q.shape[0] != 1:
            raise QueryError(f"presence() takes one phrase, got {q.shape[0]} vectors; call it per phrase")
        v = np.atleast_2d(np.asarray(vectors, np.float64))
        if v.shape[1] != q.shape[1]:
            raise QueryError(f"window vectors have dimension {v.shape[1]}, the phrase {q.shape[1]}: "
                             "they come from different encoders")
        f = self.features(q, v)[0]
        z = ((f - np.asarray(cal.mean)) / np.asarray(cal.scale)) @ self._coef + cal.intercept  # type: ignore[operator]
        return _sigmoid(z)

    def presence_probability(self, query: str | np.ndarray, vector: np.ndarray) -> float | None:
        """Presence probability of a phrase in one window (``None`` when uncalibrated)."""
        p = self.presence(query, np.atleast_2d(vector))
        return None if p is None else float(p[0])

    def site_presence(self, query: str | np.ndarray, member_vectors: np.ndarray) -> float | None:
        """Presence of a phrase at a site: the highest presence of its member windows."""
        p = self.presence(query, member_vectors)
        return None if p is None or len(p) == 0 else float(p.max())

    def calibrate_sites(self, sites: Sequence[Site], query: str | np.ndarray,
                        vector_of: Callable[[object], np.ndarray | None]) -> list[Site]:
        """Sites with their ``presence`` set (the best over members whose vector is known), re-ranked by
        presence (then confidence). Uncalibrated: the sites unchanged.

        Args:
            sites: sites of one target (see :func:`rsrag.tools.sites.group_sites`).
            query: the target's phrase or unit vector.
            vector_of: the stored vector of a member :class:`~rsrag.tools.hit.Hit`, or ``None`` if unknown.
        """
        if not self.calibrated:
            return list(sites)
        q = self.embed([query]) if isinstance(query, str) else np.atleast_2d(np.asarray(query, np.float64))
        out = []
        for site in sites:
            vecs = [v for v in (vector_of(m) for m in site.members) if v is not None]
            out.append(site.with_presence(self.site_presence(q, np.stack(vecs)) if vecs else None))
        out.sort(key=lambda s: (-(s.presence if s.presence is not None else -1.0), -s.confidence, -s.score))
        return out

    def finding_for(self, presences: Sequence[float | None] | np.ndarray) -> Finding:
        """Scene-level verdict for one target from the presence of its candidate sites or windows.

        ``found`` when the best presence reaches :attr:`PresenceCalibration.found_at`; ``not_found`` when it
        is below ``not_found_below`` (or there is no candidate at all); ``uncertain`` in between, and always
        when uncalibrated or when a probability is unknown. Pass the presence of the strongest candidates
        (e.g. the best sites by score), not only those above the retrieval threshold.
        """
        cal = self.calibration
        if cal is None:
            return "uncertain"
        values = list(presences)
        if any(p is None for p in values):
            known = [float(p) for p in values if p is not None]
            return "found" if known and max(known) >= cal.found_at else "uncertain"
        if not values:
            return "not_found"
        best = max(float(p) for p in values)  # type: ignore[arg-type]
        if best >= cal.found_at:
            return "found"
        return "not_found" if best < cal.not_found_below else "uncertain"

    def site_found(self, site: Site) -> bool:
        """Whether a calibrated site is strong enough on its own to make its target ``found``."""
        return self.calibration is not None and site.presence is not None and site.presence >= self.calibration.found_at

    @property
    def lone_found_at(self) -> float | None:
        """Presence a *lone* site (:data:`LONE_SITE_WINDOWS`) must reach: the calibration's bar for a window seen
        alone, ``refined_found_at`` (else ``found_at``); ``None`` when uncalibrated."""
        cal = self.calibration
        if cal is None:
            return None
        return cal.refined_found_at if cal.refined_found_at is not None else cal.found_at

    def site_supported(self, site: Site) -> bool:
        """Whether a site has the support to be cited as found: more than :data:`LONE_SITE_WINDOWS` windows at
        ``site_at``, or presence at :attr:`lone_found_at` (always, when uncalibrated)."""
        bar = self.lone_found_at
        return bar is None or len(site.members) > LONE_SITE_WINDOWS or (site.presence or 0.0) >= bar

    def found_sites(self, sites: Sequence[Site]) -> list[Site]:
        """The found places of one target among its calibrated sites: none unless one reaches ``found_at``;
        then every site reaching ``site_at`` (a second, weaker site of a target already found), best first.
        Lone sites below :attr:`lone_found_at` count for neither (:meth:`site_supported`), so a target whose only
        strong evidence is a window or two is not found."""
        cal = self.calibration
        if cal is None:
            return []
        known = [s for s in sites if s.presence is not None and self.site_supported(s)]
        if not any(s.presence >= cal.found_at for s in known):  # type: ignore[operator]
            return []
        found = [s for s in known if s.presence >= cal.site_at]  # type: ignore[operator]
        return sorted(found, key=lambda s: (-(s.presence or 0.0), -s.confidence, -s.score))

    def window_found(self, presences: np.ndarray) -> np.ndarray:
        """Which windows (presences of one target) belong to found sites: none unless one reaches
        ``found_at``, then those reaching ``site_at``. Group the selected windows with
        :func:`rsrag.tools.sites.group_sites`."""
        p = np.asarray(presences, np.float64)
        cal = self.calibration
        if cal is None or p.size == 0 or p.max() < cal.found_at:
            return np.zeros(p.shape, bool)
        return p >= cal.site_at


LONE_SITE_WINDOWS = 2
"""A found site made of at most this many windows is *lone*, and is cited only at the presence the calibration
asks of a window seen alone (``refined_found_at``). A real object shows in several of the overlapping windows
that hold it (the indexed ones and the finer refinement windows inside them); a window or two crossing
``site_at`` on their own are mostly a background that resembles the target. Measured on the analyst
benchmark's three scene sets (BENCHMARKS.md, "Analyst answers", sixteenth session): of the sites answers cited,
the lone ones below 0.9 were 11 of 19 off-site sites and 2 of 93 on-site ones on seed 0, 27 of 44 and 5 of 105
on seed 1, 30 of 41 and 7 of 95 on seed 2."""

SAME_PHRASE = 0.97
"""Text similarity from which a phrase is taken to be the class's own name (no expansion needed)."""


def _stem(word: str) -> str:
    """A word's singular, for the plurals class names take ("factories", "churches", "bridges", "tanks")."""
    word = word.lower()
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def names_class(phrase: str, concept: str) -> bool:
    """Whether ``phrase`` contains the class name ``concept`` word for word (plurals folded): "resorts",
    "dense residential areas" and "parking lots" name their classes; "oil tanks" does not name "storage
    tanks"."""
    words = [_stem(w) for w in phrase.replace("-", " ").split()]
    name = [_stem(w) for w in concept.replace("-", " ").split()]
    return bool(name) and any(words[i:i + len(name)] == name for i in range(len(words) - len(name) + 1))

_LOADED: dict[tuple[str, str, str], PresenceModel] = {}


def load_presence(
    encoder: Encoder, *, home: str | os.PathLike[str] | None = None, bundled: str | os.PathLike[str] | None = None,
    fit_data: str | os.PathLike[str] | None = None, cache_dir: str | os.PathLike[str] | None = None,
    fit_config: FitConfig | None = None,
) -> PresenceModel:
    """The presence model for an encoder (cached per process).

    Looks up the encoder's id in the user's file (``$RSRAG_HOME/calibration/presence.json``), then in the
    bundled file beside the offline encoder's heads. With neither and ``fit_data`` given (a labelled chip
    folder), fits one now and saves it to the user's file (first use, e.g. for an open_clip encoder).
    Otherwise the model is uncalibrated, with a message naming the fit command; a calibration fitted for
    other weights of the same encoder family, or with other prompt templates, is reported as stale.
    """
    user = home_file(home)
    shipped = Path(bundled) if bundled is not None else BUNDLED_FILE
    key = (encoder.id, str(user), str(shipped))
    if key in _LOADED:
        return _LOADED[key]
    stale: list[str] = []
    found: PresenceCalibration | None = None
    for path in (user, shipped):
        entries = read_calibrations(path)
        cal = entries.get(encoder.id)
        if cal is not None and cal.prompt_version == _prompt_version():
            found = cal
            break
        if cal is not None:
            stale.append(f"{path} holds one fitted with prompts {cal.prompt_version!r}, not {_prompt_version()!r}")
        stale += [f"{path} holds one for {other} (other weights)" for other in entries
                  if _family_of(other) == _family_of(encoder.id) and other != encoder.id]
    if found is None and fit_data is not None:
        found = fit_calibration(encoder, fit_data, config=fit_config, cache_dir=cache_dir)
        save_calibration(found, user)
    if found is not None:
        model = PresenceModel(found, encoder)
    else:
        why = ("the calibration is stale: " + "; ".join(stale[:2])) if stale else "none has been fitted"
        model = PresenceModel(None, encoder, (
            f"no presence calibration for encoder {encoder.id} ({why}), so every finding is 'uncertain'; "
            f"fit one with `{FIT_COMMAND} --encoder SPEC` (DATA: a folder of class-labelled chips, "
            "e.g. aid-rsicd)"))
    _LOADED[key] = model
    return model


def clear_presence_cache() -> None:
    """Forget loaded presence models (after a refit; tests)."""
    _LOADED.clear()


#: The uncalibrated model (no encoder): every finding ``uncertain``.
UNCALIBRATED = PresenceModel(None, None, f"no presence calibration; fit one with `{FIT_COMMAND}`")
