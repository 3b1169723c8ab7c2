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
    err = capsys.readouterr().err
    assert "captions.jsonl" in err and len(err.strip().splitlines()) == 1  # one line on stderr, no traceback
    assert main(["eval", "retrieval", str(folder), "--encoder", "no-such-encoder"]) == 2


def test_kfold_by_images_is_stratified_and_covers_every_chip() -> None:
    from rsrag.tools.captioned import kfold

    chips = _chips({"Airport": 40, "Beach": 30, "Pond": 7})
    folds = kfold(chips, 5, seed=3)
    flat = [i for f in folds for i in f]
    assert sorted(flat) == list(range(len(chips)))  # disjoint and complete
    for f in folds:
        assert sum(chips[i].label == "Airport" for i in f) == 8 and sum(chips[i].label == "Beach" for i in f) == 6
    assert kfold(chips, 5, seed=3) == folds and kfold(chips, 5, seed=4) != folds
    with pytest.raises(DataError):
        kfold(chips, 1)
    with pytest.raises(DataError):
        kfold(chips, 3, by="classes")


def test_kfold_by_templates_holds_out_every_caption_it_tests() -> None:
    from rsrag.tools.captioned import caption_groups, kfold, normalise_caption

    templates = ["Many planes are parked in an airport.", "a beach with waves", "a pond", "green trees", "a road"]
    chips = [
        Chip(Path(f"/x/{i}.jpg"), "A" if i % 2 else "B",
             # a shared template (case/punctuation varies) plus a caption of the image's own
             (templates[i % 5].upper() if i % 3 == 0 else templates[i % 5], f"image number {i}"))
        for i in range(40)
    ]
    chips.append(Chip(Path("/x/alone.jpg"), "A", ("nothing like the others",)))
    groups = caption_groups(chips)
    assert len(set(groups)) == 6 and groups[0] == groups[5] == groups[10] and groups[0] != groups[1]
    folds = kfold(chips, 3, by="templates")
    assert sorted(i for f in folds for i in f) == list(range(len(chips)))
    for f in folds:
        test = {normalise_caption(c) for i in f for c in chips[i].captions}
        train = {normalise_caption(c) for i in range(len(chips)) if i not in f for c in chips[i].captions}
        assert f and not test & train


def test_eval_selection_follows_the_training_record(tmp_path: Path) -> None:
    from rsrag.tools.training.evaluate import TrainingRecord, select_for_eval

    folder = make_folder(tmp_path / "a", {"Forest": (20, 120, 30), "Beach": (220, 200, 150)}, n=10)
    chips = read_chips(folder)
    train, val = split_chips(chips, 0.2)
    record = TrainingRecord.from_metadata(TrainingRecord.of(chips, train, 0.2).to_metadata())
    assert record is not None and record.n_train == 16 and len(record.sketch) == 16
    same = select_for_eval(chips, record)
    assert same.split == "val" and same.training_folder and [c.image for c in same.chips] == [c.image for c in val]
    assert same.seen == 0
    assert select_for_eval(chips, record, "all").seen == 16  # the trained images are recognised by content
    # a folder that is not the training folder is evaluated whole, however it overlaps
    part = chips[:12]
    other = select_for_eval(part, record)
    assert other.split == "all" and len(other.chips) == 12 and not other.training_folder
    assert other.seen == sum(c.image in {t.image for t in train} for c in part)
    assert select_for_eval(chips, None).split == "all"  # no record (another encoder)
    assert TrainingRecord.from_metadata({"format": "rsrag-lit/1"}) is None


def test_eval_cli_defaults_to_the_whole_folder_unless_it_trained_the_heads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Heads record their training folder: eval on it scores the held-out val split, elsewhere every image."""
    import shutil

    from rsrag.agent.interfaces.cli import main

    trained = make_folder(tmp_path / "trained", {"Forest": (20, 120, 30), "Beach": (220, 200, 150), "Pond": (30, 60, 160)}, n=4)
    heads = tmp_path / "heads.safetensors"
    assert main(["encoder", "train", str(trained), "--out", str(heads), "--dim", "32", "--epochs", "2", "--batch-size", "8",
                 "--val-fraction", "0.25", "--cache-dir", str(tmp_path / "cache"), "--json"]) == 0
    capsys.readouterr()
    spec = f"rsrag-lit:{heads}"

    def run(folder: Path, *extra: str) -> dict:
        assert main(["eval", "retrieval", str(folder), "--encoder", spec, "--json", *extra]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    own = run(trained)
    assert list(own)[:2] == ["split", "n_images"]  # named first
    assert own["split"] == "val" and own["n_images"] == 3 and own["seen_in_training"] == 0
    assert run(trained, "--split", "all")["seen_in_training"] == 9

    other = make_folder(tmp_path / "other", {"Forest": (60, 160, 60), "Beach": (180, 170, 120)}, n=5)
    result = run(other)
    assert result["split"] == "all" and result["n_images"] == 10 and result["seen_in_training"] == 0

    # a copy of part of the training folder is another folder (evaluated whole), with its overlap reported
    part = tmp_path / "part"
    shutil.copytree(trained, part)
    lines = (part / "captions.jsonl").read_text().splitlines()
    (part / "captions.jsonl").write_text("\n".join(lines[2:]) + "\n")
    assert main(["eval", "retrieval", str(part), "--encoder", spec]) == 0
    out = capsys.readouterr().out
    first = out.strip().splitlines()[0]
    assert first.startswith("split all: 10 images") and "not the folder" in first
    assert "were used to train the encoder's heads" in out and "mR" in out
