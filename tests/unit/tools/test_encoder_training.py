"""A tiny LiT training run (seconds): features cached, loss falls, deterministic, checkpoint loads by spec."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
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
    assert fs.image.shape == (1, 12, model.visual.trunk.num_features) and fs.text.shape[1] == 384
    assert list((tmp_path / "cache").iterdir())  # cached on disk
    losses: list[float] = []
    train_heads(fs, list(range(12)), cfg, TrainConfig(epochs=30, batch_size=12, lr=1e-2, warmup_epochs=1, views=("id",), seed=1,
                                                     text_epochs=0),
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


def test_tapped_trunk_matches_the_plain_trunk_and_reads_earlier_stages() -> None:
    import torch

    from rsrag.tools.encoders.lit import TAPS, TappedTrunk
    from rsrag.tools.encoders.towers import IMAGE_TOWERS, build_image_trunk

    plain = build_image_trunk(IMAGE_TOWERS["effnet-lite0"])
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        # float32 sums in another order (channels-last): up to ~1e-5 apart on values near 2
        np.testing.assert_allclose(TappedTrunk(plain, ("head",))(x).numpy(), plain(x).numpy(), atol=5e-5)
        full = TappedTrunk(plain, TAPS)
        assert full.tap_dims() == [40, 80, 112, 192, 320, 1280] and full(x).shape == (2, 2024)
        early = TappedTrunk(plain, ("s6", "s4"))  # kept in trunk order whatever order they are given in
        assert early.taps == ("s4", "s6") and early(x).shape == (2, 112 + 320)
        np.testing.assert_allclose(early(x).numpy(), full(x)[:, 40 + 80 : 40 + 80 + 112 + 192 + 320][:, [*range(112), *range(304, 624)]].numpy(), atol=1e-5)
    with pytest.raises(Exception, match="unknown image-trunk taps"):
        TappedTrunk(plain, ("s9",))


def test_multi_view_multi_tap_training_encodes_like_its_cached_features(tmp_path: Path) -> None:
    """Heads trained on cached multi-tap features give the same image vectors through the runtime encoder."""
    from rsrag.tools.encoders.lit import save_heads
    from rsrag.tools.training.train import project

    from PIL import Image

    cfg = LitConfig(embed_dim=32, taps=("s5", "head"))
    model = build_lit_model(cfg, seed=2)
    folder = make_folder(tmp_path / "chips", CLASSES, n=4)
    chips = read_chips(folder)
    for c in chips:  # flat colours look the same in every view: give each chip a direction
        arr = np.asarray(Image.open(c.image).convert("RGB")).copy()
        arr[:, : arr.shape[1] // 3] //= 3
        Image.fromarray(arr).save(c.image)
    fs = compute_features(model, cfg, chips, tmp_path / "cache", views=("rot90", "hflip"))
    assert fs.views == ("id", "rot90", "hflip") and fs.image.shape == (3, 12, 192 + 1280)
    assert not np.allclose(fs.image[0], fs.image[1])  # a rotated chip is another view
    # one cache per view holds every tap: a head reading other taps reuses it
    n_dirs = len(list((tmp_path / "cache").iterdir()))
    compute_features(build_lit_model(LitConfig(embed_dim=32, taps=("s3",))), LitConfig(embed_dim=32, taps=("s3",)), chips,
                     tmp_path / "cache", views=("rot90",))
    assert len(list((tmp_path / "cache").iterdir())) == n_dirs
    losses: list[float] = []
    tcfg = TrainConfig(epochs=15, batch_size=12, lr=1e-2, warmup_epochs=1, views=("id", "rot90", "hflip"),
                       image_dropout=0.1, text_dropout=0.1, class_weight=0.5, seed=2)
    train_heads(fs, list(range(12)), cfg, tcfg, model, progress=lambda e, loss: losses.append(loss))
    assert losses[-1] < losses[0] * 0.8
    path = save_heads(tmp_path / "tapped.safetensors", model, cfg)
    enc = load_encoder(f"rsrag-lit:{path}")
    runtime = enc.encode_images([Image.open(c.image).convert("RGB") for c in chips])
    cached, _ = project(model, fs.image[0], None)
    assert runtime.shape == (12, 32)
    cos = np.sum(runtime * cached, axis=1)
    assert cos.min() > 0.999, cos  # float16 heads and cache, otherwise the same computation


def test_training_options_are_validated_and_old_configs_read() -> None:
    from rsrag.tools.errors import DataError

    with pytest.raises(DataError, match="view_mode"):
        TrainConfig(view_mode="max")
    with pytest.raises(DataError, match="image_dropout"):
        TrainConfig(image_dropout=1.0)
    with pytest.raises(DataError, match="text_epochs"):
        TrainConfig(text_epochs=-1)
    old = '{"context_length": 64, "embed_dim": 256, "image_proj": "mlp", "image_size": 0, "image_tower": "effnet-lite0", "text_proj": "mlp"}'
    assert LitConfig.from_json(old).taps == ("head",)  # heads written before taps read the last block only
    cfg = LitConfig(taps=("s4", "head"))
    assert LitConfig.from_json(cfg.to_json()) == cfg


def test_soup_averages_heads_trained_from_one_init_with_successive_seeds(data: Path, tmp_path: Path) -> None:
    import torch

    from rsrag.tools.encoders.lit import head_state

    cfg = LitConfig(embed_dim=16)
    chips = read_chips(data)
    model = build_lit_model(cfg, seed=5)
    fs = compute_features(model, cfg, chips, tmp_path / "cache")
    init = {k: v.clone() for k, v in head_state(model).items()}
    base = dict(epochs=3, batch_size=6, lr=1e-2, warmup_epochs=1, views=("id",), text_epochs=0)
    members = []
    for seed in (7, 8):
        model.load_state_dict(init, strict=False)
        train_heads(fs, list(range(12)), cfg, TrainConfig(**base, seed=seed), model)
        members.append({k: v.clone() for k, v in head_state(model).items()})
    assert not torch.equal(members[0]["visual.head.mlp.fc1.weight"], members[1]["visual.head.mlp.fc1.weight"])
    model.load_state_dict(init, strict=False)
    epochs: list[int] = []
    train_heads(fs, list(range(12)), cfg, TrainConfig(**base, seed=7, soup=2), model, progress=lambda e, _: epochs.append(e))
    assert epochs == [1, 2, 3, 4, 5, 6]
    for key, value in head_state(model).items():
        torch.testing.assert_close(value, (members[0][key] + members[1][key]) / 2)


def test_feature_cache_follows_image_bytes_not_names_or_mtimes(data: Path, tmp_path: Path) -> None:
    """A copied folder with new mtimes reuses the cached features; an image whose bytes changed is recomputed."""
    import os
    import shutil

    cfg = LitConfig(embed_dim=32)
    model = build_lit_model(cfg, seed=1)
    cache = tmp_path / "cache"
    first = compute_features(model, cfg, read_chips(data), cache)
    n_dirs = len(list(cache.iterdir()))
    copy = shutil.copytree(data, tmp_path / "copy")
    for p in Path(copy).rglob("*"):
        os.utime(p, (1_000_000_000, 1_000_000_000))
    again = compute_features(model, cfg, read_chips(copy), cache)
    assert len(list(cache.iterdir())) == n_dirs  # nothing recomputed
    np.testing.assert_array_equal(again.image, first.image)
    chips = read_chips(copy)
    with open(chips[0].image, "ab") as fh:  # the same picture, other bytes: a different file for the cache
        fh.write(b"\0")
    compute_features(model, cfg, chips, cache)
    assert len(list(cache.iterdir())) == n_dirs + 1


def test_text_epochs_train_the_text_head_alone_after_both(data: Path, tmp_path: Path) -> None:
    from rsrag.tools.encoders.lit import head_state

    cfg = LitConfig(embed_dim=32)
    chips = read_chips(data)
    base = build_lit_model(cfg, seed=2)
    fs = compute_features(base, cfg, chips, tmp_path / "cache")
    plain = TrainConfig(epochs=4, batch_size=12, lr=1e-2, warmup_epochs=1, views=("id",), seed=2, text_epochs=0)
    train_heads(fs, list(range(12)), cfg, plain, base)
    longer = build_lit_model(cfg, seed=2)
    epochs: list[int] = []
    train_heads(fs, list(range(12)), cfg, TrainConfig(**{**plain.__dict__, "text_epochs": 3}), longer,
                progress=lambda e, loss: epochs.append(e))
    a, b = head_state(base), head_state(longer)
    visual = [k for k in a if k.startswith("visual.")]
    text = [k for k in a if k.startswith("text.")]
    assert visual and text and epochs == [1, 2, 3, 4, 5, 6, 7]  # progress counts on through the second phase
    for key in visual:  # what windows are stored as is the image head of the first phase, exactly
        assert torch.equal(a[key], b[key]), key
    assert any(not torch.equal(a[key], b[key]) for key in text)


def test_heads_with_text_epochs_keep_the_first_text_head_for_presence(data: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Search ranks with the longer-trained text head; presence verdicts (calibrated on the first phase's text
    head) embed with the first phase's, which the file keeps as ``presence.proj.*``."""
    from rsrag.agent.interfaces.cli import main
    from rsrag.tools.calibration import _embed
    from rsrag.tools.encoders import lazy_encoder
    from rsrag.tools.encoders.lit_text import LitTextEncoder

    common = ["--dim", "32", "--epochs", "3", "--batch-size", "8", "--seed", "4", "--val-fraction", "0.25",
              "--cache-dir", str(tmp_path / "cache"), "--json"]
    plain, longer = tmp_path / "plain.safetensors", tmp_path / "longer.safetensors"
    assert main(["encoder", "train", str(data), "--out", str(plain), "--text-epochs", "0", *common]) == 0
    assert main(["encoder", "train", str(data), "--out", str(longer), "--text-epochs", "4", *common]) == 0
    capsys.readouterr()
    a, b = load_file(str(plain)), load_file(str(longer))
    assert not any(k.startswith("presence.") for k in a)
    for key in [k for k in a if k.startswith("text.proj.")]:
        torch.testing.assert_close(b[key.replace("text.proj.", "presence.proj.")], a[key], rtol=0, atol=0)
        assert not torch.equal(b[key], a[key])
    for key in [k for k in a if k.startswith("visual.")]:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)

    texts = ["a pond", "green forest"]
    first, second = LitTextEncoder(plain), LitTextEncoder(longer)
    np.testing.assert_allclose(second.encode_texts(texts, head="presence"), first.encode_texts(texts), atol=1e-6)
    assert not np.allclose(second.encode_texts(texts), first.encode_texts(texts), atol=1e-3)
    np.testing.assert_allclose(first.encode_texts(texts, head="presence"), first.encode_texts(texts))  # one head: both

    lazy = lazy_encoder(f"rsrag-lit:{longer}")
    loaded = load_encoder(f"rsrag-lit:{longer}")  # the presence tensors are no model weights: it loads
    for enc in (lazy, loaded):
        np.testing.assert_allclose(enc.encode_presence_texts(texts), first.encode_texts(texts), atol=1e-5)
    np.testing.assert_allclose(loaded.encode_texts(texts), second.encode_texts(texts), atol=1e-4)
    on_gpu = lazy_encoder(f"rsrag-lit:{longer}", device="cuda")  # not loaded: presence texts need no model
    np.testing.assert_allclose(on_gpu.encode_presence_texts(texts), first.encode_texts(texts), atol=1e-5)
    assert not on_gpu.loaded
    np.testing.assert_allclose(_embed(lazy, ["a pond"]), _embed(lazy_encoder(f"rsrag-lit:{plain}"), ["a pond"]), atol=1e-5)
