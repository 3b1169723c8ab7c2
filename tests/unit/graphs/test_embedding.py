"""The three documented ways to embed rsrag in a larger agent system, each run end to end.

1. rsrag's tools in a host graph's own ``ToolNode``, with the documented state (:class:`AgentState`);
2. the analyst graph as a subgraph under the host's own checkpointer (with rsrag's serializer);
3. MCP (the in-process server a client talks to).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pytest
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode, tools_condition
from typing_extensions import TypedDict

import rsrag.agent
from rsrag.agent import AgentContext, AgentState, Evidence, merge_ledger
from tests.configured import settings_for
from tests.rasters import write_raster
from tests.scripted import ScriptedChatModel, call, last_evidence


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    return write_raster(tmp_path / "s.tif", np.random.default_rng(3).integers(0, 255, (3, 128, 128), dtype=np.uint8))


def host_with_tool_node(model: ScriptedChatModel, state: type, node: Any = None) -> Any:
    """A host agent of its own making: its model node, and rsrag's tools in a plain ``ToolNode`` (or ``node``)."""

    def agent(s: dict[str, Any]) -> dict[str, Any]:
        return {"messages": [model.invoke(s["messages"])]}

    builder = StateGraph(state, context_schema=AgentContext)
    builder.add_node("agent", agent)
    builder.add_node("tools", node if node is not None else
                     ToolNode(rsrag.agent.analyst_tools(), handle_tool_errors=rsrag.agent.tool_error_message))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition, ["tools", END])
    builder.add_edge("tools", "agent")
    return builder.compile()


def search_then_zoom() -> ScriptedChatModel:
    return ScriptedChatModel(steps=[
        call("search_patches", phrases=["roofs"], top_k=2),
        lambda msgs: call("zoom", evidence_id=last_evidence(msgs)[0]),
        lambda msgs: AIMessage(content=f"done: {msgs[-1].content[:40]}"),
    ])


def test_route_1_tools_in_a_host_tool_node_keep_their_evidence(tmp_path: Path, scene: Path) -> None:
    context = AgentContext(settings_for(tmp_path))
    graph = host_with_tool_node(search_then_zoom(), AgentState)
    out = graph.invoke({"messages": [HumanMessage("where are the roofs?")], "scene": str(scene)}, context=context)
    tools = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert [t.name for t in tools] == ["search_patches", "zoom"] and all(t.status != "error" for t in tools)
    assert all(isinstance(e, Evidence) for e in out["evidence"].values())
    zooms = [e for e in out["evidence"].values() if e.path == "zoom"]
    assert len(zooms) == 1 and Path(zooms[0].crop or "").is_file()
    assert out["zoomed_pixels"] > 0


def test_route_1_without_the_documented_state_the_zoom_cannot_find_the_evidence(tmp_path: Path, scene: Path) -> None:
    """The failure the documented state prevents: a plain ``messages`` + ``scene`` state drops the ledger."""

    class Plain(TypedDict):
        messages: Annotated[list[AnyMessage], add_messages]
        scene: str

    graph = host_with_tool_node(search_then_zoom(), Plain)
    out = graph.invoke({"messages": [HumanMessage("where are the roofs?")], "scene": str(scene)},
                       context=AgentContext(settings_for(tmp_path)))
    zoom = [m for m in out["messages"] if isinstance(m, ToolMessage)][-1]
    assert zoom.status == "error" and "unknown region evidence id" in zoom.text


def test_route_1_the_analyst_tool_node_gives_failed_calls_a_typed_result(tmp_path: Path, scene: Path) -> None:
    from rsrag.agent.results import ToolResult

    class Plain(TypedDict):
        messages: Annotated[list[AnyMessage], add_messages]
        scene: str

    graph = host_with_tool_node(search_then_zoom(), Plain, node=rsrag.agent.analyst_tool_node())
    out = graph.invoke({"messages": [HumanMessage("where are the roofs?")], "scene": str(scene)},
                       context=AgentContext(settings_for(tmp_path)))
    zoom = [m for m in out["messages"] if isinstance(m, ToolMessage)][-1]
    result = ToolResult.of(zoom)
    assert zoom.status == "error" and result.status == "error" and result.error_kind == "argument"
    assert "unknown region evidence id" in (result.message or "")
    assert "Correct the arguments" in zoom.text and "Correct the arguments" not in (result.message or "")


class HostState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    scene: str
    evidence: Annotated[dict[str, Evidence], merge_ledger]
    answer: Any
    report: str


def earlier_ids(messages: list[Any]) -> list[str]:
    """The evidence ids the follow-up question quotes (ids the first question produced)."""
    text = next(str(m.content) for m in reversed(messages) if "EVIDENCE=" in str(m.content))
    return sorted(json.loads(text.split("EVIDENCE=")[1]))


def two_questions() -> ScriptedChatModel:
    return ScriptedChatModel(steps=[
        call("search_patches", phrases=["roofs"], top_k=2),
        lambda msgs: call("answer", text=f"Roofs at {last_evidence(msgs)[0]}.", evidence_ids=last_evidence(msgs)[:1]),
        # the follow-up zooms into evidence of the first question: the host carried the ledger over
        lambda msgs: call("zoom", evidence_id=earlier_ids(msgs)[0]),
        lambda msgs: call("answer", text=f"Closer: {last_evidence(msgs)[0]}.", evidence_ids=last_evidence(msgs)[:1]),
    ])


def test_route_2_subgraph_under_the_host_checkpointer(tmp_path: Path, scene: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = two_questions()
    settings = settings_for(tmp_path)
    resources = rsrag.agent.Resources(settings, model=model)

    def report(state: HostState) -> dict[str, Any]:
        return {"report": json.dumps({"cited": state["answer"].cited})}

    host = StateGraph(HostState, context_schema=AgentContext)
    host.add_node("analyst", rsrag.agent.agent_graph())
    host.add_node("report", report)
    host.add_edge(START, "analyst")
    host.add_edge("analyst", "report")
    host.add_edge("report", END)
    graph = host.compile(checkpointer=InMemorySaver(serde=rsrag.agent.checkpoint_serializer()))
    config = resources.config({"configurable": {"thread_id": "host-1"}})
    context = AgentContext(settings)

    with caplog.at_level(logging.WARNING):  # an unregistered or blocked type in a checkpoint is logged
        first = graph.invoke({"messages": [HumanMessage("where are the roofs?")], "scene": str(scene)}, config,
                             context=context)
        ids = sorted(first["evidence"])
        second = graph.invoke({"messages": [HumanMessage(f"zoom closer EVIDENCE={json.dumps(ids)}")]}, config,
                              context=context)
        state = graph.get_state(config).values  # the checkpoint loads back with rsrag's types
    assert not [r for r in caplog.records if "unregistered" in r.getMessage() or "Blocked" in r.getMessage()]
    assert first["answer"].supported and json.loads(first["report"])["cited"] == first["answer"].cited
    # the host's conversation holds the questions and one answer message each: no tool calls, no tool results
    kinds = [(m.type, getattr(m, "name", None)) for m in second["messages"]]
    assert kinds == [("human", None), ("ai", "rsrag"), ("human", None), ("ai", "rsrag")]
    assert second["messages"][1].content == first["answer"].text
    assert second["answer"].supported and second["answer"].evidence[0].path == "zoom"
    assert set(ids) <= set(state["evidence"]) and isinstance(state["answer"], type(first["answer"]))


def test_route_2_all_messages_when_asked(tmp_path: Path, scene: Path) -> None:
    model = ScriptedChatModel(steps=[
        call("search_patches", phrases=["roofs"], top_k=1),
        lambda msgs: call("answer", text=f"Roofs at {last_evidence(msgs)[0]}.", evidence_ids=last_evidence(msgs)[:1]),
    ])
    settings = settings_for(tmp_path)
    host = StateGraph(HostState, context_schema=AgentContext)
    host.add_node("analyst", rsrag.agent.agent_graph(messages="all"))
    host.add_edge(START, "analyst")
    out = host.compile().invoke({"messages": [HumanMessage("where are the roofs?")], "scene": str(scene)},
                                rsrag.agent.Resources(settings, model=model).config(), context=AgentContext(settings))
    assert [m.type for m in out["messages"]] == ["human", "ai", "tool", "ai", "tool"]


def test_route_3_mcp(tmp_path: Path, scene: Path) -> None:
    from mcp import Client

    settings = settings_for(tmp_path)

    async def session() -> tuple[Any, Any]:
        with rsrag.agent.Analyst(settings) as analyst:
            async with Client(rsrag.agent.build_mcp_server(analyst, image_roots=[tmp_path])) as client:
                found = await client.call_tool("search_patches", {"image": str(scene), "phrases": ["roofs"], "top_k": 2})
                first = (found.structured_content or {})["regions"][0]
                zoomed = await client.call_tool("zoom", {"image": str(scene), "evidence_id": first["id"]})
                return found, zoomed

    found, zoomed = asyncio.run(session())
    assert not found.is_error and not zoomed.is_error
    assert any(getattr(c, "type", "") == "image" for c in zoomed.content)
