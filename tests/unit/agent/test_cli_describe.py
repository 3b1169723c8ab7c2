"""`rsrag describe`: metadata, JSON output, thumbnails, and clear errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from rsrag.agent.interfaces.cli import main


def test_describe_json_and_thumbnail(make_raster, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    thumb = tmp_path / "thumb.png"
    assert main(["describe", str(make_raster()), "--json", "--thumbnail", str(thumb), "--sha256"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["width"] == 80 and info["height"] == 64 and info["crs"] == "EPSG:32633"
    assert len(info["sha256"]) == 64 and len(info["fingerprint"]) == 32
    west, south, east, north = info["lonlat_bounds"]
    assert 14.9 < west < east < 15.1 and 45.0 < south < north < 45.2
    assert Image.open(thumb).size == tuple(info["thumbnail"]["size"])


def test_describe_table_for_the_real_scene(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["describe", str(shared_data / "geotiff" / "RGB.byte.tif")]) == 0
    out = capsys.readouterr().out
    assert "EPSG:32618" in out and "791" in out


@pytest.mark.parametrize(
    ("make_path", "message"),
    [
        (lambda tmp: tmp / "nope.tif", "no such file"),
        (lambda tmp: tmp, "is a directory"),
    ],
)
def test_bad_input_gives_one_line_and_no_traceback(tmp_path: Path, make_path, message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rsrag.agent.interfaces.cli", "describe", str(make_path(tmp_path))],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert message in proc.stderr and not proc.stdout  # errors on stderr, one line
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stdout + proc.stderr


def test_debug_flag_shows_the_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rsrag.agent.interfaces.cli", "--debug", "describe", str(tmp_path / "nope.tif")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr
