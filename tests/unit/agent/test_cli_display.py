"""What the CLI prints: tables that wrap instead of cutting, fixed-precision coordinates, one row per place."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from rsrag.agent.evidence import Answer, Evidence
from rsrag.agent.interfaces.cli.display import places, places_table, print_answer
from rsrag.tools.region import MapBox, PixelBox, Region


def region(x0: int, y0: int, x1: int, y1: int) -> Region:
    box = PixelBox(x0=x0, y0=y0, x1=x1, y1=y1)
    return Region(scene="s" * 32, box=box, map_box=MapBox(crs="EPSG:32633", left=500000.0 + x0 * 0.5,
                                                          bottom=5399000.0 - y1 * 0.5, right=500000.0 + x1 * 0.5,
                                                          top=5399000.0 - y0 * 0.5))


def ev(eid: str, path: str, box: tuple[int, int, int, int], confidence: float | None) -> Evidence:
    return Evidence(id=eid, kind="region", path=path, region=region(*box), confidence=confidence, query="tanks")  # type: ignore[arg-type]


LEDGER = [
    ev("Ea00001", "fast", (1792, 896, 2048, 1152), 0.99),
    ev("Ea00002", "zoom", (1792, 896, 2048, 1152), 0.99),  # the zoom on it: the same place
    ev("Ea00003", "fast", (10240, 20480, 10752, 20992), 0.41),
    ev("Ea00004", "zoom", (10300, 20500, 10400, 20600), None),  # a closer look inside it: still that place
    Evidence(id="Ek00001", kind="knowledge", path="knowledge", knowledge_id="tank-farm", title="[Tank farm]"),
]


def render(table: object, width: int) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None).print(table)
    return buffer.getvalue()


def test_places_of_several_targets_say_what_each_was_searched_for() -> None:
    bridge = Evidence(id="Eb00001", kind="region", path="fast", region=region(0, 0, 256, 256), confidence=0.8,
                      query="bridges")
    out = render(places_table(places([*LEDGER[:2], bridge])), 120)
    assert "for" in out.splitlines()[1] and column(out, 3) == "tanksbridges"  # one row each, the target named
    assert "for" not in render(places_table(places(LEDGER[:2])), 120).splitlines()[1]  # one target: no column


def test_places_group_records_of_one_box() -> None:
    found = places(LEDGER)
    assert [p.ids for p in found] == [["Ea00001", "Ea00002"], ["Ea00003", "Ea00004"], ["Ek00001"]]
    assert found[0].primary.path == "fast" and found[0].paths == ["fast", "zoom"] and found[0].confidence == 0.99


def column(out: str, index: int) -> str:
    """The text of one column of a rendered table's body, read top to bottom, without spaces."""
    return "".join(line.split("│")[index].replace(" ", "") for line in out.splitlines() if line.startswith("│"))


def test_places_table_wraps_and_never_cuts() -> None:
    for width in (100, 80, 50):
        out = render(places_table(places(LEDGER), "evidence"), width)
        assert "…" not in out and max(len(line) for line in out.splitlines()) <= width
        boxes = column(out, 4)
        assert "1792,896,2048,1152" in boxes and "10240,20480,10752,20992" in boxes, (width, out)
        assert "[Tankfarm]" in boxes  # data, not rich markup
        assert "Ea00001Ea00002" in column(out, 2) and "Ea00003Ea00004" in column(out, 2) and "0.990.41" in column(out, 6)
        assert re.search(r"15\.\d{6},48\.\d{6}", column(out, 5))  # lon/lat with fixed 6 decimals
        if width >= 80:
            assert sum("Ea00001" in line for line in out.splitlines()) == 1  # one row per place
        if width >= 100:
            assert any("1792, 896, 2048, 1152" in line for line in out.splitlines())


def test_answer_shows_the_finding_and_the_cited_evidence_confidence() -> None:
    answer = Answer(text="Storage tanks at Ea00001.", cited=["Ea00001", "Ea00002"], confidence=0.5,
                    evidence=LEDGER[:2], finding="found")  # type: ignore[call-arg]
    buffer = io.StringIO()
    print_answer(answer, Console(file=buffer, width=100, color_system=None))
    out = buffer.getvalue()
    assert out.lstrip().startswith("found: Storage tanks at Ea00001.")
    assert "cited evidence confidence 0.99" in out and "answer confidence 0.50" in out
    assert len([line for line in out.splitlines() if "1792, 896, 2048, 1152" in line]) == 1


def test_describe_prints_fixed_precision_that_fits_60_columns(shared_data: Path, tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "60", "RSRAG_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "rsrag.agent.interfaces.cli", "describe",
                           str(shared_data / "geotiff" / "RGB.byte.tif")], capture_output=True, text=True, timeout=120,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "e+" not in out and "…" not in out and max(len(line) for line in out.splitlines()) <= 60
    assert "2826915.00" in out and "-78.958650" in out  # map bounds in CRS units (2 decimals), degrees (6)
    assert "[uint8, uint8, uint8]" in out  # list values are data, not rich markup



def test_a_no_op_index_draws_no_bar(tmp_path: Path) -> None:
    import numpy as np

    from tests.rasters import write_raster

    scene = write_raster(tmp_path / "scene.tif", np.random.default_rng(1).integers(0, 255, (3, 96, 128), dtype=np.uint8))
    args = ["--encoder", "rsrag-tiny-test:random", "index", str(scene), "--tiling", "grid:32"]
    script = (
        "import sys\nfrom tests.tiny_encoder import register_tiny_model_config\nregister_tiny_model_config()\n"
        "from rsrag.agent.interfaces.cli import main\n"
        f"assert main({args!r}) == 0\nprint('=== again ===', flush=True)\nsys.exit(main({args!r}))\n"
    )
    env = {**os.environ, "RSRAG_HOME": str(tmp_path / "home"), "COLUMNS": "100"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env,
                          cwd=Path(__file__).resolve().parents[3])
    assert proc.returncode == 0, proc.stderr[-2000:]
    first, second = proc.stdout.split("=== again ===\n")
    assert "12/12" in first and "indexed 12 patches" in first  # the first run shows its bar
    assert second.startswith("already indexed: 12 patches") and "/s" not in second, repr(second)  # no bar, no blank line
    assert "nothing to" in second and "\n\n" not in second
