"""The web workspace over a real uvicorn server: two tabs on one thread, a client leaving mid-stream."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import numpy as np

from rsrag.agent.interfaces.web import create_app
from tests.rasters import write_raster
from tests.web_server import running, tiny_analyst


def test_second_tab_and_disconnect_leave_the_session_usable(tmp_path: Path) -> None:
    data = np.random.default_rng(2).integers(0, 255, (3, 512, 512), dtype=np.uint8)
    scene = write_raster(tmp_path / "scene.tif", data)
    with tiny_analyst(tmp_path / "agent") as analyst, running(create_app(analyst, [scene])) as url:
        iid = httpx.get(f"{url}/api/images").json()["images"][0]["id"]
        body = {"image": iid, "question": "where are the ships?", "thread": "shared"}
        with httpx.Client(base_url=url, timeout=60) as tab1, httpx.Client(base_url=url, timeout=60) as tab2:
            with tab1.stream("POST", "/api/ask", json=body) as first:
                lines = first.iter_lines()
                assert json.loads(next(lines))["type"] == "start"
                # the first question is still running (indexing the scene): a second tab is refused, clearly
                second = tab2.post("/api/ask", json=body)
                assert second.status_code == 409 and "already answering" in second.json()["error"]
            # tab 1 left mid-stream; the worker stops between steps and frees the thread
            deadline = time.monotonic() + 60
            while tab2.get("/api/threads/shared/trace").json()["busy"]:
                assert time.monotonic() < deadline, "the thread stayed busy after the client left"
                time.sleep(0.1)
            again = tab2.post("/api/ask", json=body)
            assert again.status_code == 200
            final = json.loads(again.text.splitlines()[-1])
            assert final["type"] == "answer" and final["answer"]["thread_id"] == "shared"
            assert tab2.get(f"/api/images/{iid}/tiles/9/0_0.jpg").status_code == 200  # the server is fine
