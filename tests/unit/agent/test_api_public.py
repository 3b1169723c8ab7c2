"""The public Python API of ``rsrag.agent``: its documented examples run, names resolve lazily, graphs embed
as subgraphs, the tools are LangChain tools."""

from __future__ import annotations

import doctest
import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pytest
from langchain_core.messages import AnyMessage, HumanMessage
from langchain_core.tools import BaseTool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

import rsrag.agent
from rsrag.agent.context import AgentContext
from tests.rasters import write_raster
from tests.scripted import ScriptedChatModel, call, last_evidence

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
        assert (ctx.vlm, ctx.top_k, ctx.budgets.max_steps, ctx.workspace.tiling) == ("rule", 9, 4, "grid:32")
        assert ctx.workspace.encoder_spec == TINY


def test_tools_are_langchain_tools() -> None:
    tools = rsrag.agent.analyst_tools()
    assert all(isinstance(t, BaseTool) for t in tools)
    names = [t.name for t in tools]
    assert {"scene_info", "search_patches", "search_similar", "zoom", "answer"} <= set(names)
    assert rsrag.agent.zoom is tools[names.index("zoom")]
    schema = rsrag.agent.zoom.tool_call_schema.model_json_schema()
    assert {"evidence_id", "bbox", "lonlat_bbox"} <= set(schema["properties"]) and "runtime" not in schema["properties"]


class ParentState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    scene: str
    answer: Any
    report: str


def test_agent_graph_runs_as_a_subgraph(tmp_path: Path) -> None:
    from tests.tiny_encoder import register_tiny_model_config

    register_tiny_model_config()
    scene = write_raster(tmp_path / "s.tif", np.random.default_rng(1).integers(0, 255, (3, 128, 128), dtype=np.uint8))
    model = ScriptedChatModel(steps=[
        call("search_patches", phrases=["roofs"], top_k=2),
        lambda msgs: call("answer", text=f"Roofs at {last_evidence(msgs)[0]}.", evidence_ids=last_evidence(msgs)[:1]),
    ])

    def report(state: ParentState) -> dict[str, Any]:
        return {"report": json.dumps({"cited": state["answer"].cited})}

    parent = StateGraph(ParentState, context_schema=AgentContext)
    parent.add_node("analyst", rsrag.agent.agent_graph())
    parent.add_node("report", report)
    parent.add_edge(START, "analyst")
    parent.add_edge("analyst", "report")
    parent.add_edge("report", END)
    context = AgentContext(encoder=TINY, store=str(tmp_path / "store"), tiling="grid:64", model=model,
                           crop_dir=tmp_path / "crops")
    out = parent.compile().invoke({"messages": [HumanMessage("where are the roofs?")], "scene": str(scene)},
                                  context=context)
    assert out["answer"].supported and json.loads(out["report"])["cited"] == out["answer"].cited
    assert {"prepare", "model", "tools"} <= set(rsrag.agent.agent_graph().get_graph().nodes)
    assert "fast_path" in rsrag.agent.imagerag_graph().get_graph().nodes
    assert "index" in rsrag.agent.indexer_graph().get_graph().nodes
