"""`rsrag mcp` as a real subprocess: over stdio (what MCP clients launch), and over streamable HTTP on a port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anyio
import numpy as np
import pytest
from mcp import Client, StdioServerParameters

from tests.rasters import write_raster

TINY = "rsrag-tiny-test:random"


def launcher(*args: str) -> list[str]:
    """``python -c`` running ``rsrag ARGS`` with the tiny test encoder registered (a plain ``rsrag mcp`` would
    load the bundled encoder)."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from tests.tiny_encoder import register_tiny_model_config
        register_tiny_model_config()
        from rsrag.agent.interfaces.cli import main
        sys.exit(main({["--encoder", TINY, *args]!r}))
    """)
    return ["-c", script]


@pytest.fixture
def scene_path(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    data = np.random.default_rng(2).integers(0, 255, (3, 128, 160), dtype=np.uint8)
    return write_raster(tmp_path / "images" / "scene.tif", data)


def test_stdio_subprocess(tmp_path: Path, scene_path: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=launcher("mcp", "--images", str(scene_path.parent), "--tiling", "grid:64"),
        env={"RSRAG_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
        cwd=str(tmp_path),
    )

    async def main():  # noqa: ANN202
        with anyio.fail_after(240):
            return await session()

    async def session():  # noqa: ANN202
        async with Client(params, read_timeout_seconds=120) as client:
            names = [t.name for t in (await client.list_tools()).tools]
            zoomed = await client.call_tool("zoom", {"image": str(scene_path), "bbox": [0, 0, 64, 32]})
            answer = await client.call_tool("ask", {"image": str(scene_path), "question": "where are the roofs?"})
            denied = await client.call_tool("scene_info", {"image": "/etc/hostname"})
            return names, zoomed, answer, denied

    names, zoomed, answer, denied = anyio.run(main)
    assert {"scene_info", "search_patches", "zoom", "ask"} <= set(names)
    assert not zoomed.is_error and [c.type for c in zoomed.content] == ["text", "image"]
    assert "bbox=[0, 0, 64, 32]" in zoomed.content[0].text
    assert not answer.is_error and answer.structured_content["evidence"] and answer.structured_content["thread_id"]
    assert denied.is_error and "outside the image folders" in denied.content[0].text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_streamable_http_subprocess(tmp_path: Path, scene_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "RSRAG_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, *launcher("mcp", "--http", "--port", str(port))], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the HTTP server did not start"
                time.sleep(0.3)

        async def main():  # noqa: ANN202
            async with Client(f"http://127.0.0.1:{port}/mcp", read_timeout_seconds=120) as client:
                info = await client.call_tool("scene_info", {"image": str(scene_path)})
                return info

        info = anyio.run(main)
        assert not info.is_error and "160 x 128 px" in info.content[0].text and info.content[1].type == "image"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert f"rsrag MCP server on http://127.0.0.1:{port}/mcp" in err
