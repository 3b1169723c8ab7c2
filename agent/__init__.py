"""rsrag.agent: the analyst agent's public Python API.

Ask questions about a scene, continue the conversation, read the cited evidence (sync or async); embed
the compiled LangGraph graphs as subgraphs; give the tools to your own LangChain agent. Names are
imported lazily, so ``import rsrag.agent`` loads no model and no graph library.

Ask, follow up, read the evidence (settings come from ``RSRAG_*`` variables and the settings file; the
keyword arguments of :func:`open_analyst` win over both):

>>> import numpy as np
>>> from PIL import Image
>>> Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 320, 3), dtype=np.uint8)).save("scene.png")
>>> from rsrag.agent import open_analyst
>>> with open_analyst(vlm="rule") as analyst:
...     info = analyst.index("scene.png")              # optional: the first question indexes on demand
...     answer = analyst.ask("scene.png", "where are the red roofs?")
...     follow_up = analyst.ask("scene.png", "and the fields?", thread_id=answer.thread_id)
...     ledger = analyst.evidence(answer.thread_id)   # every evidence record of the thread, by id
>>> info.n_patches > 0 and answer.supported and set(answer.cited) <= set(ledger)
True
>>> ev = answer.evidence[0]
>>> (ev.id in answer.text, len(ev.bbox), ev.path in ("fast", "zoom"))
(True, 4, True)

Async, and streaming the steps as they happen:

>>> import asyncio
>>> async def main() -> list[str]:
...     with open_analyst() as analyst:
...         answer = await analyst.aask("scene.png", "where are the fields?")
...         return [step.node async for step in analyst.astream("scene.png", "and the roads?", answer.thread_id)]
>>> nodes = asyncio.run(main())
>>> nodes[0], nodes[-1]
('prepare', 'tools')

Embedding rsrag in your own agent system, three ways (see :mod:`rsrag.agent.embedding`; each runs in
``tests/unit/graphs/test_embedding.py``):

1. the tools in your graph's ``ToolNode``, with :class:`AgentState` (its reducers keep the evidence) as
   the state and :class:`AgentContext` as the context;
2. the compiled analyst graph as a subgraph under your own checkpointer (built with
   :func:`checkpoint_serializer`); it answers your conversation with one AI message and keeps its tool
   calls to itself (``agent_graph(messages="all")`` hands them over);
3. MCP: ``rsrag mcp``, or :func:`build_mcp_server` in process.

>>> from rsrag.agent import AgentState, agent_graph, analyst_tools
>>> graph = agent_graph()                                 # no checkpointer: the parent graph's is used
>>> sorted(graph.get_graph().nodes)[:3], "publish" in graph.get_graph().nodes
(['__end__', '__start__', 'finalize'], True)
>>> [t.name for t in analyst_tools()]
['scene_info', 'find_scenes', 'search_catalog', 'search_patches', 'lookup_knowledge', 'search_similar', 'rerank', 'zoom', 'answer']
>>> {"messages", "scene", "catalog", "evidence", "zoomed_pixels"} <= set(AgentState.__annotations__)
True
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from langchain_core.tools import BaseTool
    from langgraph.graph.state import CompiledStateGraph

    from rsrag.agent.context import AgentContext, Budgets, Resources
    from rsrag.agent.evidence import Answer, Evidence, merge_ledger
    from rsrag.agent.interfaces.api import Analyst, Step, checkpoint_serializer, describe_update
    from rsrag.agent.interfaces.mcp import build_mcp_server
    from rsrag.agent.models.backends import load_chat_model
    from rsrag.agent.settings import Settings, load_settings
    from rsrag.agent.state import AgentState, InputState, OutputState
    from rsrag.agent.toolkit import (
        analyst_tool_node,
        answer,
        lookup_knowledge,
        rerank,
        scene_info,
        search_patches,
        search_similar,
        tool_error_message,
        zoom,
    )
    from rsrag.tools.raster import Scene, open_scene

_LAZY = {
    "Analyst": "rsrag.agent.interfaces.api", "Step": "rsrag.agent.interfaces.api",
    "checkpoint_serializer": "rsrag.agent.interfaces.api", "describe_update": "rsrag.agent.interfaces.api",
    "AgentContext": "rsrag.agent.context", "Budgets": "rsrag.agent.context", "Resources": "rsrag.agent.context",
    "Answer": "rsrag.agent.evidence", "Evidence": "rsrag.agent.evidence", "merge_ledger": "rsrag.agent.evidence",
    "Settings": "rsrag.agent.settings", "load_settings": "rsrag.agent.settings",
    "AgentState": "rsrag.agent.state", "InputState": "rsrag.agent.state", "OutputState": "rsrag.agent.state",
    "load_chat_model": "rsrag.agent.models.backends",
    "build_mcp_server": "rsrag.agent.interfaces.mcp",
    "scene_info": "rsrag.agent.toolkit", "search_patches": "rsrag.agent.toolkit", "lookup_knowledge": "rsrag.agent.toolkit",
    "search_similar": "rsrag.agent.toolkit", "rerank": "rsrag.agent.toolkit", "zoom": "rsrag.agent.toolkit",
    "answer": "rsrag.agent.toolkit", "tool_error_message": "rsrag.agent.toolkit",
    "analyst_tool_node": "rsrag.agent.toolkit",
    "Scene": "rsrag.tools.raster", "open_scene": "rsrag.tools.raster",
}

__all__ = [
    "AgentContext", "AgentState", "Analyst", "Answer", "Budgets", "Evidence", "InputState", "OutputState", "Resources",
    "Scene", "Settings", "Step", "agent_graph", "analyst_tool_node", "analyst_tools", "answer", "build_mcp_server",
    "checkpoint_serializer", "describe_update", "imagerag_graph", "indexer_graph", "load_chat_model", "load_settings",
    "lookup_knowledge", "merge_ledger", "open_analyst", "open_scene", "rerank", "scene_info", "search_patches",
    "search_similar", "tool_error_message", "zoom",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rsrag.agent' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def open_analyst(
    *,
    vlm: str | None = None,
    encoder: str | None = None,
    store: str | os.PathLike[str] | None = None,
    tiling: str | None = None,
    settings_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    model: Any = None,
) -> Analyst:
    """An :class:`Analyst` configured by the settings (defaults < file < ``RSRAG_*`` < these arguments).

    Args:
        vlm: chat model spec (``rule``, ``openai:MODEL@URL``, ``transformers:PATH``).
        encoder: encoder spec. store: embedded store folder. tiling: tiling used to index scenes.
        settings_file: a TOML settings file (default: ``$RSRAG_SETTINGS`` or ``$RSRAG_HOME/settings.toml``).
        overrides: more explicit settings by dotted key, e.g. ``{"retrieval.top_k": 8, "budgets.max_steps": 6}``.
        model: a ready LangChain chat model with tool calling (wins over ``vlm``).

    Raises:
        ConfigError: an invalid setting (the message names the key and where it came from).
    """
    from rsrag.agent.settings import load_settings as load

    given = {"vlm.spec": vlm, "encoder.spec": encoder, "store.path": store, "store.tiling": tiling, **(overrides or {})}
    settings = load(settings_file, given)
    return settings.analyst(model=model)


def agent_graph(*, messages: Literal["answer", "all"] = "answer") -> CompiledStateGraph[Any, Any, Any, Any]:
    """The analyst graph for embedding, compiled without a checkpointer (the host graph's is used).

    Args:
        messages: ``answer``: the output's messages are the question and one AI message with the answer
            (the run's tool calls and results stay inside); ``all``: every message of the run.
    """
    from rsrag.graphs.agent import build_agent_graph

    return build_agent_graph(messages=messages)


def imagerag_graph() -> CompiledStateGraph[Any, Any, Any, Any]:
    """The fixed ImageRAG baseline pipeline graph (key phrases -> fast path -> slow path -> cues -> answer)."""
    from rsrag.graphs.imagerag import build_imagerag_graph

    return build_imagerag_graph()


def indexer_graph() -> CompiledStateGraph[Any, Any, Any, Any]:
    """The one-node indexer graph (index a scene's patches; resumable)."""
    from rsrag.graphs.indexer import build_indexer_graph

    return build_indexer_graph()


def analyst_tools() -> list[BaseTool]:
    """All of the analyst's LangChain tools (scene_info, search_patches, lookup_knowledge, search_similar,
    rerank, zoom, answer). They expect LangGraph's tool runtime: an :class:`AgentContext` context and an
    :class:`AgentState` state holding ``scene``; run them in :func:`analyst_tool_node` (a ``ToolNode`` whose
    failed calls carry a typed error result), or in a ``ToolNode`` with ``handle_tool_errors=tool_error_message``
    (failed calls as text only)."""
    from rsrag.agent.toolkit import analyst_tools as tools

    return tools()
