"""Graph state: a narrow input, the fuller internal state of the analyst graph, and its output.

State holds references, ids and small values only (never arrays or images): crops are file paths, scenes
are paths plus fingerprints, evidence is a ledger of small records.

A host graph that runs rsrag's tools in its own ``ToolNode`` uses :class:`AgentState` as its state (or a
subclass of it): the tools write ``evidence`` and ``zoomed_pixels`` through the reducers declared here, and
read ``scene`` and the counters. A host that embeds the analyst graph as a subgraph gives it
:class:`InputState` (``messages``, ``scene`` and/or ``catalog``, and the ``evidence`` of earlier questions, so
follow-ups can cite or zoom into it) and gets :class:`OutputState` back.

A thread can start from a catalog of scenes (``catalog``: its name, no ``scene``): ``find_scenes`` and
``search_catalog`` work across it, and ``scene_info(scene=...)`` or a ``zoom`` on evidence of another scene
sets ``scene`` (the path or URL of the scene now open), which the other tools then work on.
"""

from __future__ import annotations

from typing import Annotated, NotRequired

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

from rsrag.agent.evidence import Answer, Evidence, merge_ledger


def latest(left: str | None, right: str | None) -> str:
    """Reducer of the open scene and catalog: the latest value wins (several tools of one step may set it)."""
    return right if right is not None else (left or "")


def add_or_reset(left: int | None, right: int | None) -> int:
    """Reducer of counters: add ``right``; a negative ``right`` resets the counter to 0 (a new question)."""
    if right is None:
        return left or 0
    return 0 if right < 0 else (left or 0) + right


__all__ = ["AgentState", "InputState", "OutputState", "add_or_reset", "is_question", "latest"]


class InputState(TypedDict):
    """What a caller gives: the conversation so far (a new question appended), the scene's path or URL
    and/or the name of a catalog of scenes (in the workspace's store), and optionally the evidence ledger of
    earlier questions (merged by id)."""

    messages: Annotated[list[AnyMessage], add_messages]
    scene: NotRequired[Annotated[str, latest]]
    catalog: NotRequired[Annotated[str, latest]]
    evidence: NotRequired[Annotated[dict[str, Evidence], merge_ledger]]


class AgentState(InputState, total=False):
    """Everything the graph tracks while answering.

    Attributes:
        evidence: the evidence ledger, by id; merged across steps and kept across questions of a thread, so
            a follow-up question can cite or zoom into earlier evidence.
        steps: model calls made for the current question.
        zoomed_pixels: full-resolution pixels read by zooms for the current question.
        started_at: wall-clock start of the current question (seconds since the epoch).
        answer_attempts: answers rejected by the sufficiency check for the current question.
        answer: the accepted answer of the current question (``None`` until there is one).
        question_start: index in ``messages`` where the current question begins.
    """

    steps: int
    zoomed_pixels: Annotated[int, add_or_reset]
    started_at: float
    answer_attempts: int
    answer: Answer | None
    question_start: int


class OutputState(TypedDict, total=False):
    """What a caller gets back: the accepted answer, the evidence ledger, and the messages (of an embedded
    graph, only the question and the answer as one AI message, unless it was built with ``messages="all"``)."""

    messages: list[AnyMessage]
    answer: Answer | None
    evidence: dict[str, Evidence]


def is_question(message: AnyMessage) -> bool:
    """Whether a message is the analyst's question, not one the graph added (crops shown to the model,
    feedback on a rejected answer)."""
    extra = message.additional_kwargs
    return message.type == "human" and not extra.get("rsrag_visual") and not extra.get("rsrag_feedback")
