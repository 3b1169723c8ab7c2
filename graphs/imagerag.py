"""The fixed ImageRAG pipeline graph (a baseline to the agent):

    START -> key_phrases -> retrieve (the cascade: fast, slow when nothing is confident, fused) -> visual_cues
          -> answer -> END

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
    find_key_phrases,
    retrieve,
    visual_cues,
)


def build_imagerag_graph() -> CompiledStateGraph:
    """Compile the ImageRAG baseline pipeline."""
    builder = StateGraph(PipelineState, context_schema=AgentContext, input_schema=PipelineInput)
    builder.add_node("key_phrases", find_key_phrases)
    builder.add_node("retrieve", retrieve)
    builder.add_node("visual_cues", visual_cues)
    builder.add_node("answer", answer_with_cues)
    builder.add_edge(START, "key_phrases")
    builder.add_edge("key_phrases", "retrieve")
    builder.add_edge("retrieve", "visual_cues")
    builder.add_edge("visual_cues", "answer")
    builder.add_edge("answer", END)
    return builder.compile(name="rsrag-imagerag-pipeline")


graph = build_imagerag_graph()
