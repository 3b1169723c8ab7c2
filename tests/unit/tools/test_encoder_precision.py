"""``encoder.precision``: float32 image forward passes on CPU by default, bfloat16 on request (the same vectors to
within bfloat16's rounding, texts unchanged, a warning where the CPU would emulate it), and a clear error for a
precision that is none."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rsrag.tools.encoders import load_encoder, runtime
from rsrag.tools.encoders.loader import lazy_encoder
from rsrag.tools.errors import EncoderError
from tests.tiny_encoder import register_tiny_model_config


@pytest.mark.parametrize(("native", "device", "expected"), [
    (True, "cpu", torch.float32),  # the calibration was fitted on float32 vectors: bfloat16 only on request
    (False, "cpu", torch.float32),
    (True, "cuda", torch.float16),
    (False, "cuda:1", torch.float16),
    (True, "mps", torch.float32),
])
def test_auto_follows_the_hardware(monkeypatch, native, device, expected):
    monkeypatch.setattr(runtime, "native_bf16", lambda: native)
    assert runtime.image_dtype("auto", device) == expected


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_an_explicit_precision_is_kept(monkeypatch, device):
    monkeypatch.setattr(runtime, "native_bf16", lambda: True)
    assert runtime.image_dtype("float32", device) == torch.float32
    assert runtime.image_dtype("bfloat16", device) == torch.bfloat16


def test_bfloat16_on_a_cpu_that_would_emulate_it_warns(monkeypatch):
    monkeypatch.setattr(runtime, "native_bf16", lambda: False)
    with pytest.warns(RuntimeWarning, match="emulated there and image forward passes will be slower"):
        assert runtime.image_dtype("bfloat16", "cpu") == torch.bfloat16


def test_an_unknown_precision_names_the_choices():
    with pytest.raises(EncoderError, match="use one of auto, float32, bfloat16"):
        runtime.image_dtype("half", "cpu")
    with pytest.raises(EncoderError, match="unknown encoder precision"):
        load_encoder(f"{register_tiny_model_config()}:random", precision="fp8")


def test_bfloat16_windows_match_float32_and_texts_are_unchanged(monkeypatch):
    monkeypatch.setattr(runtime, "native_bf16", lambda: True)  # no warning on any CPU: bfloat16 runs either way
    spec = f"{register_tiny_model_config()}:random"
    assert load_encoder(spec).precision == "float32"  # the default
    full = load_encoder(spec, precision="float32")
    half = load_encoder(spec, precision="bfloat16")
    assert (full.precision, half.precision) == ("float32", "bfloat16")
    assert full is not half and "precision=bfloat16" in repr(half)
    assert load_encoder(spec, precision="bfloat16", batch_size=3).model is half.model  # one model per precision
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (48, 48, 3), dtype=np.uint8) for _ in range(6)]
    a, b = full.encode_images(images), half.encode_images(images)
    assert a.dtype == b.dtype == np.float32
    assert not np.array_equal(a, b)  # bfloat16 really ran
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert float((a * b).sum(axis=1).min()) > 0.98
    texts = ["storage tanks", "an airport"]
    assert np.array_equal(full.encode_texts(texts), half.encode_texts(texts))


def test_lazy_encoder_loads_the_precision_it_was_given():
    spec = f"{register_tiny_model_config()}:random"
    enc = lazy_encoder(spec, precision="float32")
    assert enc.load().precision == "float32"


def test_the_setting_reaches_the_workspace_encoder(tmp_path):
    from rsrag.agent.settings import load_settings
    from rsrag.agent.workspace import Workspace
    from rsrag.tools.errors import ConfigError

    settings = load_settings(overrides={"home": str(tmp_path), "encoder.precision": "Float32"})
    assert settings.encoder.precision == "float32"
    assert Workspace(settings).encoder.precision == "float32"
    with pytest.raises(ConfigError, match="unknown precision 'fp16'; use one of auto, float32, bfloat16"):
        load_settings(overrides={"home": str(tmp_path), "encoder.precision": "fp16"})
