"""The fixed ImageRAG pipeline graph (a baseline to the agent):

    START -> key_phrases -> fast_path --(a confident hit)--> visual_cues -> answer -> END
                                      \\--(none, and a concept library)--> slow_path -> visual_cues

Wiring only: the nodes live in :mod:`rsrag.agent.pipeline`. No model is loaded at import time.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from rsrag.agent.context import AgentContext
from rsrag.agent.pipeline import (
    PipelineInput,
    PipelineState,
    answer_with_cues,
    fast_path,
    find_key_phrases,
    route_after_fast,
    slow_path,
    visual_cues,
)


def build_imagerag_graph() -> CompiledStateGraph:
    """Compile the ImageRAG baseline pipeline."""
    builder = StateGraph(PipelineState, context_schema=AgentContext, input_schema=PipelineInput)
    builder.add_node("key_phrases", find_key_phrases)
    builder.add_node("fast_path", fast_path)
    builder.add_node("slow_path", slow_path)
    builder.add_node("visual_cues", visual_cues)
    builder.add_node("answer", answer_with_cues)
    builder.add_edge(START, "key_phrases")
    builder.add_edge("key_phrases", "fast_path")
    builder.add_conditional_edges("fast_path", route_after_fast, ["slow_path", "visual_cues"])
    builder.add_edge("slow_path", "visual_cues")
    builder.add_edge("visual_cues", "answer")
    builder.add_edge("answer", END)
    return builder.compile(name="rsrag-imagerag-pipeline")


graph = build_imagerag_graph()
