"""The OpenAI-compatible backend over real HTTP, against a local server that speaks the chat-completions API.

The server replays scripted assistant turns (tool calls, then an answer) and records every request, so the
test checks what the real ``langchain-openai`` client sends: tool schemas, tool results, and crops as
image data URLs.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rsrag.agent.interfaces.api import Analyst
from rsrag.agent.models.backends import load_chat_model
from rsrag.tools.errors import ConfigError
from tests.rasters import write_raster
from tests.configured import settings_for


class ChatServer:
    """A minimal OpenAI chat-completions endpoint that replays scripted assistant messages."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.requests: list[dict[str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append(body)
                step = owner.script.pop(0)
                message = step(body) if callable(step) else step
                reply = {
                    "id": f"chatcmpl-{len(owner.requests)}", "object": "chat.completion", "created": 0,
                    "model": body["model"],
                    "choices": [{"index": 0, "message": message,
                                 "finish_reason": "tool_calls" if message.get("tool_calls") else "stop"}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                }
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> ChatServer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()


def tool_call(name: str, args: dict[str, Any], call_id: str) -> dict[str, Any]:
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]}


def evidence_in_last_tool_result(body: dict[str, Any]) -> list[str]:
    import re

    tool_results = [m for m in body["messages"] if m["role"] == "tool"]
    return re.findall(r"\bE[0-9a-f]{6}\b", tool_results[-1]["content"])


@pytest.fixture
def scene_path(tmp_path: Path) -> Iterator[Path]:
    rng = np.random.default_rng(5)
    yield write_raster(tmp_path / "scene.tif", rng.integers(0, 255, (3, 128, 192), dtype=np.uint8))


def test_openai_backend_drives_the_agent_over_http(tmp_path: Path, scene_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.tiny_encoder import register_tiny_model_config

    register_tiny_model_config()
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    script = [
        tool_call("search_patches", {"phrases": ["roads"], "top_k": 2}, "c1"),
        lambda body: tool_call("zoom", {"evidence_id": evidence_in_last_tool_result(body)[0]}, "c2"),
        lambda body: tool_call("answer", {"text": "Roads in the crop.", "evidence_ids": evidence_in_last_tool_result(body)[:1],
                                          "confidence": 0.7}, "c3"),
    ]
    with ChatServer(script) as server:
        with Analyst(settings_for(tmp_path, vlm__spec=f"openai:tiny-vlm@{server.url}")) as analyst:
            answer = analyst.ask(scene_path, "where are the roads?")
    assert answer.supported and answer.evidence[0].path == "zoom" and answer.backend.startswith("openai:tiny-vlm")
    first, _, third = server.requests
    assert {t["function"]["name"] for t in first["tools"]} == {"scene_info", "find_scenes", "search_catalog", "search_patches",
                                                           "lookup_knowledge", "search_similar", "rerank", "zoom", "answer"}
    assert first["messages"][0]["role"] == "system" and "where are the roads?" in json.dumps(first["messages"])
    images = [part for m in third["messages"] if m["role"] == "user" and isinstance(m["content"], list)
              for part in m["content"] if part.get("type") == "image_url"]
    assert len(images) == 1 and images[0]["image_url"]["url"].startswith("data:image/png;base64,")


def test_unknown_backend_spec() -> None:
    with pytest.raises(ConfigError, match="unknown VLM spec 'gpt5'"):
        load_chat_model("gpt5")
    with pytest.raises(ConfigError, match="names no model"):
        load_chat_model("openai:")
