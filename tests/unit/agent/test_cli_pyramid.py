"""`rsrag index` fills every pyramid level ahead of time; `rsrag search` descends a fresh pyramid and says how much
of the finest level it saw."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.index_doubles import TinyEncoder

TILING = "pyramid:32:top=16"


def _image(make_raster) -> Path:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    img = (110 + rng.integers(0, 30, (3, 320, 480))).astype(np.uint8)
    img[:, 200:240, 300:340] = np.array([220, 30, 30], dtype=np.uint8)[:, None, None]
    return make_raster(img)


def test_index_fills_every_level_and_search_sees_the_whole_finest_level(make_raster, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    import rsrag.agent.interfaces.cli.index as index_cli
    from rsrag.agent.interfaces.cli import main

    monkeypatch.setattr(index_cli, "load_cli_encoder", lambda settings: TinyEncoder())
    image, store = _image(make_raster), str(tmp_path / "store")
    # a fresh store: the search encodes only what it visits, and says so
    assert main(["search", str(image), "red", "--tiling", TILING, "--store", store, "--top-k", "3", "--json"]) == 0
    fresh = json.loads(capsys.readouterr().out)
    assert fresh["hits"] and 0 < fresh["hits"][0]["extra"]["searched_share"] < 1
    assert fresh["hits"][0]["extra"]["finest_complete"] == 0
    # rsrag index fills the rest of every level (what the search stored is kept)
    assert main(["index", str(image), "--tiling", TILING, "--store", store, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert all(level["complete"] for level in report["levels"]) and len(report["levels"]) >= 3
    assert report["skipped"] > 0 and report["encoded"] + report["skipped"] == sum(lv["windows"] for lv in report["levels"])
    assert main(["index", str(image), "--tiling", TILING, "--store", store, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["no_op"] is True
    assert main(["search", str(image), "red", "--tiling", TILING, "--store", store, "--top-k", "3", "--json"]) == 0
    full = json.loads(capsys.readouterr().out)
    assert full["hits"][0]["extra"]["searched_share"] == 1.0 and full["hits"][0]["extra"]["finest_complete"] == 1
    best = full["hits"][0]["region"]["box"]
    assert best["x0"] < 340 and best["x1"] > 300 and best["y0"] < 240 and best["y1"] > 200  # on the red square


def test_search_without_indexing_refuses_a_fresh_pyramid(make_raster, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import rsrag.agent.interfaces.cli.index as index_cli
    from rsrag.agent.interfaces.cli import main

    monkeypatch.setattr(index_cli, "load_cli_encoder", lambda settings: TinyEncoder())
    code = main(["search", str(_image(make_raster)), "red", "--tiling", TILING, "--store", str(tmp_path / "s"),
                 "--no-index"])
    assert code != 0
    err = capsys.readouterr().err
    assert "no pyramid level encoded yet" in err and "Traceback" not in err
