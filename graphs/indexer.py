"""The indexer as a one-node graph (``START -> index -> END``), for ``langgraph dev`` and LangGraph servers.

Wiring only: the node lives in :mod:`rsrag.agent.indexer_job`.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from rsrag.agent.context import AgentContext
from rsrag.agent.indexer_job import IndexJobInput, IndexJobState, run_index_job


def build_indexer_graph() -> CompiledStateGraph:
    """Compile the indexer graph."""
    builder = StateGraph(IndexJobState, context_schema=AgentContext, input_schema=IndexJobInput)
    builder.add_node("index", run_index_job)
    builder.add_edge(START, "index")
    builder.add_edge("index", END)
    return builder.compile(name="rsrag-indexer")


graph = build_indexer_graph()
