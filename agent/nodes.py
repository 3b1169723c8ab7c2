"""The analyst graph's nodes and routers (the graph itself is wired in :mod:`rsrag.graphs.agent`)."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any, Literal

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage, ToolMessage
from langgraph.graph import END
from langgraph.runtime import Runtime

from rsrag.agent.answering import budget_answer, cited_ids, judge
from rsrag.agent.context import AgentContext, resources_for
from rsrag.agent.results import ToolResult
from rsrag.agent.state import AgentState
from rsrag.agent.toolkit import analyst_tools
from rsrag.prompts import load_prompt

#: Crops of the current question shown to the model at each step (the most recent ones).
MAX_VISUALS = 3
SYSTEM_PROMPT = "agent_system"
CATALOG_PROMPT = "agent_catalog"
"""The system prompt of a thread on a catalog of scenes."""


def prepare(state: AgentState) -> dict[str, Any]:
    """Start a question: reset the per-question counters (the evidence ledger is kept for follow-ups)."""
    return {
        "steps": 0, "started_at": time.time(), "answer_attempts": 0, "answer": None,
        "zoomed_pixels": -1,  # the reducer treats a negative update as "reset to 0"
        "question_start": max(0, len(state["messages"]) - 1),
    }


def call_model(state: AgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Ask the chat model for the next step, unless a budget has run out."""
    ctx = runtime.context
    resources = resources_for(ctx)
    steps = int(state.get("steps") or 0)
    elapsed = time.time() - float(state.get("started_at") or time.time())
    model = resources.chat_model()
    if steps >= ctx.budgets.max_steps:
        return {"answer": budget_answer(state, f"{steps} of {ctx.budgets.max_steps} steps used", resources.backend)}
    if elapsed >= ctx.budgets.max_seconds:
        return {"answer": budget_answer(state, f"{elapsed:.0f} s of {ctx.budgets.max_seconds:.0f} s used",
                                        resources.backend)}
    system = SystemMessage(content=system_prompt(state, ctx), additional_kwargs={"rsrag_scope": scope(state)})
    prompt = [system] + with_visuals(state)
    try:
        response = model.bind_tools(analyst_tools()).invoke(prompt)
    except Exception as exc:  # a server that cannot be reached is an unavailable resource, not a crash
        from rsrag.agent.models.backends import unreachable_model_error

        unreachable = unreachable_model_error(exc, resources.backend)
        if unreachable is None:
            raise
        raise unreachable from exc
    if not isinstance(response, AIMessage):
        response = AIMessage(content=str(getattr(response, "content", response)))
    update: dict[str, Any] = {"messages": [response], "steps": steps + 1}
    errors = [
        ToolMessage(
            content=f"Error: malformed tool call {bad.get('name')!r}: {bad.get('error') or 'arguments are not valid JSON'}. "
                    "Call the tool again with a JSON object of arguments.",
            tool_call_id=bad.get("id") or f"invalid-{i}", status="error",
        )
        for i, bad in enumerate(response.invalid_tool_calls or [])
    ]
    update["messages"].extend(errors)
    return update


def finalize(state: AgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """The model replied in plain text: check it as an answer (citations are read from the text)."""
    ctx = runtime.context
    last = last_ai_message(state)
    text = last.text if last is not None else ""
    verdict = judge(state, text, cited_ids(text, None), 0.5, resources_for(ctx).backend)
    if verdict.answer is not None:
        return {"answer": verdict.answer}
    known = ", ".join(state.get("evidence") or {}) or "none"
    feedback = load_prompt("answer_feedback").format(reason=verdict.reason, known_ids=known)
    return {
        "messages": [HumanMessage(content=feedback, additional_kwargs={"rsrag_feedback": True})],
        "answer_attempts": int(state.get("answer_attempts") or 0) + 1,
    }


# --- routers -----------------------------------------------------------------------------------------


def route_after_model(state: AgentState) -> Literal["tools", "model", "finalize", "__end__"]:
    if state.get("answer") is not None:
        return END
    last = last_ai_message(state)
    if last is not None and last.tool_calls:
        return "tools"
    if last is not None and last.invalid_tool_calls:
        return "model"
    return "finalize"


def route_after_tools(state: AgentState) -> Literal["model", "__end__"]:
    return END if state.get("answer") is not None else "model"


# --- prompt building ---------------------------------------------------------------------------------


def last_ai_message(state: AgentState) -> AIMessage | None:
    for message in reversed(state.get("messages", [])):
        if isinstance(message, AIMessage):
            return message
    return None


def system_prompt(state: AgentState, ctx: AgentContext) -> str:
    """The system prompt for this step: scene (or catalog), rules, remaining budget, and the known evidence ids."""
    ws = resources_for(ctx).workspace
    ledger = state.get("evidence") or {}
    evidence_block = ""
    if ledger:
        lines = [e.summary() for e in list(ledger.values())[-30:]]
        evidence_block = "\nEvidence gathered so far in this session (cite by id):\n" + "\n".join(lines)
    steps = int(state.get("steps") or 0)
    budget = {"max_steps": ctx.budgets.max_steps, "steps_left": max(0, ctx.budgets.max_steps - steps),
              "evidence_block": evidence_block}
    source, catalog = state.get("scene") or None, state.get("catalog") or None
    if catalog:
        from rsrag.tools.catalog import Catalog

        scenes = Catalog(ws.patches.store, name=catalog).scenes()
        open_line = ""
        if source:
            scene = ws.scene(source)
            open_line = f"; open now: {scene.path.name}, {scene.width} x {scene.height} px"
        return load_prompt(CATALOG_PROMPT).format(catalog_name=catalog, n_scenes=len(scenes), open_line=open_line,
                                                  **budget)
    if not source:
        from rsrag.tools.errors import QueryError

        raise QueryError("the graph needs a scene (its path or URL) or a catalog (its name) in its input")
    scene = ws.scene(source)
    crs_line = f"CRS {scene.crs}" if scene.crs else "not georeferenced"
    return load_prompt(SYSTEM_PROMPT).format(
        scene_name=scene.path.name, width=scene.width, height=scene.height, bands=scene.count, crs_line=crs_line,
        **budget,
    )


def scope(state: AgentState) -> dict[str, str | None]:
    """What the thread works on, for a chat model that reads it from the system message's
    ``additional_kwargs["rsrag_scope"]`` (the rule policy): the open scene's source and the catalog's name."""
    return {"scene": state.get("scene") or None, "catalog": state.get("catalog") or None}


def with_visuals(state: AgentState) -> list[AnyMessage]:
    """The conversation, with the latest crops of this question shown as images after their tool results.

    Images are attached only to the prompt of this step (as data URLs read from the crop files); the state
    keeps only the crops' paths.
    """
    messages = list(state.get("messages", []))
    start = int(state.get("question_start") or 0)
    crops = [
        (i, crop) for i, m in enumerate(messages)
        if i >= start and isinstance(m, ToolMessage) and (crop := ToolResult.of(m).crop)
    ][-MAX_VISUALS:]
    if not crops:
        return messages
    last_tool = max(i for i, _ in crops)
    while last_tool + 1 < len(messages) and isinstance(messages[last_tool + 1], ToolMessage):
        last_tool += 1  # images go after the whole block of tool results of that step
    blocks: list[dict[str, Any]] = []
    for _, path in crops:
        if Path(path).is_file():
            data = base64.b64encode(Path(path).read_bytes()).decode()
            blocks.append({"type": "text", "text": f"Crop {Path(path).stem}:"})
            blocks.append({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}})
    if not blocks:
        return messages
    visual = HumanMessage(content=blocks, additional_kwargs={"rsrag_visual": True})
    return messages[: last_tool + 1] + [visual] + messages[last_tool + 1:]
