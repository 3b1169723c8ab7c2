"""Features of the frozen LiT towers, computed once and cached on disk.

Image features are the image trunk's pooled outputs (before the projection head), text features the text
tower's mean-pooled output (before its head), so training the heads on them is exactly training the model.
The image cache holds every tap of :data:`~rsrag.tools.encoders.lit.TAPS` (all stage outputs and the final
block, one pass), and a config's taps are sliced from it, so heads reading different blocks train from one
cache. The cache is sharded (``shard_*.npy``), so a killed extraction resumes where it stopped; the key
covers the tower, input size, view, package version and the images' bytes, in order (a SHA-1 per file: a
copied or re-written folder with the same images finds its cache; hashing 9,000 chips takes about a second,
their features half an hour).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rsrag.tools.encoders.lit import TAPS, LitConfig, TappedTrunk
from rsrag.tools.encoders.towers import TEXT_PACKAGE, package_version

T = Image.Transpose
#: the eight symmetries of the square (aerial images have no "up"): identity, flips, rotations, transposes
VIEWS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "id": lambda im: im,
    "hflip": lambda im: im.transpose(T.FLIP_LEFT_RIGHT),
    "vflip": lambda im: im.transpose(T.FLIP_TOP_BOTTOM),
    "rot90": lambda im: im.transpose(T.ROTATE_90),
    "rot180": lambda im: im.transpose(T.ROTATE_180),
    "rot270": lambda im: im.transpose(T.ROTATE_270),
    "transpose": lambda im: im.transpose(T.TRANSPOSE),
    "transverse": lambda im: im.transpose(T.TRANSVERSE),
}
SHARD = 512


def lit_transform(cfg: LitConfig) -> Callable[[Image.Image], torch.Tensor]:
    """The eval transform of a LiT encoder: squash-resize (keeps the whole chip), bicubic, tower normalisation
    (open_clip's ``image_transform(resize_mode="squash")``, without importing open_clip)."""
    from rsrag.tools.encoders.lit_model import lit_image_transform

    return lit_image_transform(cfg.size, cfg.tower.mean, cfg.tower.std)


def _key(*parts: object) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _files_key(paths: Sequence[Path]) -> str:
    """One digest of the images' bytes in order (content, not names or mtimes: see the module docstring)."""
    from rsrag.tools.captioned import file_sha1

    h = hashlib.sha1()
    for p in paths:
        h.update(bytes.fromhex(file_sha1(p)))
    return h.hexdigest()


def _sharded(cache: Path, n: int, compute: Callable[[int, int], np.ndarray], progress: Callable[[int], None] | None) -> np.ndarray:
    cache.mkdir(parents=True, exist_ok=True)
    parts = []
    for start in range(0, n, SHARD):
        stop = min(n, start + SHARD)
        shard = cache / f"shard_{start:08d}.npy"
        if shard.is_file():
            arr = np.load(shard)
        else:
            arr = compute(start, stop).astype(np.float16)
            tmp = shard.with_suffix(".tmp.npy")
            np.save(tmp, arr)
            tmp.replace(shard)
        parts.append(arr)
        if progress is not None:
            progress(stop - start)
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 0), np.float32)


def tap_columns(trunk: TappedTrunk, taps: Sequence[str]) -> np.ndarray:
    """Column indices of ``taps`` inside features holding every tap of :data:`TAPS` (in ``TAPS`` order)."""
    full = TappedTrunk(trunk.net, TAPS)
    starts = np.cumsum([0, *full.tap_dims()])
    spans = {t: range(starts[i], starts[i + 1]) for i, t in enumerate(full.taps)}
    return np.asarray([c for t in TAPS if t in taps for c in spans[t]], dtype=np.int64)


def image_features(
    model: torch.nn.Module,
    cfg: LitConfig,
    paths: Sequence[Path],
    cache_dir: Path,
    view: str = "id",
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Pooled image-trunk features (n, F) of ``paths`` seen through ``view`` at ``cfg.taps``, cached under ``cache_dir``.

    The cache holds all taps (one trunk pass); the columns of ``cfg.taps`` are returned, in trunk order, which
    is what the model's :class:`~rsrag.tools.encoders.lit.TappedTrunk` feeds its head.
    """
    key = _key("img", cfg.tower.timm_name, cfg.size, view, package_version(cfg.tower.package), TAPS, _files_key(paths))
    transform, flip = lit_transform(cfg), VIEWS[view]
    tapped = model.visual.trunk
    trunk = TappedTrunk(tapped.net, TAPS).eval()
    cols = tap_columns(tapped, cfg.taps)

    def load(p: Path) -> torch.Tensor:
        with Image.open(p) as im:
            return transform(flip(im.convert("RGB")))

    def compute(start: int, stop: int) -> np.ndarray:
        out = []
        with ThreadPoolExecutor(max_workers=1) as pool, torch.inference_mode():
            batches = [paths[i : i + batch_size] for i in range(start, stop, batch_size)]
            pending = pool.map(lambda b: torch.stack([load(p) for p in b]), batches)
            for x in pending:
                out.append(trunk(x).float().numpy())  # TappedTrunk lays its input out channels-last
        return np.concatenate(out)

    feats = _sharded(Path(cache_dir) / f"img-{key}", len(paths), compute, progress)
    return feats[:, cols] if len(feats) else feats


@torch.inference_mode()
def pooled_text(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The text tower's pooled output before its projection head (mirrors open_clip's HFTextEncoder)."""
    text = model.text
    mask = (tokens != text.config.pad_token_id).long()
    out = text.transformer(input_ids=tokens, attention_mask=mask)
    return text.pooler(out, mask)


def text_features(
    model: torch.nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    texts: Sequence[str],
    cache_dir: Path,
    context_length: int,
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Mean-pooled text-tower features (n, 384) of ``texts``, cached under ``cache_dir``."""
    key = _key("txt", package_version(TEXT_PACKAGE), context_length, hashlib.sha1("\n".join(texts).encode()).hexdigest())

    def compute(start: int, stop: int) -> np.ndarray:
        # batches of similar length waste little on padding; rows are put back in input order
        order = sorted(range(start, stop), key=lambda i: len(texts[i]))
        out = np.zeros((stop - start, 0), np.float32)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            feats = pooled_text(model, tokenizer([texts[j] for j in idx])).float().numpy()
            if out.shape[1] == 0:
                out = np.zeros((stop - start, feats.shape[1]), np.float32)
            out[np.asarray(idx) - start] = feats
        return out

    return _sharded(Path(cache_dir) / f"txt-{key}", len(texts), compute, progress)
