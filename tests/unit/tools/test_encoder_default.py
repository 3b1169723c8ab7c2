"""The bundled offline encoder: loads with no network, its towers are mapped right, it ranks real AID images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rsrag.tools.encoders import load_encoder
from rsrag.tools.captioned import class_prompts, read_chips, select_split
from rsrag.tools.encoders.lit import DEFAULT_HEADS, read_heads
from rsrag.tools.encoders.effnet_lite import SameConv2d, fold_batchnorm, prepare_for_inference, static_same_padding
from rsrag.tools.encoders.towers import IMAGE_TOWERS, build_image_trunk


def test_default_heads_ship_small() -> None:
    assert DEFAULT_HEADS.is_file()
    assert DEFAULT_HEADS.stat().st_size < 5_000_000
    cfg, tensors, meta = read_heads(DEFAULT_HEADS)
    last = sorted(k for k in tensors if k.startswith("visual.head.") and k.endswith("weight"))[-1]
    assert tensors[last].shape[0] == cfg.embed_dim
    assert "val_metrics" in meta


#: content hash of the heads shipped before issue 16 (last block only, 24.65 val mR): indexes built with them
#: carry it in their encoder id and must not be reused with the current heads
PREVIOUS_HEADS = "40b4cb48251f"


def test_default_heads_read_several_blocks_and_changed_the_encoder_id() -> None:
    from rsrag.tools.encoders.identity import fingerprint, known_encoder_id

    cfg, tensors, _ = read_heads(DEFAULT_HEADS)
    assert cfg.taps[-1] == "head" and len(cfg.taps) > 1
    assert tensors["visual.head.mlp.fc1.weight"].shape[1] == 2024  # stages 2..6 and the final block of Lite0
    ident = known_encoder_id(None)
    assert ident is not None and ident.endswith(fingerprint(DEFAULT_HEADS)) and PREVIOUS_HEADS not in ident


def test_default_heads_were_trained_with_the_default_recipe() -> None:
    """`rsrag encoder train DATA` with no options uses the bundled heads' recipe (so it can reproduce them)."""
    from rsrag.tools.encoders.lit import LitConfig
    from rsrag.tools.training.train import TrainConfig

    cfg, _, meta = read_heads(DEFAULT_HEADS)
    assert cfg == LitConfig()
    assert meta["train_config"] == repr(TrainConfig())


def test_default_heads_record_their_training_folder(shared_data: Path) -> None:
    """Evaluating the bundled encoder on its own training folder defaults to the held-out split."""
    from rsrag.tools.training.evaluate import select_for_eval, training_record

    record = training_record(None)
    assert record is not None and record.n_train == 8076 and record.val_fraction == 0.1
    chips = read_chips(shared_data / "aid-rsicd")
    chosen = select_for_eval(chips, record)
    assert chosen.split == "val" and chosen.training_folder and len(chosen.chips) == 897 and chosen.seen == 0
    assert select_for_eval(chips, record, "train").seen == 8076
    other = select_for_eval(chips[::7], record)  # a subset is another folder: evaluated whole, overlap counted
    assert other.split == "all" and len(other.chips) == len(chips[::7]) and 0 < other.seen < len(other.chips)


def test_default_encoder_loads_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the default encoder must not touch the hub")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    enc = load_encoder(None)
    assert enc is load_encoder("rsrag-lit") and enc is load_encoder("default")
    cfg, _, _ = read_heads(DEFAULT_HEADS)
    assert enc.id.startswith("rsrag-lit#") and enc.dim == cfg.embed_dim
    emb = enc.encode_texts(["an airport with many planes"])
    assert emb.shape == (1, cfg.embed_dim) and abs(float(np.linalg.norm(emb)) - 1.0) < 1e-5


def test_image_tower_key_mapping_predicts_imagenet_classes() -> None:
    """The trunk built from the EfficientNet-PyTorch checkpoint is right if its ImageNet predictions on photos are
    right (timm's data helpers only give the labels and the reference preprocessing)."""
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    from timm.data import ImageNetInfo, create_transform, resolve_data_config

    trunk = build_image_trunk(IMAGE_TOWERS["effnet-lite0"], with_classifier=True)
    transform = create_transform(**{**resolve_data_config({}, model=trunk), "mean": (0.5,) * 3, "std": (0.5,) * 3})
    info = ImageNetInfo()
    for name, expected in (("china.jpg", "palace"), ("flower.jpg", "daisy")):
        x = transform(Image.fromarray(sklearn_datasets.load_sample_image(name)))[None]
        with torch.inference_mode():
            top5 = trunk(x).softmax(-1)[0].topk(5).indices.tolist()
        labels = [info.index_to_description(i) for i in top5]
        assert any(expected in label for label in labels), (name, labels)


@pytest.mark.parametrize("side", [224, 240, 225])
def test_an_inference_trunk_gives_the_plain_trunks_predictions(side: int) -> None:
    """Folding the batch norms, padding in place and going channels-last changes nothing a user sees: same
    ImageNet logits to float32 rounding at the encoder's input size, at a size whose later stages are odd (240:
    the last stride-2 convolution sees 15 px) and at an odd size (every stride-2 convolution pads as before),
    and no batch norm left to run."""
    plain = build_image_trunk(IMAGE_TOWERS["effnet-lite0"], with_classifier=True)
    fast = prepare_for_inference(build_image_trunk(IMAGE_TOWERS["effnet-lite0"], with_classifier=True))
    x = torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.inference_mode():
        a, b = plain(x), fast(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
    assert a.argmax(-1).tolist() == b.argmax(-1).tolist()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    # every stride-2 depthwise "same" convolution is replaced (the originals stay as the odd-size fallback);
    # the stem's dense one keeps padding its 3-channel input
    dynamic = sorted(name for name, m in fast.named_modules() if isinstance(m, SameConv2d))
    assert dynamic[0] == "blocks.1.0.conv_dw.dynamic" and dynamic[-1] == "conv_stem", dynamic
    assert len(dynamic) == 5 and all(name.endswith(".dynamic") for name in dynamic[:-1]), dynamic
    assert static_same_padding(fast) == 0  # nothing left to replace
    assert fast.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    assert fold_batchnorm(fast) == 0  # nothing left to fold: a second call changes nothing


def test_default_ranks_real_aid_class_prompts(shared_data: Path) -> None:
    """On held-out AID images (validation split), the image's own class prompt ranks first among 30 classes."""
    chips = select_split(read_chips(shared_data / "aid-rsicd"), "val")
    wanted = ["Airport", "Beach", "Farmland", "Forest", "Port", "StorageTanks", "BaseballField", "Parking"]
    picked = [c for w in wanted for c in [c for c in chips if c.label == w][:2]]
    enc = load_encoder(None)
    labels = sorted({c.label for c in chips})
    class_vecs = np.stack([enc.encode_texts(class_prompts(lab)).mean(axis=0) for lab in labels])
    class_vecs /= np.linalg.norm(class_vecs, axis=1, keepdims=True)
    images = [Image.open(c.image).convert("RGB") for c in picked]
    scores = enc.encode_images(images) @ class_vecs.T
    ranks = {c.image.name: int((scores[i] > scores[i, labels.index(c.label)]).sum()) for i, c in enumerate(picked)}
    # chance is 1/30 per image; the encoder's zero-shot accuracy on the whole validation split is ~93%
    assert sum(r == 0 for r in ranks.values()) >= 10, ranks
    assert sum(r < 5 for r in ranks.values()) >= 13, ranks


def test_encoder_info_cli(capsys: pytest.CaptureFixture[str]) -> None:
    from rsrag.agent.interfaces.cli import main

    assert main(["encoder", "info"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["dim"] == read_heads(DEFAULT_HEADS)[0].embed_dim and out["id"].startswith("rsrag-lit#")
    # the bundled heads carry a hub bank: windows are stored with one more coordinate (tools/encoders/hubness.py)
    assert out["hub_bank"] == 2000 and out["index_dim"] == out["dim"] + 1
