"""The page sees a fresh scene's pyramid being encoded: progress events stream before the answer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from starlette.testclient import TestClient

from rsrag.agent.interfaces.web import create_app
from tests.rasters import write_raster
from tests.web_server import tiny_analyst


def test_a_fresh_scene_streams_its_indexing_progress_then_the_answer(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    scene = write_raster(tmp_path / "scene.tif", (90 + rng.integers(0, 80, (3, 384, 448))).astype(np.uint8))
    with tiny_analyst(tmp_path / "agent", tiling="pyramid:16:top=16") as analyst:
        client = TestClient(create_app(analyst, [scene], upload_dir=tmp_path / "uploads", max_upload_bytes=10_000))
        image = client.get("/api/images").json()["images"][0]["id"]
        response = client.post("/api/ask", json={"image": image, "question": "where is the airport?", "thread": "p"})
        stream = [json.loads(line) for line in response.text.splitlines() if line.strip()]
        progress = [e for e in stream if e["type"] == "progress"]
        assert progress, [e["type"] for e in stream]
        assert {e["stage"] for e in progress} == {"descend"} and all("windows" in e["text"] for e in progress)
        assert {e["level"] for e in progress} >= {0}  # level 0 first, then the windows the search visits
        first_answer = next(i for i, e in enumerate(stream) if e["type"] == "answer")
        assert stream.index(progress[0]) < first_answer and stream[-1]["type"] == "answer"
        # a second question on the same scene reuses what was encoded: no level-0 encoding again
        again = client.post("/api/ask", json={"image": image, "question": "where is the airport?", "thread": "q"})
        later = [json.loads(line) for line in again.text.splitlines() if line.strip()]
        assert not [e for e in later if e["type"] == "progress" and e["level"] == 0]
