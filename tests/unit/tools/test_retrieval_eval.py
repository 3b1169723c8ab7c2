"""Retrieval metrics against hand-computed rankings, the fixed split, and the `rsrag eval retrieval` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rsrag.tools.captioned import Chip, class_phrase, read_chips, select_split, split_chips
from rsrag.tools.training.evaluate import (
    image_to_text_ranks,
    recalls,
    retrieval_metrics,
    text_to_image_ranks,
    zero_shot_accuracy,
)
from rsrag.tools.errors import DataError
from tests.captioned import make_folder

# 3 images, 4 texts: image 0 owns texts 0 and 1, image 1 owns text 2, image 2 owns text 3
SIM = np.array(
    [
        [0.1, 0.5, 0.9, 0.2],
        [0.3, 0.2, 0.8, 0.1],
        [0.7, 0.6, 0.5, 0.4],
    ]
)
OWNER = np.array([0, 0, 1, 2])


def test_ranks_by_hand() -> None:
    # image 0: best own caption scores 0.5, one caption (0.9) above it -> rank 1
    # image 1: own caption 0.8 is its best -> rank 0; image 2: own 0.4, three above -> rank 3
    assert image_to_text_ranks(SIM, OWNER).tolist() == [1, 0, 3]
    # text 0: its image scores 0.1, images 1 (0.3) and 2 (0.7) above -> 2; text 1: 0.5 < 0.6 -> 1;
    # text 2: 0.8 < 0.9 -> 1; text 3: 0.4 is the top -> 0
    assert text_to_image_ranks(SIM, OWNER).tolist() == [2, 1, 1, 0]


def test_recalls_and_mean_by_hand() -> None:
    assert recalls(np.array([1, 0, 3]), ks=(1, 2, 10)) == pytest.approx({1: 100 / 3, 2: 200 / 3, 10: 100.0})
    m = retrieval_metrics(SIM, OWNER, ks=(1, 2))
    assert m["i2t_R@1"] == pytest.approx(100 / 3)
    assert m["i2t_R@2"] == pytest.approx(200 / 3)
    assert m["t2i_R@1"] == pytest.approx(25.0)
    assert m["t2i_R@2"] == pytest.approx(75.0)
    assert m["mR"] == pytest.approx((100 / 3 + 200 / 3 + 25 + 75) / 4)
    default = retrieval_metrics(SIM, OWNER)
    assert set(default) == {"i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "mR"}
    assert default["mR"] == pytest.approx((100 / 3 + 100 + 100 + 25 + 100 + 100) / 6)


def test_perfect_and_missing_captions() -> None:
    eye = np.eye(4)
    assert retrieval_metrics(eye, np.arange(4))["mR"] == pytest.approx(100.0)
    with pytest.raises(DataError):
        image_to_text_ranks(SIM, np.array([0, 0, 1, 1]))  # image 2 has no caption


def test_zero_shot_accuracy_by_hand() -> None:
    classes = {"Forest": np.array([1.0, 0.0]), "Port": np.array([0.0, 1.0])}
    images = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    assert zero_shot_accuracy(images, ["Forest", "Port", "Port", "Forest"], classes) == pytest.approx(75.0)


def test_class_phrase() -> None:
    assert class_phrase("DenseResidential") == "dense residential"
    assert class_phrase("storage_tanks") == "storage tanks"
    assert class_phrase("BareLand") == "bare land"


def _chips(n_per_class: dict[str, int]) -> list[Chip]:
    return [Chip(Path(f"/x/{c}/{c.lower()}_{i}.jpg"), c, (f"{c} {i}",)) for c, n in n_per_class.items() for i in range(n)]


def test_split_is_fixed_stratified_and_disjoint() -> None:
    chips = _chips({"Airport": 360, "Beach": 400, "Pond": 25})
    train, val = split_chips(chips)
    assert len(train) + len(val) == len(chips)
    assert not {c.image for c in train} & {c.image for c in val}
    per_class = {c: sum(v.label == c for v in val) for c in ("Airport", "Beach", "Pond")}
    assert per_class == {"Airport": 36, "Beach": 40, "Pond": 2}
    shuffled = list(reversed(chips))
    assert {c.image for c in split_chips(shuffled)[1]} == {c.image for c in val}
    assert select_split(chips, "all") == chips
    with pytest.raises(DataError):
        select_split(chips, "test")


def test_read_chips_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="captions.jsonl"):
        read_chips(tmp_path)
    (tmp_path / "captions.jsonl").write_text('{"image": "missing.png", "class": "A", "captions": ["x"]}\n')
    with pytest.raises(DataError, match="not found"):
        read_chips(tmp_path)
    (tmp_path / "captions.jsonl").write_text("{not json\n")
    with pytest.raises(DataError, match="malformed"):
        read_chips(tmp_path)


def test_eval_cli_json(tmp_path: Path, tiny_encoder: object, capsys: pytest.CaptureFixture[str]) -> None:
    from rsrag.agent.interfaces.cli import main

    folder = make_folder(tmp_path / "data", {"Forest": (20, 120, 30), "Beach": (220, 200, 150)})
    code = main(["eval", "retrieval", str(folder), "--encoder", "rsrag-tiny-test:random", "--split", "all", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("mR", "i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "zero_shot_acc"):
        assert 0.0 <= out[key] <= 100.0
    assert out["n_images"] == 6 and out["n_texts"] == 12 and out["n_classes"] == 2
    assert out["encoder"] == tiny_encoder.id  # type: ignore[attr-defined]


def test_eval_cli_table_and_errors(tmp_path: Path, tiny_encoder: object, capsys: pytest.CaptureFixture[str]) -> None:
    from rsrag.agent.interfaces.cli import main

    folder = make_folder(tmp_path / "data", {"Forest": (20, 120, 30), "Beach": (220, 200, 150)})
    assert main(["eval", "retrieval", str(folder), "--encoder", "rsrag-tiny-test:random", "--split", "all"]) == 0
    assert "mR" in capsys.readouterr().out
    assert main(["eval", "retrieval", str(tmp_path), "--encoder", "rsrag-tiny-test:random"]) == 2
    assert "captions.jsonl" in capsys.readouterr().out
    assert main(["eval", "retrieval", str(folder), "--encoder", "no-such-encoder"]) == 2
