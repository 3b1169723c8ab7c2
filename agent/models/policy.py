"""The offline rule policy: a chat model with no VLM that runs the ImageRAG cascade through the tools.

It is a LangChain chat model, so it drives the same graph, tools, budgets and sufficiency check as a real
VLM. At each step it reads the tool results of the current question and decides:

1. search the scene for the question's key phrases (``search_patches``);
2. if no region is confident and a knowledge tool is available, look the phrases up there (slow path);
3. zoom on the best regions (the confident ones, else the top ones);
4. answer, citing the regions it found and zoomed on, with the fast-path confidence.

It cannot *see*: its answers say that they are retrieval-only, list where the best matches are and how
confident the retrieval is, and never claim to have verified what a region contains.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from pydantic import Field

from rsrag.agent.state import is_question
from rsrag.tools.fastpath import extract_key_phrases

_ROW = re.compile(r"^(E[0-9a-f]{6}) (\w+) bbox=(\[[^\]]*\])")
_CONFIDENCE = re.compile(r" confidence=([0-9.]+)")
#: An explicit request to zoom on one evidence record ("zoom on evidence E1a2b3c ...", as ``rsrag chat``'s /zoom sends).
_ZOOM_REQUEST = re.compile(r"\bzoom (?:in )?(?:on|into) (?:evidence )?(E[0-9a-f]{6})\b", re.IGNORECASE)
RETRIEVAL_ONLY = "Retrieval-only answer (rule policy, no vision-language model looked at the crops)"


class RulePolicy(BaseChatModel):
    """Deterministic retrieval-only policy (see the module docstring).

    Attributes:
        max_zooms: regions to zoom on before answering.
        phrase_extractor: question -> key phrases (default: :func:`rsrag.tools.fastpath.extract_key_phrases`).
    """

    max_zooms: int = 2
    phrase_extractor: Callable[[str], list[str]] = Field(default=extract_key_phrases, exclude=True)
    tool_names: tuple[str, ...] = ()

    @property
    def _llm_type(self) -> str:
        return "rsrag-rule-policy"

    @property
    def model_name(self) -> str:
        return "rule"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable:
        names = tuple(getattr(t, "name", None) or t.get("name") for t in tools)  # type: ignore[union-attr]
        return self.model_copy(update={"tool_names": names})

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        message = self.decide(messages)
        return ChatResult(generations=[ChatGeneration(message=message)])

    # --- the policy ---------------------------------------------------------------------------------

    def decide(self, messages: list[BaseMessage]) -> AIMessage:
        """The next step for the conversation ``messages``."""
        question, turn = _current_turn(messages)
        calls = {c["id"]: c for m in turn if isinstance(m, AIMessage) for c in m.tool_calls}
        results = [(calls.get(m.tool_call_id), m) for m in turn if isinstance(m, ToolMessage)]
        done = {c["name"] for c, _ in results if c}
        searches = [m for c, m in results if c and c["name"] in ("search_patches", "lookup_knowledge") and m.status != "error"]
        found = [row for m in searches for row in _parse_rows(m.text)]
        confident = [r for r in found if r["confident"]]
        phrases = self.phrase_extractor(question)

        request = _ZOOM_REQUEST.search(question)
        if request:
            return _zoom_request(request.group(1), results)
        if "search_patches" not in done:
            return _call("search_patches", {"phrases": phrases})
        if not confident and "lookup_knowledge" in self.tool_names and "lookup_knowledge" not in done:
            return _call("lookup_knowledge", {"query": ", ".join(phrases)})
        if "zoom" not in done and found:
            targets = (confident or found)[: self.max_zooms]
            return _calls([("zoom", {"evidence_id": r["id"]}) for r in targets])
        zooms = [m for c, m in results if c and c["name"] == "zoom" and m.status != "error"]
        zoom_ids = [m.artifact["evidence"][0] for m in zooms if isinstance(m.artifact, dict) and m.artifact.get("evidence")]
        return _call("answer", _compose(phrases, found, confident, zoom_ids))


def _zoom_request(target: str, results: list[tuple[dict[str, Any] | None, ToolMessage]]) -> AIMessage:
    """Zoom on the requested evidence once, then answer citing the crop (or report the tool's error)."""
    zooms = [m for c, m in results if c and c["name"] == "zoom"]
    if not zooms:
        return _call("zoom", {"evidence_id": target})
    last = zooms[-1]
    ids = last.artifact.get("evidence") if isinstance(last.artifact, dict) else None
    if last.status == "error" or not ids:
        text = f"{RETRIEVAL_ONLY}: could not zoom on {target}: {last.text}"
        return _call("answer", {"text": text, "evidence_ids": [], "confidence": 0.0})
    text = f"{RETRIEVAL_ONLY}: zoomed on {target}; the crop is {ids[0]} ({last.text.split(';')[0]})."
    return _call("answer", {"text": text, "evidence_ids": [ids[0]], "confidence": 0.5})


def _current_turn(messages: list[BaseMessage]) -> tuple[str, list[BaseMessage]]:
    """The current question and the messages after it."""
    for i in range(len(messages) - 1, -1, -1):
        if is_question(messages[i]):
            return messages[i].text, messages[i + 1:]
    return "", list(messages)


def _parse_rows(text: str) -> list[dict[str, Any]]:
    """Evidence rows of a search result: id, path, bbox, confidence, and whether it passed the threshold."""
    header = text.splitlines()[0] if text else ""
    threshold = re.search(r"reach confidence ([0-9.]+)", header)
    level = float(threshold.group(1)) if threshold else 0.5
    rows = []
    for line in text.splitlines():
        match = _ROW.match(line)
        if match:
            found = _CONFIDENCE.search(line)
            conf = float(found.group(1)) if found else 0.0
            rows.append({"id": match.group(1), "path": match.group(2), "bbox": match.group(3),
                         "confidence": conf, "confident": conf >= level, "line": line})
    return rows


def _compose(phrases: list[str], found: list[dict[str, Any]], confident: list[dict[str, Any]], zoom_ids: list[str]) -> dict[str, Any]:
    what = ", ".join(f"'{p}'" for p in phrases)
    if not found:
        return {"text": f"{RETRIEVAL_ONLY}: no region of the scene matched {what}.", "evidence_ids": [], "confidence": 0.0}
    best = (confident or found)[:3]
    places = "; ".join(f"{r['id']} at pixels {r['bbox']} (confidence {r['confidence']:.2f}, {r['path']} path)" for r in best)
    if confident:
        lead = f"{RETRIEVAL_ONLY}: the regions that best match {what} are {places}."
    else:
        lead = (f"{RETRIEVAL_ONLY}: no region matched {what} with confidence; the closest candidates are "
                f"{places}. Treat them as unconfirmed.")
    if zoom_ids:
        lead += f" Crops of the top regions: {', '.join(zoom_ids)}."
    confidence = max(r["confidence"] for r in best) if confident else min(0.3, max(r["confidence"] for r in best))
    return {"text": lead, "evidence_ids": [r["id"] for r in best] + zoom_ids, "confidence": round(confidence, 3)}


def _call(name: str, args: dict[str, Any]) -> AIMessage:
    return _calls([(name, args)])


def _calls(calls: list[tuple[str, dict[str, Any]]]) -> AIMessage:
    return AIMessage(content="", tool_calls=[
        {"name": name, "args": args, "id": f"call_{uuid.uuid4().hex[:12]}", "type": "tool_call"} for name, args in calls
    ])
