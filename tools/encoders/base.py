"""The encoder interface every retrieval component codes against."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

ImageLike = np.ndarray | Image.Image


@runtime_checkable
class Encoder(Protocol):
    """A CLIP-family image/text encoder with normalised outputs.

    Attributes:
        id: stable identifier including the weights' identity (a hash); part of index keys.
        dim: embedding dimension.
        image_size: side in pixels of the model input.

    An encoder may also have a ``hub`` attribute (a :class:`~rsrag.tools.encoders.hubness.HubCorrection`):
    window indexes then store its image vectors hub-corrected, one coordinate longer (see that module).
    And an ``encode_presence_texts`` method, shaped as :meth:`encode_texts`: the text vectors presence verdicts
    compare windows with, when they come from another text head than search (a LiT heads file trained with
    ``--text-epochs``, :data:`rsrag.tools.encoders.lit.PRESENCE_PREFIX`); without it presence uses ``encode_texts``
    (:func:`encode_presence_texts`).
    """

    @property
    def id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def image_size(self) -> int: ...

    def preprocess(self, image: ImageLike) -> torch.Tensor:
        """Turn an HxWx3 uint8 array or a PIL image into a CHW float tensor (CPU; thread-safe)."""
        ...

    def encode_image_tensors(self, batch: torch.Tensor) -> np.ndarray:
        """Encode preprocessed images (N, 3, S, S) into an (N, dim) float32 array of unit rows."""
        ...

    def encode_images(self, images: Sequence[ImageLike]) -> np.ndarray:
        """Preprocess and encode images into an (N, dim) float32 array of unit rows."""
        ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Encode texts into an (N, dim) float32 array of unit rows."""
        ...


def to_pil(image: ImageLike) -> Image.Image:
    """Convert an HxWx3 (or HxW) uint8 array or a PIL image to an RGB PIL image.

    Raises:
        ValueError: the array has an unsupported shape or dtype.
    """
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image array, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an HxWx3 image array, got shape {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    return Image.fromarray(np.ascontiguousarray(arr), mode="RGB")


def encode_presence_texts(encoder: Encoder, texts: Sequence[str]) -> np.ndarray:
    """``texts`` as presence verdicts embed them with ``encoder``: its ``encode_presence_texts`` when it has one,
    else its ``encode_texts`` (see :class:`Encoder`)."""
    encode = getattr(encoder, "encode_presence_texts", None)
    return encode(texts) if encode is not None else encoder.encode_texts(texts)
