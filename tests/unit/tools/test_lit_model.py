"""The bundled encoder's plain-torch network gives the vectors of the open_clip model it replaces, builds
each tower only when used, and imports neither open_clip nor transformers' models on the way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from rsrag.tools.encoders.features import lit_transform
from rsrag.tools.encoders.identity import DEFAULT_HEADS
from rsrag.tools.encoders.lit import LitTokenizer, build_lit_model, load_heads_into, open_clip_config, read_heads
from rsrag.tools.encoders.towers import build_image_trunk, text_tower_dir

TEXTS = ["storage tanks", "a dense residential area with many houses and roads", "airport", "  two   spaces "]


@pytest.fixture(scope="module")
def models() -> tuple[torch.nn.Module, torch.nn.Module, object]:
    open_clip = pytest.importorskip("open_clip")
    cfg, tensors, _ = read_heads(DEFAULT_HEADS)
    ours = build_lit_model(cfg)
    load_heads_into(ours, tensors, str(DEFAULT_HEADS))
    ref = open_clip.CustomTextCLIP(**open_clip_config(cfg))
    ref.visual.trunk.load_state_dict(build_image_trunk(cfg.tower).state_dict(), strict=False)
    if cfg.taps != ("head",):  # the head reads several trunk stages: wrap open_clip's trunk the same way
        from collections import OrderedDict

        from timm.layers import Mlp

        from rsrag.tools.encoders.lit import TappedTrunk, tap_width

        ref.visual.trunk = TappedTrunk(ref.visual.trunk, cfg.taps)
        head = Mlp(tap_width(cfg), 2 * cfg.embed_dim, cfg.embed_dim, drop=(0.0, 0.0), bias=(True, False))  # open_clip's "mlp"
        ref.visual.head = torch.nn.Sequential(OrderedDict(mlp=head))
    load_heads_into(ref, tensors, str(DEFAULT_HEADS))
    return ours, ref.eval(), cfg


def test_same_vectors_as_the_open_clip_model(models: tuple[torch.nn.Module, torch.nn.Module, object]) -> None:
    import open_clip
    from transformers import AutoTokenizer

    ours, ref, cfg = models
    tokens = LitTokenizer(text_tower_dir(), cfg.context_length)(TEXTS)
    hf = AutoTokenizer.from_pretrained(str(text_tower_dir()))
    expected = hf([" ".join(t.split()) for t in TEXTS], return_tensors="pt", padding="longest", truncation=True,
                  max_length=cfg.context_length).input_ids
    assert torch.equal(tokens, expected)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 260, 3), dtype=np.uint8))
    x = lit_transform(cfg)(image)[None]
    x_ref = open_clip.image_transform(cfg.size, is_train=False, mean=cfg.tower.mean, std=cfg.tower.std,
                                      resize_mode="squash", interpolation="bicubic")(image)[None]
    assert torch.equal(x, x_ref)
    with torch.inference_mode():
        assert torch.allclose(ours.encode_text(tokens), ref.encode_text(tokens), atol=1e-5)
        assert torch.allclose(ours.encode_image(x), ref.encode_image(x_ref), atol=1e-5)
    def keys(model: torch.nn.Module) -> set[str]:  # the heads and the text tower (ours wraps the trunk as .net)
        return {k for k in model.state_dict() if not k.startswith("visual.trunk.") and not k.endswith("position_ids")}

    assert keys(ours) == keys(ref)


def test_towers_are_built_on_first_use_without_heavy_imports() -> None:
    code = textwrap.dedent("""
        import json, sys, torch
        from rsrag.tools.encoders import load_encoder
        enc = load_encoder(None)
        vec = enc.encode_texts(["storage tanks"])
        model = enc.model
        print(json.dumps({"dim": int(vec.shape[1]), "image_built": model.visual.built, "text_built": model.text.built,
                          "heavy": [m for m in ("open_clip", "timm", "torchvision", "transformers") if m in sys.modules]}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {"dim": 256, "image_built": False, "text_built": True, "heavy": []}
