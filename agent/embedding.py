"""Embedding rsrag in a larger agent system: the three routes, and the node that keeps a host's messages clean.

1. **Tools in a host graph.** :func:`rsrag.agent.analyst_tools` are LangChain tools that expect LangGraph's
   tool runtime: put them in the host's graph as ``analyst_tool_node()`` (a ``ToolNode`` whose failed calls
   carry a typed error result: kind and reason), or in its own ``ToolNode(analyst_tools(),
   handle_tool_errors=tool_error_message)``,
   give the host graph :class:`~rsrag.agent.state.AgentState` as its state (or a subclass: the tools write
   the evidence ledger and the zoom budget through its reducers) and ``context_schema=AgentContext``, and
   invoke it with ``context=AgentContext(settings)`` and a ``scene`` in the state.
2. **The graph as a subgraph.** ``host.add_node("analyst", agent_graph())`` with the host's own
   checkpointer; build that with ``serde=checkpoint_serializer()`` so rsrag's evidence and answers load
   back without "unregistered type" warnings. The host's state needs ``messages`` and ``scene`` (and
   ``evidence`` with :func:`~rsrag.agent.evidence.merge_ledger` to keep evidence across questions); the
   subgraph returns the answer, the ledger and, in ``messages``, only the question and one AI message with
   the answer: its tool calls, tool results and checks stay inside (``agent_graph(messages="all")`` hands
   them over too).
3. **MCP.** ``rsrag mcp`` (stdio, or ``--http``) or :func:`rsrag.agent.build_mcp_server` in process: tools
   ``scene_info``, ``search_patches``, ``zoom``, ``lookup_knowledge`` and the whole agent as ``ask``.

Each route runs in ``tests/unit/graphs/test_embedding.py``.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, RemoveMessage

from rsrag.agent.state import AgentState, is_question

__all__ = ["ANSWER_MESSAGE_NAME", "publish_answer"]

ANSWER_MESSAGE_NAME = "rsrag"
"""The ``name`` of the AI message an embedded graph answers with."""


def publish_answer(state: AgentState) -> dict[str, Any]:
    """Last node of an embedded analyst graph: replace the current question's internal messages (tool calls,
    tool results, answer checks) by one AI message carrying the answer, so a host's message list gets the
    answer and nothing else. The cited evidence ids travel in ``additional_kwargs["rsrag_cited"]``."""
    messages = state.get("messages") or []
    start = int(state.get("question_start") or 0)
    internal = [m for m in messages[start:] if not is_question(m) and m.id]
    answer = state.get("answer")
    reply = AIMessage(
        content=answer.text if answer is not None else "", name=ANSWER_MESSAGE_NAME,
        additional_kwargs={"rsrag_cited": list(answer.cited) if answer is not None else [],
                           "rsrag_supported": bool(answer.supported) if answer is not None else False},
    )
    return {"messages": [RemoveMessage(id=m.id) for m in internal if m.id] + [reply]}
