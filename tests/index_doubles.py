"""A tiny, deterministic stand-in encoder for index and fast-path plumbing tests (no model weights).

Images are embedded by a fixed random projection of their 8 x 8 thumbnail, so similar pictures get similar
vectors. Texts naming a colour ("red", "green", ...) embed like a solid image of that colour; other texts
get a hashed random vector. Implements :class:`rsrag.tools.encoders.base.Encoder`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rsrag.tools.encoders.base import ImageLike, to_pil

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "white": (250, 250, 250),
           "black": (5, 5, 5), "yellow": (230, 220, 20)}


class TinyEncoder:
    """Random-projection encoder: ``dim`` outputs from an 8 x 8 RGB thumbnail (centred per image)."""

    image_size = 8

    def __init__(self, dim: int = 16, seed: int = 0, delay: float = 0.0) -> None:
        self.dim = dim
        self.delay = delay
        self.id = f"test-tiny-proj-{dim}-s{seed}"
        self._w = np.random.default_rng(seed).standard_normal((3 * 8 * 8, dim)).astype(np.float32)

    def preprocess(self, image: ImageLike) -> torch.Tensor:
        pil = to_pil(image).resize((8, 8), Image.BILINEAR)
        return torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()

    def encode_image_tensors(self, batch: torch.Tensor) -> np.ndarray:
        if self.delay:
            time.sleep(self.delay)
        return self._project(batch)

    def _project(self, batch: torch.Tensor) -> np.ndarray:
        x = batch.reshape(batch.shape[0], -1).numpy() - 0.5
        v = x @ self._w
        return (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-6)).astype(np.float32)

    def encode_images(self, images: Sequence[ImageLike]) -> np.ndarray:
        return self.encode_image_tensors(torch.stack([self.preprocess(i) for i in images]))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for text in texts:
            colour = next((c for name, c in COLOURS.items() if name in text.lower()), None)
            if colour is not None:
                out.append(self._project(self.preprocess(np.full((8, 8, 3), colour, dtype=np.uint8))[None])[0])
            else:
                seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
                v = np.random.default_rng(seed).standard_normal(self.dim)
                out.append((v / np.linalg.norm(v)).astype(np.float32))
        return np.stack(out)


@contextlib.contextmanager
def readonly_view(path: Path) -> Iterator[Path]:
    """A read-only view of folder ``path``: permissions for ordinary users, a read-only bind mount for root."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [path, *path.rglob("*")]}
        for p in modes:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield path
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    view = path.parent / f"{path.name}-readonly"
    view.mkdir()
    steps = [["mount", "--bind", str(path), str(view)], ["mount", "-o", "remount,bind,ro", str(view)]]
    for i, cmd in enumerate(steps):
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            if i:
                subprocess.run(["umount", str(view)], capture_output=True)
            pytest.skip("cannot make a read-only view of a folder here (running as root without mount rights)")
    try:
        yield view
    finally:
        subprocess.run(["umount", str(view)], check=True)


@contextlib.contextmanager
def small_disk(path: Path, size: str = "1m") -> Iterator[Path]:
    """A tiny tmpfs mounted at ``path`` (root only) to provoke 'no space left on device'."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root with mount rights")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)
