"""The sufficiency check: an answer must cite evidence that exists; budgets end a question gracefully."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rsrag.agent.evidence import Answer, Evidence, find_evidence_ids
from rsrag.agent.results import ToolResult
from rsrag.tools.calibration import Finding

#: How many times an unsupported answer is sent back to the model before it is accepted as unsupported.
MAX_REJECTIONS = 1


@dataclass(frozen=True)
class Verdict:
    """Outcome of checking one answer attempt: the accepted answer, or the reason it was sent back."""

    answer: Answer | None
    reason: str | None


def cited_ids(text: str, explicit: list[str] | None) -> list[str]:
    """Evidence ids an answer cites: the explicit list, else ids written in the text, in order, unique."""
    ids = list(explicit or []) or find_evidence_ids(text)
    return list(dict.fromkeys(i.strip() for i in ids if i and i.strip()))


def _question_results(state: dict[str, Any]) -> Iterator[ToolResult]:
    """The typed results of the current question's tool calls, in order."""
    start = int(state.get("question_start") or 0)
    for message in state.get("messages", [])[start:]:
        if message.type == "tool":
            yield ToolResult.of(message)


def question_findings(state: dict[str, Any]) -> dict[str, Finding]:
    """The finding of each target searched for the current question (its phrases, comma-joined), from the
    typed results of its searches (the latest search of a target wins)."""
    return {", ".join(r.phrases): r.finding for r in _question_results(state)
            if r.ok and r.finding is not None and r.phrases}


def question_input_errors(state: dict[str, Any]) -> list[str]:
    """The one-line reasons of this question's tool calls that failed on their input (an image that could not
    be read: kind ``input``), in order, unique."""
    reasons = (r.message for r in _question_results(state) if not r.ok and r.error_kind == "input" and r.message)
    return list(dict.fromkeys(reasons))


def overall_finding(findings: dict[str, Finding]) -> Finding | None:
    """One finding for the answer: ``found`` when every target was found, ``not_found`` when none was,
    ``uncertain`` otherwise (see the per-target findings); ``None`` when nothing judged presence."""
    values = set(findings.values())
    if not values:
        return None
    if values == {"found"}:
        return "found"
    if values == {"not_found"}:
        return "not_found"
    return "uncertain"


def judge(
    state: dict[str, Any],
    text: str,
    cited: list[str],
    confidence: float,
    backend: str,
    finding: Finding | None = None,
) -> Verdict:
    """Accept an answer whose citations exist in the ledger; send an unsupported one back once.

    An answer is *supported* when it is non-empty, cites at least one evidence id (unless no evidence was
    gathered at all and the answer says so), and every cited id is in the ledger. The first unsupported
    attempt of a question is rejected with the reason; a later one is accepted with ``supported=False``
    and the reason in ``missing``.

    The answer's ``finding`` is ``finding`` when the model gave one, else the one its searches produced
    (:func:`question_findings`); it is independent of ``supported``.
    """
    ledger: dict[str, Evidence] = state.get("evidence") or {}
    unknown = [i for i in cited if i not in ledger]
    reason = None
    if not text.strip():
        reason = "the answer text is empty"
    elif unknown:
        reason = f"it cites evidence ids that do not exist: {', '.join(unknown)}"
    elif not cited and ledger:
        reason = "it cites no evidence; every claim about the image must cite evidence ids"
    attempts = int(state.get("answer_attempts") or 0)
    if reason is not None and attempts < MAX_REJECTIONS:
        return Verdict(answer=None, reason=reason)
    kept = [i for i in cited if i in ledger]
    findings = question_findings(state)
    answer = Answer(
        text=text.strip() or "(no answer)",
        cited=kept,
        confidence=max(0.0, min(1.0, float(confidence))) if reason is None else min(0.2, float(confidence)),
        finding=finding or overall_finding(findings),
        findings=findings,
        supported=reason is None,
        missing=reason,
        input_errors=question_input_errors(state),
        evidence=[ledger[i] for i in kept],
        backend=backend,
        steps=int(state.get("steps") or 0),
        seconds=time.time() - float(state.get("started_at") or time.time()),
    )
    return Verdict(answer=answer, reason=None)


def budget_answer(state: dict[str, Any], why: str, backend: str) -> Answer:
    """The answer given when a budget runs out: the best evidence so far and what is missing."""
    start = int(state.get("question_start") or 0)
    ledger: dict[str, Evidence] = state.get("evidence") or {}
    recent_calls = {
        call["id"] for m in state.get("messages", [])[start:] if m.type == "ai" for call in (m.tool_calls or [])
    }
    fresh = [e for e in ledger.values() if e.tool_call_id in recent_calls and e.kind != "scene"]
    best = sorted(fresh, key=lambda e: -(e.confidence or 0.0))[:3]
    if best:
        lines = "; ".join(e.summary() for e in best)
        text = f"I ran out of budget ({why}) before I could finish. The strongest evidence so far: {lines}."
    else:
        text = f"I ran out of budget ({why}) before finding evidence for this question."
    findings = question_findings(state)
    return Answer(
        text=text, cited=[e.id for e in best], confidence=min(0.3, max((e.confidence or 0.0) for e in best)) if best else 0.0,
        finding=overall_finding(findings), findings=findings,
        supported=False, missing=f"budget exhausted ({why}): no answer was confirmed against the evidence",
        input_errors=question_input_errors(state), evidence=best, backend=backend, steps=int(state.get("steps") or 0),
        seconds=time.time() - float(state.get("started_at") or time.time()),
    )
