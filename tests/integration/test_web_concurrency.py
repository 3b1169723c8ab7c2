"""A real server under load and abuse: 16 clients asking at once on a freshly started server, five times,
with zero failures; an oversized /api/ask body refused before it is read; an upload aborted mid-body."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from rsrag.agent.interfaces.web import create_app
from tests.rasters import write_raster
from tests.web_server import running, tiny_analyst

CLIENTS = 16
ROUNDS = 5


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    data = np.random.default_rng(3).integers(0, 255, (3, 256, 256), dtype=np.uint8)
    return write_raster(tmp_path / "scene.tif", data)


def _ask(base: str, image: str, n: int, out: list[str]) -> None:
    try:
        with httpx.Client(timeout=120) as client:
            response = client.post(f"{base}/api/ask", json={"image": image, "question": f"where are the roofs? ({n})",
                                                             "thread": f"client-{n}"})
            events = [json.loads(line) for line in response.text.splitlines() if line.strip()]
        errors = [e for e in events if e.get("type") == "error"]
        if response.status_code != 200 or errors or not events or events[-1].get("type") != "answer":
            out.append(f"client {n}: HTTP {response.status_code} {errors[:1] or events[-1:]}")
    except Exception as exc:  # a failure of any kind is counted, not raised in the worker thread
        out.append(f"client {n}: {type(exc).__name__}: {exc}")


def test_sixteen_clients_on_a_fresh_server_five_times(scene: Path, tmp_path: Path) -> None:
    failures: list[str] = []
    for round_ in range(ROUNDS):
        with tiny_analyst(tmp_path / f"round-{round_}", tiling="grid:64") as analyst:  # a fresh sessions file
            with running(create_app(analyst, [scene], upload_dir=tmp_path / "up")) as base:
                image = httpx.get(f"{base}/api/images").json()["images"][0]["id"]
                workers = [threading.Thread(target=_ask, args=(base, image, n, failures)) for n in range(CLIENTS)]
                for w in workers:
                    w.start()
                for w in workers:
                    w.join(timeout=300)
                assert not any(w.is_alive() for w in workers), "a client hung"
            for n in range(CLIENTS):  # every question landed in the sessions file and the trace
                assert analyst.evidence(f"client-{n}") is not None
                assert analyst.tracer.store.verify(f"client-{n}").ok
    assert failures == [], f"{len(failures)} of {CLIENTS * ROUNDS} questions failed: {failures[:3]}"


def _raw(base: str, head: bytes, body_chunks: int = 0, chunk: bytes = b"") -> tuple[bytes, int]:
    """Send a request by hand; returns the response head and how many body chunks went out before it came."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        sent = 0
        sock.setblocking(False)
        reply = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and b"\r\n\r\n" not in reply:
            try:
                reply += sock.recv(65536)
                continue
            except BlockingIOError:
                pass
            if sent < body_chunks:
                try:
                    sock.sendall(chunk)
                    sent += 1
                except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                    time.sleep(0.01)
            else:
                time.sleep(0.01)
        return reply, sent


def test_an_oversized_ask_body_is_refused_before_it_is_read(scene: Path, tmp_path: Path) -> None:
    with tiny_analyst(tmp_path / "agent") as analyst, running(create_app(analyst, [scene])) as base:
        started = time.monotonic()
        reply, _ = _raw(base, b"POST /api/ask HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                              b"Content-Length: 314572800\r\n\r\n")  # 300 MB announced, nothing sent
        assert reply.startswith(b"HTTP/1.1 413") and time.monotonic() - started < 5
        piece = b"10000\r\n" + b" " * 0x10000 + b"\r\n"  # 64 KiB chunks, as many as the server will take
        reply, sent = _raw(base, b"POST /api/ask HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                           body_chunks=5000, chunk=piece)
        assert reply.startswith(b"HTTP/1.1 413") and sent < 100, sent  # stopped near the limit, not at 320 MB


def test_an_upload_aborted_mid_body_keeps_nothing_and_logs_no_traceback(scene: Path, tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    uploads = tmp_path / "up"
    with tiny_analyst(tmp_path / "agent") as analyst, running(create_app(analyst, [scene], upload_dir=uploads)) as base:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /api/images?name=a.tif HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n"
                         + b"II*\x00" + b"\0" * 4096)
            time.sleep(0.3)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("aborted" in r.getMessage() for r in caplog.records):
            time.sleep(0.05)
        assert httpx.get(f"{base}/api/images").status_code == 200  # the server is fine
    assert any("aborted by the client" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]
    assert not list(uploads.glob("upload-*"))
