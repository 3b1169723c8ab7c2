"""EfficientNet-Lite in plain torch, built from its ImageNet checkpoint, and made fast for frozen inference.

The offline image towers (:mod:`rsrag.tools.encoders.towers`) are EfficientNet-Lite checkpoints in the
EfficientNet-PyTorch naming. This module builds the network they describe without timm: importing timm costs
about 2 s and 200 MiB of resident memory on every encoder load (it pulls in torchvision's ops and, through
them, ``torch._dynamo``), which was most of what a first answer spent before its first window
(BENCHMARKS.md, "Pyramid index"). The modules keep the names of timm's ``tf_efficientnet_lite*`` definition
(``conv_stem``, ``bn1``, ``blocks.<stage>.<index>``, ``conv_head``, ``bn2``, ``classifier``), so state dicts
move between the two, and ``tests/unit/tools/test_effnet_lite.py`` checks that both compute the same numbers.

The architecture is read from the checkpoint: channels, kernel sizes and which blocks expand come from the
weight shapes, a block starts a new stage where its output width changes, and the stages' strides are the
EfficientNet family's (:data:`STAGE_STRIDES`). Every Lite variant has the same seven stages; they differ in
widths and depths only. The TensorFlow conventions of the checkpoints hold throughout: "same" padding
(asymmetric at stride 2), batch-norm epsilon 1e-3, ReLU6, no squeeze-excitation, inputs scaled to [-1, 1].

For inference, :func:`prepare_for_inference` folds each batch norm into the convolution before it, pads the
stride-2 depthwise convolutions inside the convolution (:func:`static_same_padding`) and lays the weights out
channels-last, which is what oneDNN's CPU convolutions run fastest on.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BN_EPS",
    "STAGE_STRIDES",
    "BatchNormAct",
    "DepthwiseSeparable",
    "EfficientNetLite",
    "InvertedResidual",
    "SameConv2d",
    "StaticSameConv2d",
    "fold_batchnorm",
    "from_effnet_pytorch",
    "pads_in_place",
    "prepare_for_inference",
    "static_same_padding",
]

#: Stride of the first block of each of the seven stages (the other blocks of a stage keep the resolution).
STAGE_STRIDES: tuple[int, ...] = (1, 2, 2, 2, 1, 2, 1)
#: Batch-norm epsilon of the TensorFlow checkpoints.
BN_EPS = 1e-3


class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow's "same" padding at stride > 1: ``ceil(n / stride)`` outputs per side,
    the odd pixel of padding after, not before. The padding depends on the input size, so it is applied to a
    copy of the input at every call (:class:`StaticSameConv2d` avoids the copy for inference)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in ((x.shape[-1], self.kernel_size[1], self.stride[1]), (x.shape[-2], self.kernel_size[0], self.stride[0])):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class StaticSameConv2d(nn.Module):
    """A stride-2 "same" convolution that pads inside the convolution instead of copying its input.

    On an even input side ``n`` a stride-2 convolution with an odd ``k x k`` kernel pads ``(k - 2) // 2``
    before and ``k // 2`` after; a ``(k + 1) x (k + 1)`` kernel whose first row and column are zero, padded
    ``(k - 1) // 2`` on both sides, reads the same pixels with the same weights and has the same ``n / 2``
    outputs. Odd input sides go through the original module (kept as :attr:`dynamic`).
    """

    weight: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, conv: SameConv2d) -> None:
        super().__init__()
        k = conv.kernel_size[0]
        weight = conv.weight.detach()
        wider = weight.new_zeros(weight.shape[0], weight.shape[1], k + 1, k + 1)
        wider[:, :, 1:, 1:] = weight  # a leading row and column of zeros shifts the taps by one pixel
        self.register_buffer("weight", wider)
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone())
        self.pad, self.groups = (k - 1) // 2, conv.groups
        self.dynamic = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            return self.dynamic(x)
        return F.conv2d(x, self.weight, self.bias, 2, self.pad, 1, self.groups)


def _conv(in_chs: int, out_chs: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """A bias-free convolution with "same" padding: static and symmetric at stride 1, :class:`SameConv2d` above."""
    if stride == 1:
        return nn.Conv2d(in_chs, out_chs, kernel, 1, (kernel - 1) // 2, groups=groups, bias=False)
    return SameConv2d(in_chs, out_chs, kernel, stride, 0, groups=groups, bias=False)


class BatchNormAct(nn.BatchNorm2d):
    """A batch norm followed by ReLU6 (or by nothing: ``act=False``), with a plain batch norm's state dict.

    The ReLU6 works in place on the fresh tensor before it (the batch norm's output, or the convolution's once
    the norm is folded away): no new activation tensor per layer, the same numbers. On two CPU cores that made
    the prepared trunk 1.17x faster (92.3 -> 79.2 ms per batch of 8 at 224 px; BENCHMARKS.md, "Encoder")."""

    def __init__(self, channels: int, *, act: bool = True) -> None:
        super().__init__(channels, eps=BN_EPS)
        self.act: nn.Module = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


class DepthwiseSeparable(nn.Module):
    """Depthwise ``k x k`` convolution, ReLU6, pointwise projection (no activation); a residual when shapes allow."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv_dw = _conv(in_chs, in_chs, kernel, stride, groups=in_chs)
        self.bn1 = BatchNormAct(in_chs)
        self.conv_pw = _conv(in_chs, out_chs, 1)
        self.bn2 = BatchNormAct(out_chs, act=False)
        self.has_skip = stride == 1 and in_chs == out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv_pw(self.bn1(self.conv_dw(x))))
        return y + x if self.has_skip else y


class InvertedResidual(nn.Module):
    """Pointwise expansion, depthwise ``k x k`` convolution (both ReLU6), pointwise projection; a residual when
    shapes allow."""

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv_pw = _conv(in_chs, mid_chs, 1)
        self.bn1 = BatchNormAct(mid_chs)
        self.conv_dw = _conv(mid_chs, mid_chs, kernel, stride, groups=mid_chs)
        self.bn2 = BatchNormAct(mid_chs)
        self.conv_pwl = _conv(mid_chs, out_chs, 1)
        self.bn3 = BatchNormAct(out_chs, act=False)
        self.has_skip = stride == 1 and in_chs == out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn3(self.conv_pwl(self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))))
        return y + x if self.has_skip else y


#: A block's description: (expanded width or None for a depthwise-separable block, input width, output width,
#: depthwise kernel size).
BlockShape = tuple[int | None, int, int, int]


class EfficientNetLite(nn.Module):
    """An EfficientNet-Lite trunk: stem, seven stages of blocks, 1x1 head convolution, average pooling and
    (optionally) the ImageNet classifier.

    Args:
        stem: output width of the 3x3 stride-2 stem.
        stages: the blocks of each stage (:data:`BlockShape`), seven stages.
        num_features: width of the head convolution (the pooled feature).
        num_classes: classifier outputs; 0 for none (the forward pass then returns the pooled feature).
    """

    def __init__(self, stem: int, stages: list[list[BlockShape]], num_features: int, num_classes: int = 1000) -> None:
        super().__init__()
        if len(stages) != len(STAGE_STRIDES):
            raise ValueError(f"an EfficientNet-Lite has {len(STAGE_STRIDES)} stages, got {len(stages)}")
        self.conv_stem = _conv(3, stem, 3, 2)
        self.bn1 = BatchNormAct(stem)
        built = []
        for stride, shapes in zip(STAGE_STRIDES, stages, strict=True):
            blocks: list[nn.Module] = []
            for j, (mid, in_chs, out_chs, kernel) in enumerate(shapes):
                s = stride if j == 0 else 1
                blocks.append(DepthwiseSeparable(in_chs, out_chs, kernel, s) if mid is None
                              else InvertedResidual(in_chs, mid, out_chs, kernel, s))
            built.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*built)
        self.conv_head = _conv(stages[-1][-1][2], num_features, 1)
        self.bn2 = BatchNormAct(num_features)
        self.num_features = num_features
        self.classifier: nn.Module = nn.Linear(num_features, num_classes) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


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


def _block_shapes(state: dict[str, torch.Tensor]) -> list[list[BlockShape]]:
    """The stages of the network an EfficientNet-PyTorch checkpoint describes, read from its weight shapes."""
    count = 1 + max((int(k.split(".")[1]) for k in state if k.startswith("_blocks.")), default=-1)
    stages: list[list[BlockShape]] = []
    for i in range(count):
        dw, proj = state[f"_blocks.{i}._depthwise_conv.weight"], state[f"_blocks.{i}._project_conv.weight"]
        expand = state.get(f"_blocks.{i}._expand_conv.weight")
        shape: BlockShape = (None if expand is None else int(expand.shape[0]),
                             int(dw.shape[0] if expand is None else expand.shape[1]), int(proj.shape[0]), int(dw.shape[-1]))
        if not stages or stages[-1][-1][2] != shape[2]:  # a new output width starts a new stage
            stages.append([])
        stages[-1].append(shape)
    return stages


def from_effnet_pytorch(state: dict[str, torch.Tensor], *, with_classifier: bool = True) -> EfficientNetLite:
    """Build the EfficientNet-Lite an EfficientNet-PyTorch checkpoint describes and load its weights (eval mode).

    EfficientNet-PyTorch numbers its blocks flat (``_blocks.0`` .. ``_blocks.15`` for Lite0); here they are
    nested per stage (``blocks.<stage>.<index>``). A block without ``_expand_conv`` is depthwise-separable.

    Args:
        state: the checkpoint's state dict.
        with_classifier: keep the 1000-class ImageNet classifier; otherwise the model returns pooled features.

    Raises:
        ValueError: the checkpoint is not an EfficientNet-Lite (missing keys, another number of stages, or
            weights that do not fit the network its shapes describe).
    """
    try:
        stages = _block_shapes(state)
        classes = int(state["_fc.weight"].shape[0]) if with_classifier and "_fc.weight" in state else 0
        model = EfficientNetLite(int(state["_conv_stem.weight"].shape[0]), stages, int(state["_conv_head.weight"].shape[0]),
                                 classes)
        blocks = [(f"blocks.{s}.{j}", _DS_BLOCK if mid is None else _IR_BLOCK)
                  for s, stage in enumerate(stages) for j, (mid, *_) in enumerate(stage)]
        renamed: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            parts = key.split(".")
            if parts[0] == "_blocks":
                target, table = blocks[int(parts[1])]
                renamed[".".join([target, table[parts[2]], *parts[3:]])] = value
            elif parts[0] != "_fc" or classes:  # the ImageNet classifier only when it is kept
                renamed[".".join([_STEM_HEAD[parts[0]], *parts[1:]])] = value
        model.load_state_dict(renamed, strict=True)
    except (KeyError, RuntimeError, IndexError) as exc:
        raise ValueError(f"not an EfficientNet-Lite checkpoint in the EfficientNet-PyTorch naming: {exc}") from exc
    return model.eval()


#: (convolution, batch norm) attribute pairs by module class: each batch norm follows its convolution directly.
_CONV_BN: dict[type[nn.Module], tuple[tuple[str, str], ...]] = {
    EfficientNetLite: (("conv_stem", "bn1"), ("conv_head", "bn2")),
    DepthwiseSeparable: (("conv_dw", "bn1"), ("conv_pw", "bn2")),
    InvertedResidual: (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")),
}


def fold_batchnorm(trunk: nn.Module) -> int:
    """Fold every batch norm of an :class:`EfficientNetLite` into the convolution before it, in place.

    Each convolution's weight is scaled per output channel by ``gamma / sqrt(var + eps)`` and given the bias
    ``beta - mean * gamma / sqrt(var + eps)``; the batch norm is replaced by its activation. Only valid for
    inference with frozen statistics (the trunk is frozen everywhere in rsrag).

    Returns:
        How many batch norms were folded (0 on a second call).
    """
    folded = 0
    with torch.no_grad():
        for module in list(trunk.modules()):
            for conv_name, norm_name in _CONV_BN.get(type(module), ()):
                conv, norm = getattr(module, conv_name), getattr(module, norm_name)
                if not isinstance(norm, BatchNormAct):  # folded already
                    continue
                assert norm.running_var is not None and norm.running_mean is not None
                scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
                bias = norm.bias - norm.running_mean * scale
                if conv.bias is not None:
                    bias = bias + conv.bias * scale
                conv.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
                conv.bias = nn.Parameter(bias, requires_grad=False)
                setattr(module, norm_name, norm.act)
                folded += 1
    return folded


def pads_in_place(module: nn.Module) -> bool:
    """Whether :func:`static_same_padding` replaces ``module``: a :class:`SameConv2d` that is depthwise, stride 2,
    undilated, with an odd square kernel."""
    if not isinstance(module, SameConv2d):
        return False
    k = module.kernel_size
    return (module.stride == (2, 2) and module.dilation == (1, 1) and k[0] == k[1] and k[0] % 2 == 1
            and module.groups == module.in_channels > 1)


def static_same_padding(trunk: nn.Module) -> int:
    """Replace the trunk's stride-2 depthwise "same" convolutions (:func:`pads_in_place`) by
    :class:`StaticSameConv2d`, in place; the outputs are the same numbers.

    :class:`SameConv2d` pads its input at every call with ``F.pad``: a copy of the whole expanded activation
    that also comes out in the default memory layout, so the depthwise convolution after it runs off oneDNN's
    channels-last path. On two CPU cores, for a batch of 8 at 224 px, the first one (96 channels at 112 px)
    took 4.9-5.6 ms against 1.6-1.7 ms padded in place, the whole trunk 1.26x (BENCHMARKS.md, "Encoder"). The
    stem (3 input channels) is left as it is: its copy is small and a wider dense kernel costs more than it
    saves.

    Returns:
        How many convolutions were replaced (0 on a second call).
    """
    replaced = 0
    for parent in list(trunk.modules()):
        if isinstance(parent, StaticSameConv2d):  # its original is the odd-size fallback
            continue
        for name, child in list(parent.named_children()):
            if pads_in_place(child):
                setattr(parent, name, StaticSameConv2d(child))  # type: ignore[arg-type]
                replaced += 1
    return replaced


def prepare_for_inference(trunk: nn.Module) -> nn.Module:
    """A frozen trunk made fast for inference, in place: batch norms folded (:func:`fold_batchnorm`), stride-2
    convolutions padded in place (:func:`static_same_padding`), weights channels-last, gradients off, eval
    mode. Its inputs should be channels-last too (any layout works).

    The vectors are the plain trunk's to float32 rounding (relative difference about 1e-6); the forward passes
    run 1.3-1.46x as many windows per second on two CPU cores from folding and the layout, 1.26x more from the
    padding (BENCHMARKS.md, "Encoder").
    """
    fold_batchnorm(trunk)
    static_same_padding(trunk)
    trunk.to(memory_format=torch.channels_last)
    for param in trunk.parameters():
        param.requires_grad = False
    return trunk.eval()
