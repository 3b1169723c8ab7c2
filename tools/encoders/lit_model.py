"""The bundled LiT encoder's network in plain torch: no open_clip, no transformers model classes.

Same module names and state-dict keys as the open_clip ``CustomTextCLIP`` it replaces (``visual.trunk``,
``visual.head.*``, ``text.transformer.*``, ``text.proj.*``, ``logit_scale``), so heads trained with either
load into the other, and ``tests/unit/tools/test_lit_model.py`` checks that both give the same vectors.

* the text tower is MiniLM-L6 (a 6-layer BERT) written out here and loaded from its safetensors file;
* each tower is built on first use: a text query never builds the image tower (nor imports timm), and
  indexing never builds the text tower. Built towers take the device and dtype of the model's heads.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rsrag.tools.encoders.lit_text import BertConfig

__all__ = ["BertConfig", "LitModel", "MiniLM", "Mlp", "lit_image_transform"]


@dataclass
class EncoderOutput:
    """What a BERT forward pass returns (the field the heads and the feature cache read)."""

    last_hidden_state: torch.Tensor


class _Embeddings(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)[None] + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class _SelfAttention(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.heads = c.num_attention_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(n, t, self.heads, d // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)), attn_mask=mask)
        return out.transpose(1, 2).reshape(n, t, d)


class _DenseNorm(nn.Module):
    """``dense`` then ``LayerNorm`` of the residual sum (BERT's output blocks)."""

    def __init__(self, d_in: int, d_out: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _Attention(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.self = _SelfAttention(c)
        self.output = _DenseNorm(c.hidden_size, c.hidden_size, c.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class _Intermediate(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class _Layer(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.attention = _Attention(c)
        self.intermediate = _Intermediate(c)
        self.output = _DenseNorm(c.intermediate_size, c.hidden_size, c.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class _Encoder(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(c) for _ in range(c.num_hidden_layers))


class MiniLM(nn.Module):
    """A BERT encoder (no pooler) with Hugging Face's parameter names, so its checkpoint loads as is.

    Args:
        config: the encoder's shape.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(config)

    @classmethod
    def from_folder(cls, folder: Path) -> MiniLM:
        """The encoder in ``folder`` (``config.json`` + ``model.safetensors``), in eval mode."""
        from safetensors.torch import load_file

        model = cls(BertConfig.read(folder))
        state = {k: v for k, v in load_file(str(folder / "model.safetensors")).items()
                 if not k.startswith("pooler.") and k != "embeddings.position_ids"}
        model.load_state_dict(state, strict=True)
        return model.eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> EncoderOutput:
        if attention_mask is None:
            attention_mask = (input_ids != self.config.pad_token_id).long()
        x = self.embeddings(input_ids)
        # additive mask over the keys: 0 where attended, the dtype's minimum on padding
        keep = attention_mask[:, None, None, :].to(x.dtype)
        mask = (1.0 - keep) * torch.finfo(x.dtype).min
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return EncoderOutput(last_hidden_state=x)


class Mlp(nn.Module):
    """Linear -> GELU -> Linear, with timm's ``Mlp`` parameter names (``fc1``, ``fc2``)."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, *, bias_out: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(d_hidden, d_out, bias=bias_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _image_head(kind: str, d_in: int, d_out: int) -> nn.Sequential:
    """The image head open_clip's ``TimmModel`` builds for ``kind`` (``mlp`` or ``linear``)."""
    if kind == "mlp":
        return nn.Sequential(OrderedDict(mlp=Mlp(d_in, 2 * d_out, d_out)))
    return nn.Sequential(OrderedDict(drop=nn.Dropout(0.0), proj=nn.Linear(d_in, d_out, bias=False)))


def _text_head(kind: str, d_in: int, d_out: int) -> nn.Module:
    """The text head open_clip's ``HFTextEncoder`` builds for ``kind`` (``mlp`` or ``linear``)."""
    if kind == "mlp":
        hidden = (d_in + d_out) // 2
        return nn.Sequential(nn.Linear(d_in, hidden, bias=False), nn.GELU(), nn.Linear(hidden, d_out, bias=False))
    return nn.Linear(d_in, d_out, bias=False)


class _LazyTower(nn.Module):
    """A tower whose frozen backbone (``trunk`` or ``transformer``) is built on first use (thread-safe)."""

    _backbone = ""

    def __init__(self, build: Callable[[], nn.Module]) -> None:
        super().__init__()
        self._build = build
        self._build_lock = threading.RLock()

    def __getattr__(self, name: str) -> Any:
        if name == type(self)._backbone:
            modules = self.__dict__["_modules"]
            if name not in modules:
                with self.__dict__["_build_lock"]:
                    if name not in modules:
                        self._attach(name)
            return modules[name]
        return super().__getattr__(name)

    def _attach(self, name: str) -> None:
        backbone = self.__dict__["_build"]()
        reference = next(iter(p for n, p in self.named_parameters() if not n.startswith(name)), None)
        if reference is not None:  # follow the heads: device, dtype (the image trunk keeps its channels-last layout)
            backbone = backbone.to(device=reference.device, dtype=reference.dtype)
        for param in backbone.parameters():
            param.requires_grad = False
        backbone.train(self.training)
        self.__dict__["_modules"][name] = backbone  # not add_module: its hasattr() would build again

    @property
    def built(self) -> bool:
        """Whether the backbone exists yet."""
        return type(self)._backbone in self.__dict__["_modules"]


class LitImageTower(_LazyTower):
    """The image trunk (built on first use) and the projection head."""

    _backbone = "trunk"

    def __init__(self, build_trunk: Callable[[], nn.Module], head: nn.Module) -> None:
        super().__init__(build_trunk)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


class LitTextTower(_LazyTower):
    """The text transformer (built on first use), mean pooling over the non-padding tokens, the head."""

    _backbone = "transformer"

    def __init__(self, build_transformer: Callable[[], nn.Module], proj: nn.Module, config: BertConfig) -> None:
        super().__init__(build_transformer)
        self.proj = proj
        self.config = config  # as open_clip's HFTextEncoder: ``config.pad_token_id`` marks padding

    @staticmethod
    def pooler(out: EncoderOutput, mask: torch.Tensor) -> torch.Tensor:
        """Mean of the token states over the non-padding tokens (open_clip's ``MeanPooler``)."""
        return (out.last_hidden_state * mask.unsqueeze(-1)).sum(dim=1) / mask.sum(-1, keepdim=True)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = (tokens != self.config.pad_token_id).long()
        return self.proj(self.pooler(self.transformer(input_ids=tokens, attention_mask=mask), mask))


class LitModel(nn.Module):
    """The LiT encoder: frozen towers built on first use, trainable heads and temperature.

    Args:
        build_trunk: makes the image trunk (pooled features of width ``image_features``).
        image_features: width of the trunk's output.
        text_folder: the text tower's folder (``config.json``, ``model.safetensors``).
        embed_dim: the shared space.
        image_proj / text_proj: head types, ``mlp`` or ``linear``.
    """

    def __init__(self, build_trunk: Callable[[], nn.Module], image_features: int, text_folder: Path, embed_dim: int,
                 image_proj: str, text_proj: str) -> None:
        super().__init__()
        text_config = BertConfig.read(text_folder)
        self.visual = LitImageTower(build_trunk, _image_head(image_proj, image_features, embed_dim))
        self.text = LitTextTower(lambda: MiniLM.from_folder(text_folder),
                                 _text_head(text_proj, text_config.hidden_size, embed_dim), text_config)
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.visual(image)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.text(text)
        return F.normalize(features, dim=-1) if normalize else features


def lit_image_transform(size: int, mean: tuple[float, float, float], std: tuple[float, float, float]) -> Callable[[Any], torch.Tensor]:
    """PIL image -> normalised CHW float tensor: squash-resize to ``size`` x ``size`` (bicubic, the whole chip
    kept), RGB, scaled to [0, 1], normalised by ``mean``/``std`` (what open_clip's ``image_transform`` with
    ``resize_mode="squash"`` does, without importing it)."""
    import numpy as np
    from PIL import Image

    mean_a = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    std_a = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)

    def transform(image: Any) -> torch.Tensor:
        resized = image.resize((size, size), Image.Resampling.BICUBIC)
        if resized.mode != "RGB":
            resized = resized.convert("RGB")
        # numpy, not torch: on the main thread torch splits each of these small element-wise ops over its
        # intra-op threads, which on two busy cores cost 4-70 ms a window instead of 2-3 ms (encode_images
        # in evaluation, the knowledge base, calibration; BENCHMARKS.md, "Pyramid index", follow-up); the
        # same float32 operations, bit for bit
        x = np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32)
        x /= np.float32(255)
        x -= mean_a
        x /= std_a
        return torch.from_numpy(x)

    return transform
