"""The trace recorder: a LangChain callback handler that turns a graph run into trace events as it goes.

Passed in the run config's ``callbacks``, it sees every node, chat model and tool run of the analyst
graph. When a node finishes it emits that step's events at once (a model call, one event per tool call,
an answer, a node summary), joined with what the model and tool callbacks measured (latency, tokens, the
model's id, tool arguments and errors). Nothing is buffered past the end of a step, so a run that crashes
keeps every finished step.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage, message_to_dict
from langgraph.types import Command

from rsrag.agent.context import Resources
from rsrag.agent.evidence import Answer, Evidence
from rsrag.agent.results import ToolResult
from rsrag.agent.trace.events import AnswerRecord, EvidenceRecord, TokenUsage, TraceEvent, clip

log = logging.getLogger(__name__)
NODE_PROMPTS = {"model": "agent_system", "finalize": "answer_feedback"}


@dataclass
class _Node:
    name: str
    step: int | None
    ns: str | None
    start: float


@dataclass
class _Call:
    """A chat model or tool call seen by the callbacks."""

    start: float
    end: float | None = None
    name: str | None = None
    args: dict[str, Any] | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def latency_ms(self) -> float | None:
        return round((self.end - self.start) * 1000, 3) if self.end is not None else None


def prompt_digest(messages: list[BaseMessage]) -> str:
    """SHA-256 of the prompt's messages (types and contents): what the model saw, without storing it."""
    digest = hashlib.sha256()
    for m in messages:
        digest.update(m.type.encode())
        digest.update(json.dumps(m.content, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _parts(outputs: Any) -> list[dict[str, Any]]:
    """A node's output as a list of state updates (a tool node returns one ``Command`` per tool call)."""
    items = outputs if isinstance(outputs, list) else [outputs]
    parts = []
    for item in items:
        update = item.update if isinstance(item, Command) else item
        if isinstance(update, dict):
            parts.append(update)
    return parts


class TraceRecorder(BaseCallbackHandler):
    """Callback handler recording one run of the analyst graph.

    Args:
        emit: called with each finished event (and the time its step started).
        run_id / thread_id: the run and its thread.
        resources: the run's resources (for the chat model's and the backend's names).
    """

    raise_error = False
    run_inline = True

    def __init__(self, emit: Callable[[TraceEvent, float], None], run_id: str, thread_id: str,
                 resources: Resources) -> None:
        self.emit_event = emit
        self.run_id, self.thread_id, self.resources = run_id, thread_id, resources
        self.root: UUID | None = None
        self.steps: list[int] = []
        self.failures: list[str] = []
        self._parents: dict[UUID, UUID | None] = {}
        self._nodes: dict[UUID, _Node] = {}
        self._chats: dict[UUID, _Call] = {}          # by node run id
        self._tools: dict[str, _Call] = {}           # by tool call id
        self._tool_runs: dict[UUID, str] = {}
        self._requested: dict[str, tuple[str, dict[str, Any]]] = {}  # tool call id -> (name, args) asked by the model
        self._lock = threading.RLock()

    # --- bookkeeping ------------------------------------------------------------------------------------

    def _node_of(self, run_id: UUID | None) -> UUID | None:
        seen = 0
        while run_id is not None and run_id not in self._nodes and seen < 64:
            run_id, seen = self._parents.get(run_id), seen + 1
        return run_id if run_id in self._nodes else None

    def _event(self, node: _Node, kind: str, **values: Any) -> TraceEvent:
        return TraceEvent(run_id=self.run_id, thread_id=self.thread_id, time=time.time(), kind=kind,  # type: ignore[arg-type]
                          node=node.name, step=node.step, checkpoint_ns=node.ns, **values)

    def _emit(self, event: TraceEvent, started: float) -> None:
        try:
            self.emit_event(event, started)
        except Exception as exc:  # a trace write must never break the analyst's run; it is reported instead
            self.failures.append(f"{event.label()}: {exc}")
            log.warning("trace event not written: %s", exc)

    # --- callbacks --------------------------------------------------------------------------------------

    def on_chain_start(self, serialized: dict[str, Any] | None, inputs: Any, *, run_id: UUID,
                       parent_run_id: UUID | None = None, metadata: dict[str, Any] | None = None,
                       **kwargs: Any) -> None:
        with self._lock:
            self._parents[run_id] = parent_run_id
            md = metadata or {}
            if parent_run_id is None and self.root is None:
                self.root = run_id
            elif parent_run_id == self.root and md.get("langgraph_node") == kwargs.get("name"):
                step = md.get("langgraph_step")
                self._nodes[run_id] = _Node(str(kwargs.get("name")), step, md.get("langgraph_checkpoint_ns"), time.time())
                if isinstance(step, int):
                    self.steps.append(step)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            node = self._nodes.pop(run_id, None)
            if node is None:
                return
            chat = self._chats.pop(run_id, None)
            try:
                events = self._node_events(node, _parts(outputs), chat)
            except Exception as exc:  # never break the run; keep a record that the step could not be described
                events = [self._event(node, "error", status="error", error=f"trace recorder: {exc}")]
            for event in events:
                self._emit(event, node.start)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            node = self._nodes.pop(run_id, None)
            if node is None:
                return
            chat = self._chats.pop(run_id, None)
            failing = [c for c in self._tools.values() if c.error or c.end is None]
            tool = failing[0].name if failing else None
            event = self._event(node, "error", status="error", tool=tool, error=f"{type(error).__name__}: {error}",
                                latency_ms=round((time.time() - node.start) * 1000, 3),
                                model=chat.name if chat else None)
            self._emit(event, node.start)

    def on_chat_model_start(self, serialized: dict[str, Any] | None, messages: list[list[BaseMessage]], *,
                            run_id: UUID, parent_run_id: UUID | None = None,
                            metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        with self._lock:
            self._parents[run_id] = parent_run_id
            node = self._node_of(run_id)
            if node is None:
                return
            params, md = kwargs.get("invocation_params") or {}, metadata or {}
            name = params.get("model") or params.get("model_name") or md.get("ls_model_name") or kwargs.get("name") \
                or (serialized or {}).get("name")
            prompt = messages[0] if messages else []
            images = sum(1 for m in prompt if isinstance(m.content, list)
                         for b in m.content if isinstance(b, dict) and b.get("type") in ("image_url", "image"))
            self._chats[node] = _Call(start=time.time(), name=str(name) if name else None, extra={
                "provider": md.get("ls_provider"), "digest": prompt_digest(prompt),
                "messages": len(prompt), "images": images})

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            node = self._node_of(run_id)
            chat = self._chats.get(node) if node is not None else None
            if chat is None:
                return
            chat.end = time.time()
            usage = None
            gens = getattr(response, "generations", None) or []
            message = getattr(gens[0][0], "message", None) if gens and gens[0] else None
            if message is not None and getattr(message, "usage_metadata", None):
                u = message.usage_metadata
                usage = TokenUsage(input=u.get("input_tokens"), output=u.get("output_tokens"), total=u.get("total_tokens"))
            elif isinstance(getattr(response, "llm_output", None), dict) and response.llm_output.get("token_usage"):
                u = response.llm_output["token_usage"]
                usage = TokenUsage(input=u.get("prompt_tokens"), output=u.get("completion_tokens"), total=u.get("total_tokens"))
            chat.extra["tokens"] = usage

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            node = self._node_of(run_id)
            chat = self._chats.get(node) if node is not None else None
            if chat is not None:
                chat.end, chat.error = time.time(), f"{type(error).__name__}: {error}"

    def on_tool_start(self, serialized: dict[str, Any] | None, input_str: str, *, run_id: UUID,
                      parent_run_id: UUID | None = None, inputs: dict[str, Any] | None = None,
                      **kwargs: Any) -> None:
        with self._lock:
            self._parents[run_id] = parent_run_id
            call_id = str(kwargs.get("tool_call_id") or run_id)
            self._tool_runs[run_id] = call_id
            name = (serialized or {}).get("name") or kwargs.get("name")
            self._tools[call_id] = _Call(start=time.time(), name=name, args=dict(inputs) if isinstance(inputs, dict) else None)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            call = self._tools.get(self._tool_runs.get(run_id, ""))
            if call is not None:
                call.end = time.time()

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            call = self._tools.get(self._tool_runs.get(run_id, ""))
            if call is not None:
                call.end, call.error = time.time(), f"{type(error).__name__}: {error}"

    # --- events of a finished node ----------------------------------------------------------------------

    def _node_events(self, node: _Node, parts: list[dict[str, Any]], chat: _Call | None) -> list[TraceEvent]:
        from rsrag.prompts import load_prompt

        events: list[TraceEvent] = []
        node_ms = round((time.time() - node.start) * 1000, 3)
        prompt_version = load_prompt(NODE_PROMPTS[node.name]).version if node.name in NODE_PROMPTS else None
        for part in parts:
            messages = list(part.get("messages") or [])
            ai = next((m for m in messages if isinstance(m, AIMessage)), None)
            tool_messages = [m for m in messages if isinstance(m, ToolMessage)]
            if ai is not None:
                events.append(self._model_event(node, ai, chat, prompt_version, node_ms, tool_messages))
            elif node.name == "tools":
                ledger: dict[str, Evidence] = part.get("evidence") or {}
                events += [self._tool_event(node, m, ledger) for m in tool_messages]
            if ai is None and node.name != "tools":
                shown = [m.text for m in messages if not isinstance(m, ToolMessage)]
                summary = "; ".join(shown) or ", ".join(k for k, v in part.items() if v is not None) or "no update"
                events.append(self._event(node, "node", result=clip(summary), prompt_version=prompt_version,
                                          latency_ms=node_ms))
            answer = part.get("answer")
            if isinstance(answer, Answer):
                events.append(self._event(node, "answer", answer=AnswerRecord.of(answer), cited=list(answer.cited),
                                          evidence=[EvidenceRecord.of(e) for e in answer.evidence],
                                          backend=answer.backend, result=clip(answer.text)))
        return events

    def _model_event(self, node: _Node, ai: AIMessage, chat: _Call | None, prompt_version: str | None,
                     node_ms: float, errors: list[ToolMessage]) -> TraceEvent:
        for call in ai.tool_calls:
            self._requested[call["id"] or ""] = (call["name"], dict(call["args"]))
        calls = [f"{c['name']}({json.dumps(c['args'], default=str)[:200]})" for c in ai.tool_calls]
        bad = [f"{c.get('name')!r}: {c.get('error') or 'invalid arguments'}" for c in ai.invalid_tool_calls]
        result = ai.text if ai.text else ("calls " + ", ".join(calls) if calls else "(empty reply)")
        extra = chat.extra if chat else {}
        return self._event(
            node, "model", result=clip(result), output=message_to_dict(ai),
            arguments={"tool_calls": [{"name": c["name"], "args": c["args"], "id": c["id"]} for c in ai.tool_calls],
                       "prompt_messages": extra.get("messages"), "prompt_images": extra.get("images")},
            status="error" if bad or (chat and chat.error) else "ok",
            error="; ".join(([chat.error] if chat and chat.error else []) + [f"malformed tool call {b}" for b in bad]) or None,
            model=(chat.name if chat else None) or getattr(self.resources.model, "model_name", None),
            backend=self.resources.backend, provider=extra.get("provider"),
            prompt_version=prompt_version, prompt_digest=extra.get("digest"), tokens=extra.get("tokens"),
            latency_ms=(chat.latency_ms if chat else None) or node_ms,
        )

    def _tool_event(self, node: _Node, message: ToolMessage, ledger: dict[str, Evidence]) -> TraceEvent:
        call_id = message.tool_call_id
        call = self._tools.pop(call_id, None)
        asked_name, asked_args = self._requested.pop(call_id, (None, None))
        result = ToolResult.of(message)
        name = message.name or (call.name if call else None) or asked_name
        produced = [EvidenceRecord.of(ledger.get(e.id, e)) for e in result.evidence]
        error = None
        if result.status == "error":
            error = (call.error if call and call.error else None) or result.message or message.text
        return self._event(
            node, "tool", tool=name, tool_call_id=call_id,
            arguments=(call.args if call and call.args is not None else asked_args),
            result=clip(message.text), status="error" if result.status == "error" else "ok", error=clip(error, 500),
            evidence=produced, cited=list(result.cited), latency_ms=call.latency_ms if call else None,
        )
