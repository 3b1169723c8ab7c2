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

The compiled analyst graph as a subgraph of your own graph (it reads ``messages`` and ``scene`` and needs
an :class:`AgentContext` as the run's context), and the tools as LangChain tools:

>>> from rsrag.agent import agent_graph, analyst_tools
>>> graph = agent_graph()                                 # no checkpointer: the parent graph's is used
>>> sorted(graph.get_graph().nodes)[:3], [t.name for t in analyst_tools()][:2]
(['__end__', '__start__', 'finalize'], ['scene_info', 'search_patches'])
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_core.tools import BaseTool
    from langgraph.graph.state import CompiledStateGraph

    from rsrag.agent.interfaces.api import Analyst, Step, describe_update
    from rsrag.agent.models.backends import load_chat_model
    from rsrag.agent.context import AgentContext, Budgets
    from rsrag.agent.evidence import Answer, Evidence
    from rsrag.agent.interfaces.mcp import build_mcp_server
    from rsrag.agent.settings import Settings, load_settings
    from rsrag.agent.toolkit import answer, scene_info, search_patches, search_similar, zoom
    from rsrag.tools.raster import Scene, open_scene

_LAZY = {
    "Analyst": "rsrag.agent.interfaces.api", "Step": "rsrag.agent.interfaces.api", "describe_update": "rsrag.agent.interfaces.api",
    "AgentContext": "rsrag.agent.context", "Budgets": "rsrag.agent.context",
    "Answer": "rsrag.agent.evidence", "Evidence": "rsrag.agent.evidence",
    "Settings": "rsrag.agent.settings", "load_settings": "rsrag.agent.settings",
    "load_chat_model": "rsrag.agent.models.backends",
    "build_mcp_server": "rsrag.agent.interfaces.mcp",
    "scene_info": "rsrag.agent.toolkit", "search_patches": "rsrag.agent.toolkit",
    "search_similar": "rsrag.agent.toolkit", "zoom": "rsrag.agent.toolkit", "answer": "rsrag.agent.toolkit",
    "Scene": "rsrag.tools.raster", "open_scene": "rsrag.tools.raster",
}

__all__ = [
    "AgentContext", "Analyst", "Answer", "Budgets", "Evidence", "Scene", "Settings", "Step", "agent_graph", "analyst_tools",
    "answer", "build_mcp_server", "describe_update", "imagerag_graph", "indexer_graph", "load_chat_model", "load_settings",
    "open_analyst", "open_scene", "scene_info", "search_patches", "search_similar", "zoom",
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
    return settings.analyst(model=model) if model is not None else settings.analyst()


def agent_graph() -> CompiledStateGraph:
    """The analyst graph, compiled without a checkpointer (a parent graph or LangGraph server provides one)."""
    from rsrag.graphs.agent import build_agent_graph

    return build_agent_graph()


def imagerag_graph() -> CompiledStateGraph:
    """The fixed ImageRAG baseline pipeline graph (key phrases -> fast path -> slow path -> cues -> answer)."""
    from rsrag.graphs.imagerag import build_imagerag_graph

    return build_imagerag_graph()


def indexer_graph() -> CompiledStateGraph:
    """The one-node indexer graph (index a scene's patches; resumable)."""
    from rsrag.graphs.indexer import build_indexer_graph

    return build_indexer_graph()


def analyst_tools() -> list[BaseTool]:
    """The analyst's LangChain tools (scene_info, search_patches, search_similar, zoom, answer); they expect
    LangGraph's tool runtime with an :class:`AgentContext` context and a state holding ``scene``."""
    from rsrag.agent.toolkit import analyst_tools as tools

    return tools()
