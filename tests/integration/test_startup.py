"""Start-up stays light: ``rsrag --help`` and ``rsrag describe`` import none of the heavy libraries, the
bundled encoder's index key is known without loading it, a no-op ``rsrag index`` loads no model and opens
no database, and ``rsrag ask`` on an indexed scene imports neither torch nor lancedb.

Each case runs the real command in a fresh interpreter and reads ``sys.modules`` at exit (timings are
measured by ``benchmarks/startup.py``, not here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.rasters import write_raster

HEAVY = ("torch", "open_clip", "transformers", "lancedb", "pyarrow", "langgraph", "timm", "torchvision")


def imported_after(args: list[str], tmp_path: Path, setup: str = "") -> tuple[int, str, list[str]]:
    """Run ``rsrag ARGS`` in a fresh interpreter; its exit code, output and the heavy modules it imported."""
    code = textwrap.dedent(f"""
        import json, sys
        {setup}
        from rsrag.agent.interfaces.cli import main
        try:
            code = main({args!r})
        except SystemExit as exc:
            code = exc.code or 0
        print("\\nMODULES=" + json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
        sys.exit(code)
    """)
    env = {**os.environ, "RSRAG_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    out = proc.stdout + proc.stderr
    modules = json.loads(out.split("MODULES=")[-1].splitlines()[0]) if "MODULES=" in out else ["?"]
    return proc.returncode, out, modules


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return write_raster(tmp_path / "s.tif", np.random.default_rng(0).integers(0, 255, (3, 96, 96), dtype=np.uint8))


@pytest.mark.parametrize("args", [["--help"], ["ask", "--help"], ["settings", "--json"]])
def test_help_and_settings_import_nothing_heavy(args: list[str], tmp_path: Path) -> None:
    code, out, modules = imported_after(args, tmp_path)
    assert code == 0, out
    assert modules == [], f"rsrag {' '.join(args)} imported {modules}"


def test_describe_imports_nothing_heavy(tmp_path: Path, image: Path) -> None:
    code, out, modules = imported_after(["describe", str(image), "--json"], tmp_path)
    assert code == 0 and '"fingerprint"' in out, out
    assert modules == [], f"rsrag describe imported {modules}"


def test_bundled_encoder_id_without_loading_it(tmp_path: Path) -> None:
    """The id (part of every index key), dimension and input size of the bundled encoder come from its heads
    file; they equal the loaded encoder's (checked when it loads) and nothing heavy is imported to know them."""
    code = textwrap.dedent("""
        import json, sys
        from rsrag.tools.encoders import lazy_encoder
        enc = lazy_encoder(None)
        known = [enc.id, enc.dim, enc.image_size, enc.loaded]
        heavy = [m for m in ("torch", "open_clip", "transformers", "timm") if m in sys.modules]
        print(json.dumps({"known": known, "heavy": heavy}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    ident, dim, size, loaded = report["known"]
    assert ident.startswith("rsrag-lit#") and (dim, size, loaded) == (256, 224, False) and report["heavy"] == []


def test_noop_index_loads_no_model(tmp_path: Path, image: Path) -> None:
    """The bundled encoder: the first run loads it and indexes; the second finds the complete index by the
    encoder's id alone and imports neither torch nor open_clip."""
    args = ["index", str(image), "--tiling", "grid:32", "--store", str(tmp_path / "store")]
    code, out, modules = imported_after(args, tmp_path)
    assert code == 0 and "indexed 9 patches" in out and "torch" in modules, out
    code, out, modules = imported_after(args, tmp_path)
    assert code == 0 and "already indexed" in out, out
    assert not {"torch", "open_clip", "transformers", "timm", "lancedb", "pyarrow"} & set(modules), \
        f"a no-op index imported {modules}"


def test_ask_on_an_indexed_scene_imports_neither_torch_nor_lancedb(tmp_path: Path) -> None:
    """The question's phrases go through the numpy text tower, the scene's complete index is read from its
    receipt, and the finer windows the first ask's refinement encoded from that level's receipt: the same
    question again imports only the graph's own libraries."""
    big = write_raster(tmp_path / "big.tif", np.random.default_rng(1).integers(0, 255, (3, 256, 256), dtype=np.uint8))
    code, out, _ = imported_after(["index", str(big)], tmp_path)
    assert code == 0, out
    for _ in range(2):
        code, out, modules = imported_after(["ask", str(big), "where are the clouds?", "--quiet"], tmp_path)
        assert code == 0 and "clouds" in out, out
    assert not {"torch", "open_clip", "transformers", "timm", "torchvision", "lancedb", "pyarrow"} & set(modules), \
        f"rsrag ask imported {modules}"
    assert len(list((tmp_path / "home" / "store" / "receipts").glob("*.json"))) == 2  # the pyramid's level, the finer one
