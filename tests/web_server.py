"""Helpers for the web workspace tests: a tiny-encoder analyst and a real uvicorn server in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from rsrag.agent.interfaces.api import Analyst
from tests.configured import settings_for

TINY = "rsrag-tiny-test:random"


def tiny_analyst(folder: Path, tiling: str = "vit:256", encoder: str | None = TINY) -> Analyst:
    """A rule-policy analyst over the tiny random encoder (or ``encoder``), with everything under ``folder``."""
    from tests.tiny_encoder import register_tiny_model_config

    register_tiny_model_config()
    return Analyst(settings_for(folder, encoder__spec=encoder, store__tiling=tiling, vlm__spec="rule"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running(app: Starlette) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yields the base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
