"""The public Python API of ``rsrag.agent``: its documented examples run, names resolve lazily, graphs embed
as subgraphs, the tools are LangChain tools."""

from __future__ import annotations

import doctest
import subprocess
import sys
from pathlib import Path

import pytest
from langchain_core.tools import BaseTool

import rsrag.agent

TINY = "rsrag-tiny-test:random"


@pytest.fixture
def tiny_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings for the examples: the tiny random encoder and a small grid, through the environment."""
    from tests.tiny_encoder import register_tiny_model_config

    register_tiny_model_config()
    monkeypatch.setenv("RSRAG_ENCODER__SPEC", TINY)
    monkeypatch.setenv("RSRAG_STORE__TILING", "grid:64")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_documented_examples_run(tiny_settings: Path) -> None:
    failures, attempted = doctest.testmod(rsrag.agent, optionflags=doctest.ELLIPSIS, verbose=False)
    assert attempted >= 10 and failures == 0
    assert (tiny_settings / "scene.png").is_file()


def test_import_is_light_and_names_resolve() -> None:
    code = ("import sys, rsrag.agent as a; heavy = [m for m in ('torch', 'langgraph', 'open_clip', 'mcp') if m in sys.modules];"
            "print(heavy)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
    assert set(rsrag.agent._LAZY) <= set(rsrag.agent.__all__)
    for name in rsrag.agent.__all__:
        assert getattr(rsrag.agent, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        rsrag.agent.nope  # noqa: B018
    assert (Path(rsrag.agent.__file__).parent / "py.typed").is_file()


def test_open_analyst_arguments_beat_the_environment(tiny_settings: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSRAG_RETRIEVAL__TOP_K", "9")
    monkeypatch.setenv("RSRAG_VLM__SPEC", "openai:some-model@http://localhost:9/v1")
    with rsrag.agent.open_analyst(vlm="rule", tiling="grid:32", overrides={"budgets.max_steps": 4}) as analyst:
        ctx = analyst.context
        assert (ctx.vlm, ctx.top_k, ctx.budgets.max_steps, analyst.workspace.tiling) == ("rule", 9, 4, "grid:32")
        assert analyst.workspace.encoder_spec == TINY


def test_tools_are_langchain_tools() -> None:
    tools = rsrag.agent.analyst_tools()
    assert all(isinstance(t, BaseTool) for t in tools)
    names = [t.name for t in tools]
    assert {"scene_info", "search_patches", "search_similar", "zoom", "answer"} <= set(names)
    assert rsrag.agent.zoom is tools[names.index("zoom")]
    schema = rsrag.agent.zoom.tool_call_schema.model_json_schema()
    assert {"evidence_id", "bbox", "lonlat_bbox"} <= set(schema["properties"]) and "runtime" not in schema["properties"]


def test_compiled_graphs_and_their_nodes() -> None:
    """The three graphs compile without loading anything (the embedding routes run in tests/unit/graphs/test_embedding.py)."""
    assert {"prepare", "model", "tools", "publish"} <= set(rsrag.agent.agent_graph().get_graph().nodes)
    assert "publish" not in rsrag.agent.agent_graph(messages="all").get_graph().nodes
    assert "retrieve" in rsrag.agent.imagerag_graph().get_graph().nodes
    assert "index" in rsrag.agent.indexer_graph().get_graph().nodes
