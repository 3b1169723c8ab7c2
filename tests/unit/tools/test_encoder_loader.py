"""The encoder loader: spec parsing, offline errors, unknown specs, mismatched checkpoints, caching."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rsrag.tools.encoders import Encoder, load_encoder, parse_spec
from tests.tiny_encoder import register_tiny_model_config
from rsrag.tools.errors import CheckpointMismatchError, RsragError, UnknownEncoderError, WeightsUnavailableError


@pytest.fixture()
def empty_hf_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend nothing is in the local Hugging Face cache and the hub is offline."""
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("must not try to download when offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)


@pytest.mark.parametrize(
    ("spec", "kind", "arch", "weights"),
    [
        (None, "lit", None, None),
        ("", "lit", None, None),
        ("default", "lit", None, None),
        ("rsrag-lit:random", "lit", None, "random"),
        ("rsrag-lit:/tmp/h.safetensors", "lit", None, "/tmp/h.safetensors"),
        ("/tmp/heads.safetensors", "lit", None, "/tmp/heads.safetensors"),
        ("ViT-B-32:openai", "openclip", "ViT-B-32", "openai"),
        ("ViT-B-32:random", "openclip", "ViT-B-32", "random"),
        ("ViT-B-32:/ckpt/model.safetensors", "openclip", "ViT-B-32", "/ckpt/model.safetensors"),
        ("remoteclip:ViT-L-14", "hf-file", "ViT-L-14", None),
        ("georsclip:ViT-L-14-336", "hf-file", "ViT-L-14-336-quickgelu", None),
        ("georsclip:ViT-H-14", "hf-file", "ViT-H-14", None),
        ("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "hf-hub", None, None),
    ],
)
def test_parse_spec(spec: str | None, kind: str, arch: str | None, weights: str | None) -> None:
    parsed = parse_spec(spec)
    assert (parsed.kind, parsed.arch, parsed.weights) == (kind, arch, weights)


def test_remote_sensing_checkpoint_file_names() -> None:
    assert parse_spec("remoteclip:RN50").filenames == ("RemoteCLIP-RN50.pt",)
    assert parse_spec("remoteclip:RN50").repo == "chendelong/RemoteCLIP"
    geo = parse_spec("georsclip:ViT-B-32")
    assert geo.repo == "Zilun/GeoRSCLIP" and "RS5M_ViT-B-32.pt" in [Path(f).name for f in geo.filenames]


@pytest.mark.parametrize("spec", ["no-such-model", "ViT-B-32", "ViT-B-32:no-such-tag", "remoteclip:ViT-H-14", "hf-hub:justone"])
def test_unknown_spec(spec: str) -> None:
    with pytest.raises(UnknownEncoderError) as err:
        load_encoder(spec)
    assert spec.split(":")[0] in str(err.value)
    assert isinstance(err.value, (RsragError, LookupError))


@pytest.mark.parametrize(
    ("spec", "expected_file"),
    [
        ("georsclip:ViT-B-32", "RS5M_ViT-B-32.pt"),
        ("remoteclip:ViT-B-32", "RemoteCLIP-ViT-B-32.pt"),
        ("ViT-B-32:laion2b_s34b_b79k", "open_clip_pytorch_model.bin"),
        ("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "open_clip_config.json"),
    ],
)
def test_offline_error_names_spec_and_files(empty_hf_cache: None, spec: str, expected_file: str) -> None:
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as err:
        load_encoder(spec)
    assert time.perf_counter() - start < 2.0
    message = str(err.value)
    assert spec in message and expected_file in message
    assert "hf download" in message  # how to supply them
    assert isinstance(err.value, FileNotFoundError)


def test_missing_local_checkpoint() -> None:
    register_tiny_model_config()
    with pytest.raises((WeightsUnavailableError, UnknownEncoderError)):
        load_encoder("rsrag-tiny-test:/nonexistent/dir/model.pt")
    with pytest.raises(WeightsUnavailableError, match="nowhere.safetensors"):
        load_encoder("rsrag-lit:/nonexistent/nowhere.safetensors")


def test_wrong_architecture_checkpoint(tmp_path: Path) -> None:
    name = register_tiny_model_config()
    bad = tmp_path / "other.pt"
    torch.save({"visual.conv1.weight": torch.zeros(3, 3, 3, 3), "logit_scale": torch.zeros(())}, bad)
    with pytest.raises(CheckpointMismatchError, match="other.pt|does not fit"):
        load_encoder(f"{name}:{bad}")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointMismatchError):
        load_encoder(f"{name}:{garbage}")


def test_local_checkpoint_round_trip(tmp_path: Path, tiny_encoder: Encoder) -> None:
    path = tmp_path / "tiny.pt"
    torch.save(tiny_encoder.model.state_dict(), path)
    enc = load_encoder(f"rsrag-tiny-test:{path}")
    assert enc.id.startswith("rsrag-tiny-test:file#")
    img = np.full((40, 40, 3), 120, np.uint8)
    np.testing.assert_allclose(enc.encode_images([img]), tiny_encoder.encode_images([img]), atol=1e-5)


def test_tiny_encoder_interface(tiny_encoder: Encoder) -> None:
    assert isinstance(tiny_encoder, Encoder)
    assert (tiny_encoder.dim, tiny_encoder.image_size) == (32, 32)
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)
    x = tiny_encoder.preprocess(arr)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    torch.testing.assert_close(x, tiny_encoder.preprocess(Image.fromarray(arr)))
    emb = tiny_encoder.encode_images([arr, Image.fromarray(arr), arr[:, :, 0]])
    assert emb.shape == (3, 32) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(emb[0], emb[1], atol=1e-6)
    batch = torch.stack([tiny_encoder.preprocess(arr)] * 20)
    np.testing.assert_allclose(tiny_encoder.encode_image_tensors(batch)[19], emb[0], atol=1e-5)
    txt = tiny_encoder.encode_texts(["a harbour", "an airport", "farmland"])
    assert txt.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-5)
    assert tiny_encoder.encode_texts([]).shape == (0, 32)
    assert tiny_encoder.encode_images([]).shape == (0, 32)


def test_cached_per_spec_and_device(tiny_encoder: Encoder) -> None:
    name = register_tiny_model_config()
    again = load_encoder(f"{name}:random", device="cpu", batch_size=8)
    assert again.model is tiny_encoder.model and again.batch_size == 8  # built once per (spec, device)
    other = load_encoder(f"{name}:random", device="cpu", batch_size=3)
    assert other.batch_size == 3 and other.model is tiny_encoder.model
    assert other.id == tiny_encoder.id
