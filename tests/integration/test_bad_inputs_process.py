"""Bad inputs to the real `rsrag` process: exit status 2, one line on standard error naming the thing at
fault, nothing on standard output, no traceback (a sample of tests/unit/agent/test_bad_inputs.py, plus the
cases that need a process: bare `rsrag`, environment variables, a chat model server that is down)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.rasters import write_raster


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("process")
    return {
        "root": root,
        "scene": write_raster(root / "scene.tif", np.random.default_rng(0).integers(0, 255, (3, 96, 96), dtype=np.uint8)),
        "pixel": write_raster(root / "pixel.tif", np.zeros((3, 1, 1), dtype=np.uint8)),
    }


def rsrag(args: list[str], root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "RSRAG_HOME": str(root / "home"), "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run([sys.executable, "-m", "rsrag.agent.interfaces.cli", *args], capture_output=True, text=True,
                          timeout=300, env=environ, cwd=root)


CASES = [
    ("unknown option", ["index", "{scene}", "--bogus"], {}, "No such option: --bogus"),
    ("top-k zero", ["search", "{scene}", "water", "--top-k", "0"], {}, "--top-k"),
    ("bands", ["describe", "{scene}", "--bands", "abc"], {}, "--bands"),
    ("port zero", ["serve", "{scene}", "--port", "0"], {}, "--port"),
    ("mcp folder", ["mcp", "--images", "/nonexistent"], {}, "/nonexistent is not a folder"),
    ("thumbnail folder", ["describe", "{scene}", "--thumbnail", "{root}/no/dir/t.png"], {}, "No such file or directory"),
    ("old trace variable", ["ask", "{scene}", "where?"], {"RSRAG_TRACE_ENABLED": "maybe"}, "RSRAG_TRACE_ENABLED"),
    ("trace enabled maybe", ["ask", "{scene}", "where?"], {"RSRAG_TRACE__ENABLED": "maybe"}, "trace.enabled"),
    ("one pixel", ["ask", "{pixel}", "where are the roofs?"], {}, "cannot be indexed"),
    ("vlm down", ["ask", "{scene}", "where?", "--vlm", "openai:m@http://127.0.0.1:9/v1", "--tiling", "grid:32",
                  "--quiet"], {},
     "cannot be reached"),
]


@pytest.mark.parametrize(("args", "env", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_in_a_real_process(files: dict[str, Path], args: list[str], env: dict[str, str], expected: str) -> None:
    proc = rsrag([a.format(**{k: str(v) for k, v in files.items()}) for a in args], files["root"], **env)
    assert proc.returncode == 2, (proc.stdout[-300:], proc.stderr[-500:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr and lines[0] not in proc.stdout


def test_bare_rsrag_shows_the_help_with_status_2(files: dict[str, Path]) -> None:
    proc = rsrag([], files["root"])
    assert proc.returncode == 2 and "Usage" in proc.stdout + proc.stderr and "Traceback" not in proc.stderr


def test_debug_shows_the_traceback(files: dict[str, Path]) -> None:
    proc = rsrag(["--debug", "describe", str(files["root"] / "none.tif")], files["root"])
    assert proc.returncode != 0 and "Traceback" in proc.stderr
