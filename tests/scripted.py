"""A scripted tool-calling chat model for graph tests: it replays a fixed list of steps.

Each step is an ``AIMessage`` or a function of the messages so far returning one (so a step can cite the
evidence ids an earlier tool call produced). The model records every prompt it was given.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from pydantic import Field

Step = AIMessage | Callable[[list[BaseMessage]], AIMessage]


class ScriptedChatModel(BaseChatModel):
    steps: list[Any]
    prompts: list[list[BaseMessage]] = Field(default_factory=list)
    bound_tools: list[str] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable:
        self.bound_tools[:] = [t.name for t in tools]
        return self

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        self.prompts.append(list(messages))
        if not self.steps:
            raise AssertionError("the scripted model ran out of steps")
        step = self.steps.pop(0)
        message = step(messages) if callable(step) else step
        return ChatResult(generations=[ChatGeneration(message=message)])


def call(name: str, **args: Any) -> AIMessage:
    """An AI message with one tool call."""
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": f"call_{uuid.uuid4().hex[:8]}", "type": "tool_call"}])


def last_evidence(messages: list[BaseMessage], tool: str | None = None) -> list[str]:
    """Evidence ids of the most recent tool result that did not fail (of ``tool`` when given)."""
    from rsrag.agent.results import ToolResult

    for m in reversed(messages):
        if isinstance(m, ToolMessage) and (tool is None or m.name == tool) and m.artifact is not None \
                and ToolResult.of(m).ok:
            return ToolResult.of(m).ids
    return []
