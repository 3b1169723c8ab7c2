"""Trace exports: JSON Lines, GeoJSON, the self-contained HTML report (screenshot in a real browser), redaction."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rsrag.agent.trace import TraceStore
from rsrag.agent.trace.report import render_html
from tests.rasters import write_raster
from tests.unit.agent.test_trace import record, run_cli

CHROMIUM = Path("/usr/bin/chromium")
QUESTION = "where are the red roofs?"


@pytest.fixture
def grey_scene(tmp_path: Path) -> Path:
    """A smooth grey scene (no saturated colour, so the report's red evidence boxes can be found in a screenshot)."""
    y, x = np.mgrid[0:256, 0:320]
    grey = (60 + (x + y) * 120 / 576).astype(np.uint8)
    return write_raster(tmp_path / "grey.tif", np.stack([grey, grey, grey]))


@pytest.fixture
def recorded(tmp_path: Path, grey_scene: Path) -> Path:
    return record(tmp_path, grey_scene)


def test_jsonl_has_one_event_per_line(recorded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_cli(["trace", "export", "t1", "--format", "jsonl", "--db", str(recorded)], capsys)
    assert code == 0
    *rows, head = [json.loads(line) for line in out.splitlines()]  # the chain head is the last line
    assert head["record"] == "chain_head" and head["events"] == 14 and head["hash"] == rows[-1]["hash"]
    assert [r["kind"] for r in rows][0] == "run_start" and rows[-1]["kind"] == "run_end" and len(rows) == 14
    assert all(len(r["hash"]) == 64 for r in rows) and rows[1]["prev_hash"] == rows[0]["hash"]
    assert rows[0]["question"] == QUESTION and rows[0]["provenance"]["encoder_spec"] == "rsrag-tiny-test:random"


def search_places(recorded: Path) -> int:
    """How many places the recorded search found (its evidence; the policy zooms on one of them)."""
    (search,) = [e for e in TraceStore(recorded).events("t1") if e.kind == "tool" and e.tool == "search_patches"]
    assert search.evidence
    return len(search.evidence)


def test_geojson_is_valid_with_lonlat_polygons(recorded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "trace.geojson"
    code, _ = run_cli(["trace", "export", "t1", "-f", "geojson", "-o", str(out_file), "--db", str(recorded)], capsys)
    assert code == 0
    doc = json.loads(out_file.read_text())
    places = search_places(recorded)
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == places + 1  # every place found, one zoom
    for feature in doc["features"]:
        assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Polygon"
        ring = feature["geometry"]["coordinates"][0]
        assert len(ring) == 5 and ring[0] == ring[-1]
        assert all(-180 <= lon <= 180 and -90 <= lat <= 90 for lon, lat in ring)
        west, south = ring[0]
        east, north = ring[2]
        assert west < east and south < north  # counter-clockwise exterior ring (RFC 7946)
        assert len(feature["properties"]["bbox_px"]) == 4 and feature["properties"]["map_crs"] == "EPSG:32633"
    cited = [f for f in doc["features"] if f["properties"]["cited"]]
    assert len(cited) == 1 and cited[0]["properties"]["tool"] == "zoom"


def test_redaction_blanks_prompts_and_answers(recorded: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    answer_text = TraceStore(recorded).events("t1")[-1].answer.text
    code, out = run_cli(["trace", "export", "t1", "--redact", "prompts,answers", "--db", str(recorded)], capsys)
    assert code == 0 and QUESTION not in out and answer_text not in out and "They look dense" not in out
    assert "[redacted]" in out and "search_patches" in out  # the steps and evidence stay
    *rows, _ = [json.loads(line) for line in out.splitlines()]
    assert rows[0]["redacted"] == ["question"] and rows[-1]["answer"]["cited"]
    code, out = run_cli(["trace", "export", "t1", "--redact", "answers", "--db", str(recorded)], capsys)
    assert QUESTION in out and answer_text not in out
    monkeypatch.setenv("RSRAG_TRACE__REDACT", "prompts")  # the setting applies when --redact is not given
    code, out = run_cli(["trace", "export", "t1", "-f", "html", "--db", str(recorded)], capsys)
    assert code == 0 and QUESTION not in out and answer_text.split(" at ")[0] in out
    code, out = run_cli(["trace", "export", "t1", "--redact", "secrets", "--db", str(recorded)], capsys)
    assert code == 2 and "unknown redaction secrets" in out


def test_html_report_is_self_contained_and_links_claims_to_evidence(recorded: Path) -> None:
    events = TraceStore(recorded).events("t1")
    page = render_html(events)
    assert not re.search(r"https?://|src=\"(?!data:)|href=\"(?!#)", page), "the report must not reference anything outside itself"
    cited = events[-1].answer.cited[0]
    assert f'id="ev-{cited}"' in page and f'<a class="ref" href="#ev-{cited}">' in page
    assert page.count('<img alt="crop') == 1 and page.count("data:image/png;base64,") == 2  # zoom crop + overview
    assert page.count("<rect ") == search_places(recorded) + 1 and 'stroke="#ff1f5a"' in page  # every region drawn, the cited one in red
    assert "agent_system.v1" in page and "teleport" in page and "outside the image" in page


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
def test_html_report_renders_in_a_browser(recorded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "report.html"
    code, _ = run_cli(["trace", "export", "t1", "-f", "html", "-o", str(page), "--db", str(recorded)], capsys)
    assert code == 0
    shot = tmp_path / "report.png"
    proc = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
         "--window-size=1200,900", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert shot.is_file(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (900, 1200) and pixels.std() > 10, "the screenshot is blank"
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    red = (r > 200) & (g < 90) & (b < 140)  # the cited evidence box drawn over the (grey) scene overview
    greyish = (abs(r - g) < 8) & (abs(g - b) < 8) & (r > 50) & (r < 200)
    assert red.sum() > 50, "the cited evidence box is not visible on the overview"
    assert greyish.sum() > 20_000, "the scene overview image did not render"
