"""An :class:`~rsrag.tools.encoders.base.Encoder` over any open_clip model."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from rsrag.tools.encoders.base import ImageLike, to_pil
from rsrag.tools.encoders.hubness import HubCorrection
from rsrag.tools.errors import EncoderError
from rsrag.tools.encoders.runtime import image_dtype
from rsrag.tools.encoders.spec import DEFAULT_BATCH_SIZE, DEFAULT_PRECISION


class OpenClipEncoder:
    """Wraps an open_clip model, its image transform and tokenizer behind the encoder interface.

    The model is put in eval mode; every forward pass runs under ``torch.inference_mode`` and returns unit
    vectors. ``precision`` picks the dtype of image forward passes (:func:`rsrag.tools.encoders.runtime.image_dtype`):
    on CUDA and other accelerators the whole model is cast to it, with channels-last memory; on CPU the weights
    stay float32 and a bfloat16 precision runs image forward passes under CPU autocast, so texts are still encoded
    in float32 (:func:`rsrag.tools.encoders.loader.load_encoder` sets the CPU runtime up before building the
    model: :mod:`rsrag.tools.encoders.runtime`).

    Args:
        model: an open_clip ``CLIP`` / ``CustomTextCLIP``.
        transform: PIL image -> CHW float tensor (open_clip's eval transform).
        tokenizer: list of texts -> token tensor.
        encoder_id: stable id including the weights' identity.
        image_size: model input side in pixels.
        device: torch device string.
        batch_size: images or texts per forward pass.
        dim: embedding dimension when known from the config (otherwise probed with one forward pass).
        hub: the hub correction window indexes apply to its image vectors
            (:mod:`rsrag.tools.encoders.hubness`; ``None``: windows are stored as encoded).
        precision: one of :data:`rsrag.tools.encoders.spec.PRECISIONS`; the resolved dtype's name is kept as
            :attr:`precision` (``"float32"``, ``"bfloat16"``, ``"float16"``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        transform: Callable[[Any], torch.Tensor],
        tokenizer: Callable[[list[str]], torch.Tensor],
        *,
        encoder_id: str,
        image_size: int,
        device: str = "cpu",
        batch_size: int = DEFAULT_BATCH_SIZE,
        dim: int | None = None,
        hub: HubCorrection | None = None,
        presence_texts: Callable[[Sequence[str]], np.ndarray] | None = None,
        precision: str = DEFAULT_PRECISION,
    ) -> None:
        if batch_size < 1:
            raise EncoderError(f"batch_size must be >= 1, got {batch_size}")
        self.id = encoder_id
        self.image_size = int(image_size)
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        dtype = image_dtype(precision, str(self.device))
        self.precision = str(dtype).removeprefix("torch.")
        self._cpu = self.device.type == "cpu"
        self._dtype = torch.float32 if self._cpu else dtype
        self._autocast = dtype if self._cpu and dtype != torch.float32 else None
        model = model.eval().to(self.device)
        if not self._cpu:
            model = model.to(dtype).to(memory_format=torch.channels_last)
        self.model = model
        self._transform = transform
        self._tokenizer = tokenizer
        self._lock = threading.Lock()
        self.dim = int(dim) if dim else int(self._probe_dim())
        self.hub = hub
        self._presence_texts = presence_texts

    def _probe_dim(self) -> int:
        proj = getattr(self.model, "text_projection", None)
        if isinstance(proj, torch.Tensor):
            return proj.shape[-1]
        with self._lock, torch.inference_mode():
            x = torch.zeros(1, 3, self.image_size, self.image_size, device=self.device, dtype=self._dtype)
            return self.model.encode_image(x).shape[-1]

    def with_batch_size(self, batch_size: int) -> OpenClipEncoder:
        """This encoder, or a view of it sharing the model (and its lock) with another batch size."""
        if batch_size == self.batch_size:
            return self
        if batch_size < 1:
            raise EncoderError(f"batch_size must be >= 1, got {batch_size}")
        view = copy.copy(self)
        view.batch_size = int(batch_size)
        return view

    def __repr__(self) -> str:
        return (f"OpenClipEncoder(id={self.id!r}, dim={self.dim}, image_size={self.image_size}, device={self.device}, "
                f"precision={self.precision})")

    def preprocess(self, image: ImageLike) -> torch.Tensor:
        """HxWx3 uint8 array or PIL image -> CHW float32 tensor on CPU (thread-safe, no model access)."""
        return self._transform(to_pil(image))

    def _finish(self, feats: torch.Tensor) -> np.ndarray:
        feats = feats.float()
        feats = feats / feats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return feats.cpu().numpy().astype(np.float32, copy=False)

    def encode_image_tensors(self, batch: torch.Tensor) -> np.ndarray:
        """Encode an (N, 3, S, S) batch of preprocessed images; returns (N, dim) float32 unit rows."""
        if batch.ndim != 4:
            raise EncoderError(f"expected an (N, 3, H, W) tensor, got shape {tuple(batch.shape)}")
        if batch.shape[0] == 0:
            return np.zeros((0, self.dim), np.float32)
        out = []
        with self._lock, torch.inference_mode():
            for start in range(0, batch.shape[0], self.batch_size):
                chunk = batch[start : start + self.batch_size].to(self.device, self._dtype, non_blocking=True)
                # channels-last input: 1.9x images/s for the CNN tower of the offline encoder on 2 CPU cores,
                # neutral for ViTs (measured; see BENCHMARKS.md, Encoder)
                chunk = chunk.contiguous(memory_format=torch.channels_last)
                if self._autocast is not None:
                    with torch.autocast("cpu", dtype=self._autocast):
                        feats = self.model.encode_image(chunk)
                else:
                    feats = self.model.encode_image(chunk)
                out.append(self._finish(feats))
        return np.concatenate(out)

    def encode_images(self, images: Sequence[ImageLike]) -> np.ndarray:
        """Preprocess and encode images; returns (N, dim) float32 unit rows."""
        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = torch.stack([self.preprocess(im) for im in images[start : start + self.batch_size]])
            out.append(self.encode_image_tensors(chunk))
        return np.concatenate(out)

    def encode_presence_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts as presence verdicts embed them (a LiT heads file's presence text head, else :meth:`encode_texts`)."""
        return self._presence_texts(texts) if self._presence_texts is not None else self.encode_texts(texts)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Encode texts; returns (N, dim) float32 unit rows."""
        if isinstance(texts, str):
            raise EncoderError("encode_texts takes a sequence of strings, not one string")
        if len(texts) == 0:
            return np.zeros((0, self.dim), np.float32)
        out = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                tokens = self._tokenizer(list(texts[start : start + self.batch_size])).to(self.device)
                out.append(self._finish(self.model.encode_text(tokens)))
        return np.concatenate(out)
