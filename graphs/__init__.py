"""rsrag.graphs: LangGraph wiring only (no logic, no model loading at import time; LangGraph itself is
imported only when a builder is used)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rsrag.graphs.agent import build_agent_graph
    from rsrag.graphs.imagerag import build_imagerag_graph
    from rsrag.graphs.indexer import build_indexer_graph

_LAZY = {"build_agent_graph": "rsrag.graphs.agent", "build_imagerag_graph": "rsrag.graphs.imagerag",
         "build_indexer_graph": "rsrag.graphs.indexer"}

__all__ = ["build_agent_graph", "build_imagerag_graph", "build_indexer_graph"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rsrag.graphs' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
