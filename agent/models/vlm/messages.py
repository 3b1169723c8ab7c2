"""LangChain messages -> Hugging Face chat conversation (with images decoded to PIL).

Accepted image content blocks (in any message, tool results included):

* OpenAI style: ``{"type": "image_url", "image_url": {"url": URL}}`` or ``{"type": "image_url", "image_url": URL}``;
* LangChain standard: ``{"type": "image", "base64": ..., "mime_type": ...}``, ``{"type": "image", "url": URL}``,
  the older ``{"type": "image", "source_type": "base64" | "url", "data" | "url": ...}``;
* local: ``{"type": "image", "path": "/abs/file.png"}`` or ``{"type": "image", "image": PIL.Image | path}``.

A URL may be a ``data:image/...;base64,`` URL, a ``file://`` URL or a plain local path. Remote ``http(s)``
URLs are refused (the backend runs offline): fetch the image and pass it as a data URL or a file.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from langchain_core.messages import AIMessage, BaseMessage, ChatMessage, HumanMessage, SystemMessage, ToolMessage

from rsrag.agent.models.vlm.family import VLMInputError

_SKIPPED_BLOCKS = {
    "tool_call", "tool_call_chunk", "invalid_tool_call", "server_tool_call", "server_tool_result", "reasoning",
}


def load_image(block: dict[str, Any]) -> Any:
    """Decode one image content block to an RGB ``PIL.Image``.

    Raises:
        VLMInputError: the block names no image, a remote URL, a missing file or undecodable bytes.
    """
    from PIL import Image

    if isinstance(block.get("image"), Image.Image):
        return block["image"].convert("RGB")
    if block.get("type") == "image_url":
        ref = block.get("image_url")
        ref = ref.get("url") if isinstance(ref, dict) else ref
    elif block.get("base64") or block.get("source_type") == "base64":
        ref = f"data:{block.get('mime_type', 'image/*')};base64,{block.get('base64') or block.get('data')}"
    else:
        ref = block.get("url") or block.get("path") or block.get("image") or block.get("data")
    if not isinstance(ref, str) or not ref:
        raise VLMInputError(f"image block has no usable source (keys: {sorted(block)}); give a data URL or a local path")
    return _open(ref)


def _open(ref: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    shown = ref if len(ref) < 80 else ref[:77] + "..."
    if ref.startswith("data:"):
        head, _, payload = ref.partition(",")
        if ";base64" not in head:
            raise VLMInputError(f"image data URL is not base64-encoded: {shown}")
        try:
            source: Any = io.BytesIO(base64.b64decode(payload, validate=False))
        except (binascii.Error, ValueError) as exc:
            raise VLMInputError(f"image data URL has invalid base64: {exc}") from exc
    else:
        parsed = urlparse(ref)
        if parsed.scheme in ("http", "https", "ftp", "s3", "gs"):
            raise VLMInputError(
                f"remote image URL {shown} is not fetched by the local transformers backend; pass a data URL or a local file"
            )
        path = Path(unquote(parsed.path) if parsed.scheme == "file" else ref).expanduser()
        if not path.is_file():
            raise VLMInputError(f"image file not found: {path}")
        source = path
    try:
        with Image.open(source) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise VLMInputError(f"could not decode image {shown}: {exc}") from exc


def _content(content: str | list[Any], role: str) -> tuple[str | list[dict[str, Any]], int]:
    """HF content (a string, or blocks when images are present) and the number of images."""
    if isinstance(content, str):
        return content, 0
    blocks: list[dict[str, Any]] = []
    for item in content:
        if isinstance(item, str):
            blocks.append({"type": "text", "text": item})
            continue
        if not isinstance(item, dict):
            raise VLMInputError(f"{role} message has a content item of type {type(item).__name__}")
        kind = item.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": str(item.get("text", ""))})
        elif kind in ("image", "image_url"):
            blocks.append({"type": "image", "image": load_image(item)})
        elif kind in _SKIPPED_BLOCKS:
            continue
        else:
            raise VLMInputError(f"{role} message has a {kind!r} content block; this backend takes text and images only")
    images = sum(b["type"] == "image" for b in blocks)
    if images == 0:
        return "".join(b["text"] for b in blocks), 0
    return blocks, images


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "id": call.get("id"), "function": {"name": call["name"], "arguments": call.get("args", {})}}


def to_conversation(messages: Sequence[BaseMessage]) -> tuple[list[dict[str, Any]], int]:
    """Convert LangChain messages to HF chat dicts.

    AI messages keep their valid tool calls as ``tool_calls`` (arguments as dicts) and the raw text of
    invalid ones as ``invalid_tool_calls`` (the family decides how to show them back to the model).

    Returns:
        The conversation and the total number of images in it.

    Raises:
        VLMInputError: an unsupported message type or content block, or an image that cannot be loaded.
    """
    conversation: list[dict[str, Any]] = []
    total = 0
    for msg in messages:
        if isinstance(msg, SystemMessage):
            role = "system"
        elif isinstance(msg, HumanMessage):
            role = "user"
        elif isinstance(msg, AIMessage):
            role = "assistant"
        elif isinstance(msg, ToolMessage):
            role = "tool"
        elif isinstance(msg, ChatMessage):
            role = msg.role
        else:
            raise VLMInputError(f"cannot render a {type(msg).__name__} for a local chat model")
        content, n = _content(msg.content, role)
        total += n
        entry: dict[str, Any] = {"role": role, "content": content}
        if isinstance(msg, AIMessage):
            if msg.tool_calls:
                entry["tool_calls"] = [_tool_call(c) for c in msg.tool_calls]
            if msg.invalid_tool_calls:
                raw = [c.get("args") or json.dumps({"name": c.get("name")}) for c in msg.invalid_tool_calls]
                entry["invalid_tool_calls"] = raw
        elif isinstance(msg, ToolMessage):
            entry["tool_call_id"] = msg.tool_call_id
            if msg.name:
                entry["name"] = msg.name
        conversation.append(entry)
    return conversation, total
