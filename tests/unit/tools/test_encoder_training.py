"""A tiny LiT training run (seconds): features cached, loss falls, deterministic, checkpoint loads by spec."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from rsrag.tools.encoders import load_encoder
from rsrag.tools.captioned import read_chips
from rsrag.tools.encoders.lit import LitConfig, build_lit_model
from rsrag.tools.training.train import TrainConfig, compute_features, train_heads
from rsrag.tools.errors import CheckpointMismatchError

from tests.captioned import make_folder


CLASSES = {"Forest": (20, 110, 30), "Beach": (230, 210, 160), "Pond": (30, 60, 160)}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("chips"), CLASSES, n=4)


def test_library_training_reduces_loss(data: Path, tmp_path: Path) -> None:
    cfg = LitConfig(embed_dim=32)
    model = build_lit_model(cfg, seed=1)
    chips = read_chips(data)
    fs = compute_features(model, cfg, chips, tmp_path / "cache")
    assert fs.image.shape == (1, 12, 1280) and fs.text.shape[1] == 384
    assert list((tmp_path / "cache").iterdir())  # cached on disk
    losses: list[float] = []
    train_heads(fs, list(range(12)), cfg, TrainConfig(epochs=30, batch_size=12, lr=1e-2, warmup_epochs=1, seed=1),
                model, progress=lambda e, loss: losses.append(loss))
    assert len(losses) == 30 and losses[-1] < losses[0] * 0.8


def test_cli_train_is_deterministic_and_loadable(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rsrag.agent.interfaces.cli import main

    outs = []
    for run in range(2):
        out = tmp_path / f"heads{run}.safetensors"
        args = ["encoder", "train", str(data), "--out", str(out), "--dim", "32", "--epochs", "5", "--batch-size", "8",
                "--seed", "3", "--val-fraction", "0.25", "--cache-dir", str(tmp_path / "cache"), "--json"]
        assert main(args) == 0
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert result["spec"] == f"rsrag-lit:{out}" and "mR" in result and "zero_shot_acc" in result
        outs.append(load_file(str(out)))
    assert outs[0].keys() == outs[1].keys()
    for key in outs[0]:
        np.testing.assert_array_equal(outs[0][key].numpy(), outs[1][key].numpy())
    assert (tmp_path / "heads0.safetensors").stat().st_size < 1_000_000

    enc = load_encoder(f"rsrag-lit:{tmp_path / 'heads0.safetensors'}")
    assert enc.dim == 32 and enc.id.startswith("rsrag-lit:file#effnet-lite0")
    emb = enc.encode_texts(["a forest", "a beach"])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_heads_that_do_not_fit(data: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file
    import torch

    cfg = LitConfig(embed_dim=32)
    bad = tmp_path / "bad.safetensors"
    save_file({"visual.head.proj.weight": torch.zeros(16, 1280), "text.proj.weight": torch.zeros(16, 384),
               "logit_scale": torch.zeros(())}, str(bad), metadata={"format": "rsrag-lit/1", "config": cfg.to_json()})
    with pytest.raises(CheckpointMismatchError, match="do not fit"):
        load_encoder(f"rsrag-lit:{bad}")
    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(other))
    with pytest.raises(CheckpointMismatchError, match="not an rsrag LiT"):
        load_encoder(str(other))
