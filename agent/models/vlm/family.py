"""Chat families: how one class of VLM checkpoints renders a conversation and how its output is parsed.

A :class:`ChatFamily` turns a Hugging Face style conversation (``{"role", "content", "tool_calls"}``
dicts whose content is a string or a list of ``text`` / ``image`` blocks) plus OpenAI-style tool schemas
into a :class:`Prompt`, and turns the decoded completion back into a :class:`ParsedOutput` (content, valid
tool calls, invalid tool calls, reasoning). Families are registered by name; the chat model only talks to
this protocol, so adding InternVL or another family never touches it::

    register_family(MyFamily())          # MyFamily.name == "internvl", model_types == ("internvl_chat",)
    get_family("internvl")               # by name or alias
    family_for_model_type("internvl_chat")
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from langchain_core.messages import InvalidToolCall, ToolCall

# The VLM errors live in the one error tree (rsrag.tools.errors, with their kinds); imported from here too.
from rsrag.tools.errors import ConfigError, UnknownChatFamilyError, VLMError, VLMInputError, VLMLoadError  # noqa: F401


@dataclass
class Prompt:
    """A rendered prompt.

    Attributes:
        conversation: the conversation as it will be encoded (images as PIL images in ``image`` blocks).
        tools: the tool schemas handed to the chat template, or None when the family inlined them.
        text: the prompt text the template produced (before image placeholders are expanded).
        images: number of images in ``conversation``.
        offered_tools: the tool schemas the model was shown (inlined or not); tool calls are checked against them.
    """

    conversation: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    text: str
    images: int = 0
    offered_tools: list[dict[str, Any]] | None = None


@dataclass
class ParsedOutput:
    """A completion split into what the chat model returns.

    Attributes:
        content: the text outside tool-call blocks, stripped.
        tool_calls: well-formed calls to known tools, with generated ids.
        invalid_tool_calls: malformed calls with the error the model should be told about.
        reasoning: text of a thinking block, when the family has one.
    """

    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    invalid_tool_calls: list[InvalidToolCall] = field(default_factory=list)
    reasoning: str | None = None


@runtime_checkable
class ChatFamily(Protocol):
    """How one family of checkpoints renders prompts and is parsed.

    Attributes:
        name: registry name (e.g. ``"qwen"``).
        aliases: other names accepted by :func:`get_family` (e.g. ``"qwen2_5_vl"``).
        model_types: ``config.model_type`` values this family serves, for auto-detection.
    """

    name: str
    aliases: tuple[str, ...]
    model_types: tuple[str, ...]

    def render(self, processor: Any, conversation: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> Prompt:
        """Render the conversation (and tools) with the processor's chat template, ready for encoding."""
        ...

    def stop_tokens(self, processor: Any) -> list[str]:
        """Token strings that end the assistant's turn."""
        ...

    def parse(self, text: str, tools: list[dict[str, Any]] | None) -> ParsedOutput:
        """Split a decoded completion (special tokens kept) into content and tool calls; never raises."""
        ...


_REGISTRY: dict[str, ChatFamily] = {}
_LOCK = threading.Lock()


def register_family(family: ChatFamily, *, replace: bool = False) -> None:
    """Register ``family`` under its name and aliases.

    Args:
        family: an object satisfying :class:`ChatFamily`.
        replace: allow replacing a family already registered under one of the names.

    Raises:
        ConfigError: a name is taken and ``replace`` is False, or ``family`` lacks the protocol.
    """
    if not isinstance(family, ChatFamily):
        raise ConfigError(f"{family!r} does not implement the ChatFamily protocol (name, render, stop_tokens, parse)")
    names = (family.name, *family.aliases)
    with _LOCK:
        taken = [n for n in names if n in _REGISTRY and _REGISTRY[n] is not family]
        if taken and not replace:
            raise ConfigError(f"chat family name(s) already registered: {', '.join(taken)}")
        for n in names:
            _REGISTRY[n.lower()] = family


def family_names() -> list[str]:
    """All registered family names and aliases, sorted."""
    return sorted(_REGISTRY)


def get_family(name: str) -> ChatFamily:
    """The family registered as ``name`` (case-insensitive).

    Raises:
        UnknownChatFamilyError: nothing is registered under that name.
    """
    try:
        return _REGISTRY[name.strip().lower()]
    except KeyError:
        raise UnknownChatFamilyError(f"unknown chat family {name!r}; known: {', '.join(family_names()) or 'none'}") from None


def family_for_model_type(model_type: str) -> ChatFamily:
    """The family that serves checkpoints whose ``config.model_type`` is ``model_type``.

    Raises:
        UnknownChatFamilyError: no registered family claims it; pass ``family=`` explicitly.
    """
    for family in dict.fromkeys(_REGISTRY.values()):
        if model_type in family.model_types:
            return family
    raise UnknownChatFamilyError(
        f"no chat family serves model type {model_type!r}; pass family=<name> (known: {', '.join(family_names())})"
    )


def tool_index(tools: Sequence[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Map tool name -> JSON schema of its parameters, from OpenAI-style tool dicts."""
    out: dict[str, dict[str, Any]] = {}
    for tool in tools or ():
        fn = tool.get("function", tool)
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            out[fn["name"]] = fn.get("parameters") or {}
    return out


def check_call(name: Any, args: Any, schemas: dict[str, dict[str, Any]]) -> str | None:
    """Why a parsed call cannot be run (unknown tool, arguments not an object, required ones missing), or None."""
    if not isinstance(name, str) or not name:
        return "the tool call has no \"name\" string"
    if name not in schemas:
        known = ", ".join(sorted(schemas)) or "none (no tools are bound)"
        return f"unknown tool {name!r}; available tools: {known}"
    if not isinstance(args, dict):
        return f"\"arguments\" of {name!r} must be a JSON object, got {type(args).__name__}"
    missing = [k for k in schemas[name].get("required", ()) if k not in args]
    if missing:
        return f"tool {name!r} is missing required argument(s): {', '.join(missing)}"
    return None


def add_system_text(conversation: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """A copy of ``conversation`` with ``text`` appended to its leading system message (created if absent)."""
    conv = list(conversation)
    if conv and conv[0].get("role") == "system":
        first = dict(conv[0])
        content = first.get("content")
        if isinstance(content, list):
            first["content"] = [*content, {"type": "text", "text": "\n\n" + text}]
        else:
            first["content"] = f"{content}\n\n{text}" if content else text
        conv[0] = first
    else:
        conv.insert(0, {"role": "system", "content": text})
    return conv
