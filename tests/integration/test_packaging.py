"""The built wheel installs one `rsrag` namespace and nothing generic at the top level."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

SOURCE_FOLDERS = {"agent": "rsrag/agent", "tools": "rsrag/tools", "graphs": "rsrag/graphs", "prompts": "rsrag/prompts"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build_dir = tmp_path_factory.mktemp("build")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO_ROOT)],
        capture_output=True, text=True, timeout=300, cwd=build_dir,
    )
    assert proc.returncode == 0, proc.stderr
    return next(out.glob("rsrag-*.whl"))


def test_wheel_has_only_the_rsrag_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/")[0] for n in names if not n.startswith("rsrag-")}
    assert top_level == {"rsrag"}
    assert not any(n.startswith(("agent/", "tools/", "graphs/", "prompts/")) for n in names)


def test_wheel_contains_every_source_module(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = []
    for folder, package in SOURCE_FOLDERS.items():
        for source in (REPO_ROOT / folder).rglob("*.py"):
            if "__pycache__" in source.parts:
                continue
            wanted = f"{package}/{source.relative_to(REPO_ROOT / folder).as_posix()}"
            if wanted not in names:
                missing.append(wanted)
    assert not missing, f"add these sub-packages to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_wheel_declares_the_console_script(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        entry_points = next(n for n in zf.namelist() if n.endswith("entry_points.txt"))
        assert "rsrag = rsrag.agent.interfaces.cli:main" in zf.read(entry_points).decode()


def test_wheel_bundles_the_viewer_library(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    web = "rsrag/agent/interfaces/web"
    for page_file in ("index.html", "app.js", "viewer.js", "style.css", "favicon.svg"):
        assert f"{web}/{page_file}" in names
    assert f"{web}/static/openseadragon.min.js" in names, "the viewer library is missing: `make web` copies it in"
    assert f"{web}/static/openseadragon.LICENSE.txt" in names
