"""`rsrag encoder calibrate`: one command fits the presence calibration and stores it keyed by encoder id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rsrag.agent.interfaces.cli import index as index_cli
from rsrag.agent.interfaces.cli import main
from rsrag.tools.calibration import load_presence, read_calibrations
from tests.captioned import make_folder
from tests.index_doubles import TinyEncoder

COLOURS = {"Red": (220, 30, 30), "Green": (30, 200, 40), "Blue": (30, 40, 220), "White": (250, 250, 250)}


@pytest.fixture(autouse=True)
def _tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_cli, "load_cli_encoder", lambda settings: TinyEncoder())


def test_calibrate_writes_a_record_the_encoder_then_uses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_folder(tmp_path / "chips", COLOURS, n=20)
    out = tmp_path / "presence.json"
    args = ["encoder", "calibrate", str(folder), "--out", str(out), "--per-class", "6", "--mosaics", "16",
            "--cache-dir", str(tmp_path / "cache")]
    assert main([*args, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["encoder"] == TinyEncoder().id and summary["file"] == str(out)
    assert 0 < summary["not_found_below"] <= summary["found_at"] < 1 and 0 < summary["site_at"] <= summary["found_at"]
    assert list(read_calibrations(out)) == [TinyEncoder().id]
    model = load_presence(TinyEncoder(), home=out, bundled=tmp_path / "none.json")
    assert model.calibrated and model.found_at == pytest.approx(summary["found_at"], abs=1e-4)
    # a second run is deterministic (cached windows, same fit)
    assert main([*args, "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["found_at"] == summary["found_at"] and again["val_window_auroc"] == summary["val_window_auroc"]


def test_calibrate_bad_folder_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["encoder", "calibrate", str(tmp_path / "missing"), "--out", str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "captions.jsonl" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "p.json").exists()
