"""The web workspace's HTTP API: images, tiles, uploads, streamed questions, evidence, trace, bad input."""

from __future__ import annotations

import gc
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from rsrag.agent.interfaces.api import Analyst
from rsrag.agent.interfaces.web import create_app
from rsrag.agent.interfaces.web.streaming import ThreadLocks, question_stream
from tests.rasters import gradient, write_raster
from tests.web_server import tiny_analyst

LIMIT = 200_000


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    data = (gradient(3, 512, 640).astype(np.int16) + rng.integers(0, 4, (3, 512, 640))).clip(0, 255).astype(np.uint8)
    return write_raster(tmp_path / "scene.tif", data)


@pytest.fixture
def analyst(tmp_path: Path) -> Iterator[Analyst]:
    with tiny_analyst(tmp_path / "agent") as a:
        yield a


@pytest.fixture
def client(analyst: Analyst, scene: Path, tmp_path: Path) -> TestClient:
    app = create_app(analyst, [scene], upload_dir=tmp_path / "uploads", max_upload_bytes=LIMIT)
    return TestClient(app)


def image_id(client: TestClient) -> str:
    return client.get("/api/images").json()["images"][0]["id"]


def events(response) -> list[dict]:
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def test_page_and_images(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "viewer.js" in page.text and "http" not in page.text.split("<body>")[1]
    for name in ("app.js", "viewer.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    (image,) = client.get("/api/images").json()["images"]
    assert image["width"] == 640 and image["height"] == 512 and image["crs"] == "EPSG:32633"
    assert image["max_level"] == 10 and image["transform"][0] == 0.5 and len(image["lonlat_bounds"]) == 4
    assert client.get(f"/api/images/{image['id']}").json()["fingerprint"] == image["fingerprint"]


def test_tiles_are_cut_on_demand(client: TestClient) -> None:
    iid = image_id(client)
    full = client.get(f"/api/images/{iid}/tiles/10/2_1.jpg")
    assert full.status_code == 200 and full.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(full.content)).size == (128, 256)  # right edge: 640 - 512 columns
    overview = Image.open(io.BytesIO(client.get(f"/api/images/{iid}/tiles/8/0_0.jpg").content))
    assert overview.size == (160, 128)
    assert client.get(f"/api/images/{iid}/tiles/10/3_0.jpg").status_code == 404
    assert client.get(f"/api/images/{iid}/tiles/11/0_0.jpg").status_code == 404
    missing = client.get("/api/images/deadbeef0000/tiles/0/0_0.jpg")
    assert missing.status_code == 404 and missing.json()["type"] == "UnknownImageError"


def test_only_registered_images_by_id(client: TestClient, scene: Path) -> None:
    for url in ["/static/..%2F..%2Fpyproject.toml", "/static/index.html%00.js", "/static/../app.py",
                "/api/images/..%2F..%2F..%2Fetc%2Fpasswd", f"/api/images/{str(scene).replace('/', '%2F')}"]:
        response = client.get(url)
        assert response.status_code == 404, url
        assert "root:" not in response.text and "[project]" not in response.text
    for image in ["/etc/passwd", str(scene), "../scene.tif"]:
        response = client.post("/api/ask", json={"image": image, "question": "where is the river?"})
        assert response.status_code == 404 and "no image with id" in response.json()["error"]


def test_uploads_are_limited_and_checked(client: TestClient, tmp_path: Path) -> None:
    uploads = tmp_path / "uploads"
    small = write_raster(tmp_path / "small.tif", gradient(3, 64, 80))
    ok = client.post("/api/images?name=../../evil/small.tif", content=small.read_bytes())
    assert ok.status_code == 201 and ok.json()["name"] == "small.tif" and ok.json()["uploaded"]
    (stored,) = uploads.iterdir()
    assert stored.name.startswith("upload-") and not (tmp_path.parent / "evil").exists()
    assert client.get(f"/api/images/{ok.json()['id']}/tiles/7/0_0.jpg").status_code == 200
    assert len(client.get("/api/images").json()["images"]) == 2

    big = client.post("/api/images?name=big.tif", content=b"\0" * (LIMIT + 1))
    assert big.status_code == 413 and "at most 0.2 MiB" in big.json()["error"]
    streamed = client.post("/api/images?name=big.tif", content=iter([b"\0" * 65536] * 4))  # chunked, no length
    assert streamed.status_code == 413
    vrt = (b'<VRTDataset rasterXSize="1" rasterYSize="1"><VRTRasterBand dataType="Byte" band="1">'
           b'<SimpleSource><SourceFilename>/etc/passwd</SourceFilename></SimpleSource></VRTRasterBand></VRTDataset>')
    disguised = client.post("/api/images?name=innocent.tif", content=vrt)
    assert disguised.status_code == 415 and "VRT" in disguised.json()["error"]
    assert client.post("/api/images?name=notes.txt", content=b"hello").status_code == 415
    assert client.post("/api/images?name=photo.png", content=b"not a png").status_code == 415
    assert client.post("/api/images?name=empty.tif", content=b"").status_code == 415
    assert [p.name for p in uploads.iterdir()] == [stored.name]  # refused uploads leave nothing behind


def test_ask_streams_steps_then_the_answer(client: TestClient) -> None:
    iid = image_id(client)
    response = client.post("/api/ask", json={"image": iid, "question": "where is the airport?", "thread": "t-1"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/x-ndjson")
    stream = events(response)
    assert stream[0] == {"type": "start", "thread": "t-1", "image": iid, "question": "where is the airport?"}
    assert stream[-1]["type"] == "answer"
    steps = [e for e in stream if e["type"] == "step"]
    assert [s["node"] for s in steps][:2] == ["prepare", "model"] and "search_patches" in steps[1]["text"]
    streamed = {ev["id"]: ev for s in steps for ev in s.get("evidence", [])}
    answer = stream[-1]["answer"]
    assert answer["thread_id"] == "t-1" and answer["cited"]
    for ev in answer["evidence"]:
        assert ev["id"] in streamed and ev["bbox"] == streamed[ev["id"]]["bbox"]  # boxes came with the steps
        assert "crop" not in ev and ev["has_crop"]  # no server paths leak; crops go by evidence id

    ledger = client.get("/api/threads/t-1/evidence").json()["evidence"]
    assert {e["id"] for e in ledger} >= set(answer["cited"])
    for ev in ledger:
        crop = client.get(f"/api/threads/t-1/evidence/{ev['id']}/crop")
        assert crop.status_code == 200, crop.text
        x0, y0, x1, y1 = ev["bbox"]
        w, h = Image.open(io.BytesIO(crop.content)).size
        # saved zooms and cut hits alike show the evidence's box: its aspect, never enlarged, at most 1024 px
        assert w <= min(x1 - x0, 1024) and h <= min(y1 - y0, 1024) and max(w, h) >= min(512, max(x1 - x0, y1 - y0))
        assert abs(w / h - (x1 - x0) / (y1 - y0)) < 0.02 * (x1 - x0) / (y1 - y0) + 1 / h
    assert client.get("/api/threads/t-1/evidence/Edeadbe/crop").status_code == 404

    trace = client.get("/api/threads/t-1/trace").json()
    assert [m["type"] for m in trace["messages"]][:2] == ["human", "ai"] and not trace["busy"]
    assert trace["messages"][1]["tool_calls"][0]["name"] == "search_patches"
    assert [s["node"] for s in trace["steps"]] == [s["node"] for s in steps]
    assert "base64" not in json.dumps(trace)


def test_malformed_requests_get_clear_errors(client: TestClient) -> None:
    iid = image_id(client)
    cases = [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (json.dumps({"image": iid}).encode(), "question must be a non-empty string"),
        (json.dumps({"image": iid, "question": "   "}).encode(), "question must be a non-empty string"),
        (json.dumps({"question": "where?"}).encode(), "image must be the id"),
        (json.dumps({"image": iid, "question": "x" * 5000}).encode(), "the limit is 4000"),
        (json.dumps({"image": iid, "question": "where?", "thread": "../../x"}).encode(), "thread must be"),
    ]
    for body, message in cases:
        response = client.post("/api/ask", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400 and message in response.json()["error"], body
    assert client.get("/api/threads/bad%20thread/trace").status_code == 400
    assert client.get("/api/threads/nobody/trace").json()["messages"] == []


def test_busy_thread_is_refused_and_an_unstarted_stream_frees_it(analyst: Analyst, scene: Path, client: TestClient) -> None:
    iid = image_id(client)
    web = client.app.state.web
    lease = web.locks.acquire("tab")
    busy = client.post("/api/ask", json={"image": iid, "question": "where is the pond?", "thread": "tab"})
    assert busy.status_code == 409 and "already answering" in busy.json()["error"]
    lease.release()
    locks = ThreadLocks()
    stream = question_stream(analyst, scene, iid, "where?", "gone", locks.acquire("gone"))
    assert locks.busy("gone")
    del stream  # the client left before the response started
    gc.collect()
    assert not locks.busy("gone")


def test_serve_command_registers_images_and_refuses_bad_ones(scene: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    import uvicorn

    from rsrag.agent.interfaces.cli import main

    served: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    assert main(["serve", str(tmp_path / "missing.tif")]) == 2
    assert "no such file" in capsys.readouterr().err and not served
    code = main(["serve", str(scene), "--port", "9123", "--encoder", "rsrag-tiny-test:random", "--tiling", "vit:256",
                 "--store", str(tmp_path / "store"), "--max-upload-mb", "0.1", "--upload-dir", str(tmp_path / "up")])
    assert code == 0 and served["host"] == "127.0.0.1" and served["port"] == 9123
    assert "http://127.0.0.1:9123/" in capsys.readouterr().out
    registry = served["app"].state.web.registry
    assert [e.path for e in registry] == [scene.resolve()] and registry.max_upload_bytes == 104857
