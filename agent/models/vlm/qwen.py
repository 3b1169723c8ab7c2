"""The Qwen-VL chat family (Qwen2-VL, Qwen2.5-VL, Qwen3-VL): ChatML turns, Hermes-style ``<tool_call>`` JSON.

Rendering uses the processor's own chat template. Qwen3-VL templates render ``tools=`` natively; the
Qwen2-VL and Qwen2.5-VL templates shipped with the checkpoints ignore ``tools``, tool calls and tool
results, so when the template output does not change with the tools, this family inlines the tool
schemas into the system message itself, writes earlier tool calls as ``<tool_call>`` text and tool results
as ``<tool_response>`` user turns (the format the Qwen2.5 models were trained on).

Images inside tool results (a zoomed crop) are moved into a user turn right after the run of tool results,
since not every template can place images in a tool turn.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from langchain_core.messages.tool import invalid_tool_call, tool_call

from rsrag.agent.models.vlm.family import ParsedOutput, Prompt, add_system_text, check_call, register_family, tool_index

_CALL = re.compile(r"<tool_call>(.*?)(</tool_call>|\Z)", re.S)
_THINK = re.compile(r"^\s*(?:<think>)?(.*?)</think>", re.S)
_SPECIAL = re.compile(r"<\|[A-Za-z0-9_]{1,40}\|>")

TOOLS_PREAMBLE = (
    "# Tools\n\nYou may call one or more functions to help with the request.\n\n"
    "The function signatures are given as JSON inside <tools></tools>:\n<tools>\n{schemas}\n</tools>\n\n"
    "For each call, reply with a JSON object holding the function name and its arguments inside "
    "<tool_call></tool_call> tags:\n"
    "<tool_call>\n{{\"name\": <function-name>, \"arguments\": <args-json-object>}}\n</tool_call>"
)


def new_call_id() -> str:
    """A fresh tool-call id in OpenAI's style."""
    return f"call_{uuid.uuid4().hex[:24]}"


def _call_text(name: str, arguments: Any) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False) + "\n</tool_call>"


def _append_text(content: str | list[dict[str, Any]] | None, text: str) -> str | list[dict[str, Any]]:
    if isinstance(content, list):
        return [*content, {"type": "text", "text": text}]
    return f"{content or ''}\n{text}".strip()


class QwenFamily:
    """Qwen2-VL / Qwen2.5-VL / Qwen3-VL rendering and ``<tool_call>`` parsing."""

    name = "qwen"
    aliases = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "qwen-vl")
    model_types = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")

    # --- rendering ------------------------------------------------------------------------------------

    def render(self, processor: Any, conversation: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> Prompt:
        """Render with the processor's template; inline the tools when the template ignores them."""
        conv = self._hoist_tool_images(conversation)
        conv = [self._show_invalid_calls(m) for m in conv]
        images = sum(b.get("type") == "image" for m in conv if isinstance(m["content"], list) for b in m["content"])
        offered = tools or None
        text = self._apply(processor, conv, offered)
        if offered and text == self._apply(processor, conv, None):
            conv = self._inline_tools(conv, offered)
            text = self._apply(processor, conv, None)
            return Prompt(conversation=conv, tools=None, text=text, images=images, offered_tools=offered)
        return Prompt(conversation=conv, tools=offered, text=text, images=images, offered_tools=offered)

    def stop_tokens(self, processor: Any) -> list[str]:
        """``<|im_end|>`` ends a turn; ``<|endoftext|>`` ends a document."""
        return ["<|im_end|>", "<|endoftext|>"]

    @staticmethod
    def _apply(processor: Any, conv: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
        return processor.apply_chat_template(conv, tools=tools, add_generation_prompt=True, tokenize=False)

    @staticmethod
    def _hoist_tool_images(conversation: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        pending: list[dict[str, Any]] = []
        for i, msg in enumerate(conversation):
            if msg["role"] == "tool" and isinstance(msg["content"], list):
                name = msg.get("name") or "tool"
                text = "".join(b.get("text", "") for b in msg["content"] if b["type"] == "text")
                imgs = [b for b in msg["content"] if b["type"] == "image"]
                out.append({**msg, "content": f"{text}\n[{len(imgs)} image(s) follow]".strip()})
                pending += [{"type": "text", "text": f"Image from {name}:"}, *imgs]
            else:
                out.append(msg)
            nxt = conversation[i + 1]["role"] if i + 1 < len(conversation) else None
            if pending and nxt != "tool":
                out.append({"role": "user", "content": pending})
                pending = []
        return out

    @staticmethod
    def _show_invalid_calls(msg: dict[str, Any]) -> dict[str, Any]:
        bad = msg.get("invalid_tool_calls")
        if not bad:
            return msg
        msg = {k: v for k, v in msg.items() if k != "invalid_tool_calls"}
        raw = "\n".join(f"<tool_call>\n{b}\n</tool_call>" for b in bad)
        content = msg.get("content")
        msg["content"] = _append_text(content, raw)
        return msg

    @staticmethod
    def _inline_tools(conv: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        schemas = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
        out: list[dict[str, Any]] = []
        for msg in add_system_text(conv, TOOLS_PREAMBLE.format(schemas=schemas)):
            if msg["role"] == "assistant" and msg.get("tool_calls"):
                calls = "\n".join(_call_text(c["function"]["name"], c["function"]["arguments"]) for c in msg["tool_calls"])
                out.append({"role": "assistant", "content": _append_text(msg.get("content"), calls)})
            elif msg["role"] == "tool":
                body = f"<tool_response>\n{msg['content']}\n</tool_response>"
                if out and out[-1]["role"] == "user" and out[-1].get("_tool_turn"):
                    out[-1]["content"] += "\n" + body
                else:
                    out.append({"role": "user", "content": body, "_tool_turn": True})
            else:
                out.append(msg)
        return [{k: v for k, v in m.items() if k != "_tool_turn"} for m in out]

    # --- parsing --------------------------------------------------------------------------------------

    def parse(self, text: str, tools: list[dict[str, Any]] | None) -> ParsedOutput:
        """Split ``text`` into content, tool calls and invalid tool calls. Never raises."""
        for stop in self.stop_tokens(None):
            text = text.split(stop, 1)[0]
        text = _SPECIAL.sub("", text)
        reasoning = None
        if "</think>" in text:
            m = _THINK.match(text)
            if m:
                reasoning, text = m.group(1).strip(), text[m.end():]
        schemas = tool_index(tools)
        calls, invalid, pieces, pos = [], [], [], 0
        for m in _CALL.finditer(text):
            pieces.append(text[pos:m.start()])
            pos = m.end()
            body = m.group(1).strip()
            name, args, error = self._decode(body)
            if error is None:
                error = check_call(name, args, schemas)
            if error is None:  # a complete JSON call whose closing tag was cut off is still usable
                calls.append(tool_call(name=name, args=args, id=new_call_id()))
            else:
                if not m.group(2):
                    error += " (the <tool_call> block was not closed; was the output cut off by max_new_tokens?)"
                shown = name if isinstance(name, str) else None
                invalid.append(invalid_tool_call(name=shown, args=body, id=new_call_id(), error=error))
        pieces.append(text[pos:])
        content = "".join(pieces).replace("</tool_call>", "").strip()
        return ParsedOutput(content=content, tool_calls=calls, invalid_tool_calls=invalid, reasoning=reasoning)

    @staticmethod
    def _decode(body: str) -> tuple[Any, Any, str | None]:
        """(name, arguments, error) of one ``<tool_call>`` body."""
        try:
            obj = json.loads(body)
        except json.JSONDecodeError as exc:
            hint = '{"name": ..., "arguments": {...}}'
            return None, None, f"tool call is not valid JSON ({exc.msg} at char {exc.pos}); write {hint}"
        if not isinstance(obj, dict):
            return None, None, "tool call must be a JSON object with \"name\" and \"arguments\""
        name = obj.get("name")
        if "arguments" not in obj and "parameters" not in obj:
            return name, None, "tool call has no \"arguments\" object (use {} for a tool without arguments)"
        args = obj.get("arguments", obj.get("parameters"))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                return name, None, "\"arguments\" is a string that is not a JSON object"
        return name, args, None


QWEN = QwenFamily()
register_family(QWEN)
