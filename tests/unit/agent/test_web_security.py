"""The web server's boundaries: threads, crops and traces only for the images it serves; a body limit on
POST /api/ask before the body is read; uploads judged by content and named without server paths; an
aborted upload leaves nothing and logs no traceback."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from rsrag.agent.interfaces.api import Analyst
from rsrag.agent.interfaces.web import create_app
from rsrag.agent.interfaces.web.app import MAX_ASK_BODY_BYTES
from tests.rasters import write_raster
from tests.web_server import tiny_analyst


def _scene(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    return write_raster(path, rng.integers(0, 255, (3, 256, 256), dtype=np.uint8))


@pytest.fixture
def analyst(tmp_path: Path) -> Iterator[Analyst]:
    with tiny_analyst(tmp_path / "agent", tiling="grid:64") as a:
        yield a


@pytest.fixture
def scenes(tmp_path: Path) -> dict[str, Path]:
    return {"served": _scene(tmp_path / "scene.tif", 1), "other": _scene(tmp_path / "other.tif", 2)}


def test_threads_about_other_images_are_invisible(analyst: Analyst, scenes: dict[str, Path], tmp_path: Path) -> None:
    other = analyst.ask(scenes["other"], "where are the roofs?", thread_id="site-42")  # e.g. `rsrag ask OTHER.tif`
    mine = analyst.ask(scenes["served"], "where are the roofs?", thread_id="mine")
    assert other.evidence and mine.evidence
    client = TestClient(create_app(analyst, [scenes["served"]], upload_dir=tmp_path / "up"))
    hidden = other.evidence[0].id
    assert client.get("/api/threads/site-42/evidence").json() == {"evidence": []}
    assert client.get("/api/threads/site-42/evidence/x/crop").status_code == 404
    crop = client.get(f"/api/threads/site-42/evidence/{hidden}/crop")
    assert crop.status_code == 404 and crop.json()["kind"] == "argument"
    trace = client.get("/api/threads/site-42/trace").json()
    assert trace["messages"] == [] and trace["steps"] == [] and "roofs" not in json.dumps(trace)
    assert trace == client.get("/api/threads/never-used/trace").json() | {"thread": "site-42"}  # same as none
    image = client.get("/api/images").json()["images"][0]["id"]
    refused = client.post("/api/ask", json={"image": image, "question": "and now?", "thread": "site-42"})
    assert refused.status_code == 400 and "cannot be continued on this server" in refused.json()["error"]
    # the server's own images stay visible
    assert len(client.get("/api/threads/mine/evidence").json()["evidence"]) == len(analyst.evidence("mine"))
    assert client.get(f"/api/threads/mine/evidence/{mine.evidence[0].id}/crop").status_code == 200
    assert client.get("/api/threads/mine/trace").json()["messages"]
    # a thread that later asked about another image disappears too
    analyst.ask(scenes["other"], "and here?", thread_id="mine")
    assert client.get("/api/threads/mine/evidence").json() == {"evidence": []}


def test_ask_bodies_are_limited_before_they_are_read(analyst: Analyst, scenes: dict[str, Path], tmp_path: Path) -> None:
    client = TestClient(create_app(analyst, [scenes["served"]], upload_dir=tmp_path / "up"))
    big = client.post("/api/ask", content=b'{"question": "' + b"x" * MAX_ASK_BODY_BYTES + b'"}',
                      headers={"content-type": "application/json"})
    assert big.status_code == 413 and big.json()["type"] == "RequestTooLargeError"
    # (that the body is not read past the limit needs a real server: tests/integration/test_web_concurrency.py)
    assert client.post("/api/ask", content=b"{}", headers={"content-length": "abc"}).status_code in (400, 413)


def test_uploads_are_judged_by_content_and_named_without_server_paths(analyst: Analyst, scenes: dict[str, Path],
                                                                     tmp_path: Path) -> None:
    client = TestClient(create_app(analyst, [scenes["served"]], upload_dir=tmp_path / "up", max_upload_bytes=1 << 20))
    vrt = (f'<VRTDataset rasterXSize="16" rasterYSize="16"><VRTRasterBand dataType="Byte" band="1">'
           f'<SimpleSource><SourceFilename>{scenes["other"]}</SourceFilename></SimpleSource></VRTRasterBand></VRTDataset>')
    for name, body in (("innocent.tif", vrt.encode()), ("noise.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 64),
                       ("text.jpg", b"hello")):
        response = client.post(f"/api/images?name={name}", content=body)
        assert response.status_code == 415, (name, response.text)
        message = response.json()["error"]
        assert name in message and str(tmp_path) not in message and "upload-" not in message, message
    assert not list((tmp_path / "up").iterdir())


def test_an_aborted_upload_keeps_nothing_and_logs_no_traceback(analyst: Analyst, scenes: dict[str, Path],
                                                                tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from starlette.requests import ClientDisconnect

    app = create_app(analyst, [scenes["served"]], upload_dir=tmp_path / "up")
    client = TestClient(app, raise_server_exceptions=True)

    def breaks() -> Iterator[bytes]:
        yield b"II*\x00" + b"\0" * 1024
        raise ClientDisconnect()

    caplog.set_level(logging.INFO)
    assert client.post("/api/images?name=a.tif", content=breaks()).status_code == 400  # the app sees the disconnect
    assert not any(p.name.startswith("upload-") for p in (tmp_path / "up").glob("*"))
    assert not any(r.exc_info for r in caplog.records)
