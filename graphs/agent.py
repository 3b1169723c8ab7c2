"""The analyst graph: the chat model and the tools in a loop until an answer is accepted.

    START -> prepare -> model --(tool calls)--> tools --(no answer yet)--> model
                          |  \--(plain text)--> finalize --(rejected once)--> model
                          \--(answer accepted or budget spent)--> END

Wiring only: the nodes live in :mod:`rsrag.agent.nodes`, the tools in :mod:`rsrag.agent.toolkit`.
Compiling the graph loads no model; the chat model comes from the runtime context of each run.
"""

from __future__ import annotations

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode

from rsrag.agent.context import AgentContext
from rsrag.agent.nodes import call_model, finalize, prepare, route_after_model, route_after_tools
from rsrag.agent.state import AgentState, InputState, OutputState
from rsrag.agent.toolkit import analyst_tools, tool_error_message


def build_agent_graph(checkpointer: BaseCheckpointSaver | None = None) -> CompiledStateGraph:
    """Compile the analyst graph, with an optional checkpointer for chat sessions."""
    builder = StateGraph(AgentState, context_schema=AgentContext, input_schema=InputState, output_schema=OutputState)
    builder.add_node("prepare", prepare)
    builder.add_node("model", call_model)
    builder.add_node("tools", ToolNode(analyst_tools(), handle_tool_errors=tool_error_message))
    builder.add_node("finalize", finalize)
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "model")
    builder.add_conditional_edges("model", route_after_model, ["tools", "model", "finalize", END])
    builder.add_conditional_edges("tools", route_after_tools, ["model", END])
    builder.add_conditional_edges("finalize", route_after_tools, ["model", END])
    return builder.compile(checkpointer=checkpointer, name="rsrag-analyst")


#: The graph for ``langgraph dev`` and for use as a subgraph (no checkpointer; the host provides one).
graph = build_agent_graph()
