r"""The analyst graph: the chat model and the tools in a loop until an answer is accepted.

    START -> prepare -> model --(tool calls)--> tools --(no answer yet)--> model
                          |  \--(plain text)--> finalize --(rejected once)--> model
                          \--(answer accepted or budget spent)--> END    (embedded: -> publish -> END)

Wiring only: the nodes live in :mod:`rsrag.agent.nodes`, the tools in :mod:`rsrag.agent.toolkit`.
Compiling the graph loads no model; the chat model comes from the runtime context of each run.
"""

from __future__ import annotations

from typing import Literal

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from rsrag.agent.context import AgentContext
from rsrag.agent.embedding import publish_answer
from rsrag.agent.nodes import call_model, finalize, prepare, route_after_model, route_after_tools
from rsrag.agent.state import AgentState, InputState, OutputState
from rsrag.agent.toolkit import analyst_tool_node


def build_agent_graph(checkpointer: BaseCheckpointSaver | None = None, *,
                      messages: Literal["all", "answer"] = "all") -> CompiledStateGraph[AgentState, AgentContext, InputState, OutputState]:
    """Compile the analyst graph, with an optional checkpointer for chat sessions.

    Args:
        checkpointer: where threads persist (``None``: the host graph's, or none).
        messages: ``all`` keeps every message of the run in the state and the output (chat sessions);
            ``answer`` ends with :func:`~rsrag.agent.embedding.publish_answer`, so the output's messages are
            the question and one AI message with the answer (a subgraph in a host's conversation).
    """
    builder = StateGraph(AgentState, context_schema=AgentContext, input_schema=InputState, output_schema=OutputState)
    builder.add_node("prepare", prepare)
    builder.add_node("model", call_model)
    builder.add_node("tools", analyst_tool_node())
    builder.add_node("finalize", finalize)
    end = END
    if messages == "answer":
        builder.add_node("publish", publish_answer)
        builder.add_edge("publish", END)
        end = "publish"
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "model")
    builder.add_conditional_edges("model", route_after_model, {"tools": "tools", "model": "model", "finalize": "finalize", END: end})
    builder.add_conditional_edges("tools", route_after_tools, {"model": "model", END: end})
    builder.add_conditional_edges("finalize", route_after_tools, {"model": "model", END: end})
    return builder.compile(checkpointer=checkpointer, name="rsrag-analyst")


#: The graph for ``langgraph dev`` (no checkpointer: the server provides one; every message in the output).
graph = build_agent_graph()
