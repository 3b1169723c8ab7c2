"""`make demo`'s script end to end: the analyst scene built from validation chips, described, indexed and
asked, with the answers as JSON and the trace as HTML (slow: it indexes a 1,800 px scene with the bundled
encoder; run with `make test-all`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, SHARED_DATA


@pytest.mark.slow
def test_demo_builds_the_scene_and_answers_with_cited_sites(tmp_path: Path) -> None:
    if not (SHARED_DATA / "aid-rsicd" / "captions.jsonl").is_file():
        pytest.skip("the shared AID/RSICD chips are not here")
    out = tmp_path / "demo"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "120"}
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "demo" / "analyst_demo.py"), "--out", str(out),
                           "--question", "where are the storage tanks?", "--question", "how many storage tanks are there?"],
                          capture_output=True, text=True, timeout=1200, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    answers = json.loads((out / "answers.json").read_text())
    assert [a["question"] for a in answers] == ["where are the storage tanks?", "how many storage tanks are there?"]
    assert all(a["finding"] in ("found", "not_found", "uncertain") and a["evidence"] for a in answers)
    truth = json.loads((out / "analyst-scene.truth.json").read_text())
    assert set(truth["present"]) == {"StorageTanks", "Airport"} and "ground truth: StorageTanks: 3 planted" in proc.stdout
    assert (out / "trace.html").read_text().lstrip().lower().startswith("<!doctype html")
    assert "cited evidence confidence" in proc.stdout
