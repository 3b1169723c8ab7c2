"""``rsrag describe`` on a PNG converts it into the scene cache under RSRAG_HOME; ``rsrag cache list|clear``
show and empty it; an undecodable PNG is one line on the terminal and exit status 2."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from rsrag.agent.interfaces.cli import main
from tests.rasters import gradient


def _png(path: Path, data: np.ndarray) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="PNG", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                           dtype="uint8") as dst:
            dst.write(data)
    return path


def _json(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out)


def test_describe_converts_and_cache_list_and_clear_manage_it(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("RSRAG_HOME", str(home))
    png = _png(tmp_path / "big.png", gradient(3, 2100, 2100))  # over the 4 Mpx threshold
    assert main(["describe", str(png), "--json"]) == 0
    info = _json(capsys)
    assert info["driver"] == "PNG" and info["path"] == str(png) and info["overviews"] == [2, 4, 8]
    assert Path(info["cache"]).is_relative_to(home / "cache") and "sequentially" in info["cache_reason"]
    assert main(["cache", "list", "--json"]) == 0
    listing = _json(capsys)
    assert [e["source"] for e in listing["entries"]] == [str(png)] and listing["bytes"] > 0
    assert listing["max_bytes"] == 50 * (1 << 30)
    assert main(["cache", "list"]) == 0 and "1 entries" in capsys.readouterr().out
    assert main(["cache", "clear", str(png)]) == 0 and "removed 1 entries" in capsys.readouterr().out
    assert main(["cache", "list", "--json"]) == 0 and _json(capsys)["entries"] == []


def test_the_cache_path_setting_moves_the_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSRAG_CACHE__PATH", str(tmp_path / "elsewhere"))
    png = _png(tmp_path / "big.png", gradient(3, 2100, 2100))
    assert main(["describe", str(png), "--json"]) == 0
    assert Path(_json(capsys)["cache"]).is_relative_to(tmp_path / "elsewhere")


def test_an_undecodable_png_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _png(tmp_path / "good.png", np.random.default_rng(0).integers(0, 255, (3, 2100, 2100), dtype=np.uint8))
    bad = tmp_path / "bad.png"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert main(["describe", str(bad)]) == 2
    captured = capsys.readouterr()
    text = (captured.out + captured.err).strip()
    lines = [line for line in text.splitlines() if line.strip() and "converting" not in line]
    assert len(lines) == 1 and "bad.png" in lines[0] and "truncated or corrupt" in lines[0]
    assert "Traceback" not in text
