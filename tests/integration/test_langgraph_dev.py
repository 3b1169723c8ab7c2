"""The graphs of langgraph.json under LangGraph's real dev server (`langgraph dev`), driven over HTTP."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.web_mosaic import make_mosaic

LANGGRAPH = Path(sys.executable).parent / "langgraph"


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=240) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    if not LANGGRAPH.exists() and shutil.which("langgraph") is None:
        pytest.skip("langgraph CLI not installed (pip install 'langgraph-cli[inmem]')")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = tmp_path_factory.mktemp("lg-home")
    env = {**os.environ, "RSRAG_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([str(LANGGRAPH if LANGGRAPH.exists() else "langgraph"), "dev", "--no-browser", "--no-reload",
                             "--port", str(port)], cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/ok", timeout=2)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail("langgraph dev exited while starting")
                time.sleep(0.5)
        yield url, home
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_all_three_graphs_are_served(server) -> None:  # type: ignore[no-untyped-def]
    url, _ = server
    graphs = {a["graph_id"] for a in _post(f"{url}/assistants/search", {})}
    assert graphs == {"analyst", "imagerag", "indexer"}


def test_analyst_and_pipeline_answer_over_http(server, shared_data: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url, home = server
    mosaic = make_mosaic(shared_data / "aid-rsicd" / "images", tmp_path / "m.tif", background="Forest", target="Airport",
                         grid=(4, 4), target_cell=(2, 1), cell=256)
    context = {"settings": {"vlm": {"spec": "rule"}, "store": {"path": str(home / "store"), "tiling": "grid:256"}}}
    thread = _post(f"{url}/threads", {})["thread_id"]
    state = _post(f"{url}/threads/{thread}/runs/wait", {
        "assistant_id": "analyst", "context": context,
        "input": {"messages": [{"role": "user", "content": "where is the airport?"}], "scene": str(mosaic.path)},
    })
    box = state["answer"]["evidence"][0]["region"]["box"]
    assert (box["x0"], box["y0"], box["x1"], box["y1"]) == mosaic.target_box
    answer = state["answer"]
    assert answer["supported"] and answer["finding"] in ("found", "uncertain")
    assert "Retrieval-only" in answer["text"] and not answer["text"].startswith("Not found")
    baseline = _post(f"{url}/runs/wait", {"assistant_id": "imagerag", "context": context,
                                          "input": {"question": "where is the airport?", "scene": str(mosaic.path)}})
    assert baseline["answer"]["cited"] and "Sub-patch 1 at location" in baseline["answer"]["text"]
