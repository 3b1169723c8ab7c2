"""Replay: re-run a thread's questions with the recorded model outputs and compare the evidence.

A :class:`ReplayChatModel` returns, step by step, the messages the model returned in the recorded run, so
the graph makes the same tool calls; the tools run for real against today's image, index and knowledge
base. Every tool call's evidence (ids, boxes, scores) and every answer is compared with the recording; a
difference is a :class:`Divergence` (a changed image or index shows up here). Provenance differences
(fingerprint, index version, encoder...) are reported beside them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, messages_from_dict
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from pydantic import BaseModel, Field

from rsrag.agent.trace.events import Provenance, TraceEvent
from rsrag.agent.trace.store import TraceStore
from rsrag.tools.errors import ReplayExhaustedError, RsragError, TraceError

if TYPE_CHECKING:
    from rsrag.agent.settings import Settings

SCORE_TOLERANCE = 1e-4
COMPARED_PROVENANCE = ("scene_fingerprint", "scene_sha256", "encoder_id", "index_key", "index_version",
                       "knowledge_version", "prompts", "package_version")


class ReplayChatModel(BaseChatModel):
    """A chat model that returns recorded messages in order (``outputs``: LangChain message dicts)."""

    outputs: list[dict[str, Any]] = Field(default_factory=list)
    served: int = 0

    @property
    def _llm_type(self) -> str:
        return "rsrag-replay"

    @property
    def model_name(self) -> str:
        return "replay"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable:
        return self

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        if not self.outputs:
            raise ReplayExhaustedError(f"the graph asked the model for step {self.served + 1}, "
                                       f"but the trace recorded only {self.served} model step(s)")
        message = messages_from_dict([self.outputs.pop(0)])[0]
        self.served += 1
        if not isinstance(message, AIMessage):
            raise TraceError(f"recorded model output {self.served} is a {message.type} message, not an AI message")
        return ChatResult(generations=[ChatGeneration(message=message)])


class Divergence(BaseModel):
    """One difference between the recorded run and its replay."""

    run: int
    kind: str
    message: str
    tool_call_id: str | None = None
    recorded: Any = None
    replayed: Any = None


class ReplayReport(BaseModel):
    """What a replay found: runs and tool calls compared, divergences, provenance changes."""

    thread_id: str
    runs: int = 0
    tool_calls: int = 0
    divergences: list[Divergence] = Field(default_factory=list)
    changes: list[str] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.divergences


def _evidence_summary(ev: TraceEvent) -> list[tuple[str, list[int] | None, float | None, float | None]]:
    return [(e.id, e.bbox, e.score, e.confidence) for e in ev.evidence]


def _close(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and abs(a - b) <= SCORE_TOLERANCE)


def compare_run(run: int, recorded: list[TraceEvent], replayed: list[TraceEvent]) -> tuple[int, list[Divergence]]:
    """Tool calls compared and divergences between the events of a recorded run and of its replay."""
    out: list[Divergence] = []
    rec_tools = [e for e in recorded if e.kind == "tool"]
    rep_tools = {e.tool_call_id: e for e in replayed if e.kind == "tool"}
    for rec in rec_tools:
        name = f"{rec.tool} call {rec.tool_call_id} (step {rec.step})"
        rep = rep_tools.pop(rec.tool_call_id, None)
        if rep is None:
            out.append(Divergence(run=run, kind="missing", tool_call_id=rec.tool_call_id,
                                  message=f"{name} was not made in the replay"))
            continue
        if rec.status != rep.status:
            out.append(Divergence(run=run, kind="status", tool_call_id=rec.tool_call_id, recorded=rec.error or rec.status,
                                  replayed=rep.error or rep.status, message=f"{name}: {rec.status} then, {rep.status} now"))
        rec_ids, rep_ids = [e.id for e in rec.evidence], [e.id for e in rep.evidence]
        if rec_ids != rep_ids or rec.cited != rep.cited:
            out.append(Divergence(run=run, kind="evidence", tool_call_id=rec.tool_call_id, recorded=rec_ids or rec.cited,
                                  replayed=rep_ids or rep.cited,
                                  message=f"{name}: evidence {rec_ids or rec.cited} then, {rep_ids or rep.cited} now"))
            continue
        for (ev_id, box_a, score_a, conf_a), (_, box_b, score_b, conf_b) in zip(_evidence_summary(rec), _evidence_summary(rep)):
            if box_a != box_b or not _close(score_a, score_b) or not _close(conf_a, conf_b):
                out.append(Divergence(run=run, kind="score", tool_call_id=rec.tool_call_id,
                                      recorded=[box_a, score_a, conf_a], replayed=[box_b, score_b, conf_b],
                                      message=f"{name}: {ev_id} box/score/confidence {[box_a, score_a, conf_a]} then, "
                                              f"{[box_b, score_b, conf_b]} now"))
    for extra in rep_tools.values():
        out.append(Divergence(run=run, kind="extra", tool_call_id=extra.tool_call_id,
                              message=f"{extra.tool} call {extra.tool_call_id} made in the replay only"))
    rec_answer = next((e.answer for e in reversed(recorded) if e.kind == "answer" and e.answer), None)
    rep_answer = next((e.answer for e in reversed(replayed) if e.kind == "answer" and e.answer), None)
    if rec_answer is not None or rep_answer is not None:
        a = (rec_answer.cited, rec_answer.supported) if rec_answer else None
        b = (rep_answer.cited, rep_answer.supported) if rep_answer else None
        if a != b:
            out.append(Divergence(run=run, kind="answer", recorded=a, replayed=b,
                                  message=f"answer (cited, supported) {a} then, {b} now"))
    return len(rec_tools), out


def provenance_changes(recorded: Provenance, replayed: Provenance) -> list[str]:
    """Provenance fields that differ between a recording and its replay."""
    changes = []
    for key in COMPARED_PROVENANCE:
        before, after = getattr(recorded, key), getattr(replayed, key)
        if key == "scene_sha256" and before is None:
            continue
        if before != after:
            changes.append(f"{key}: {before} -> {after}")
    return changes


def replay_thread(
    store: TraceStore,
    thread_id: str,
    *,
    image: str | os.PathLike[str] | None = None,
    encoder: str | None = None,
    patch_store: str | os.PathLike[str] | None = None,
) -> ReplayReport:
    """Replay every recorded run of ``thread_id`` and compare (see the module docstring).

    The replay keeps its session and crops in a temporary folder; it uses the recorded settings (encoder,
    store, tiling, budgets), which ``image``, ``encoder`` and ``patch_store`` override.

    Raises:
        TraceNotFoundError: no trace for the thread.
        TraceError: the trace has no run with provenance to replay.
    """
    from rsrag.agent.interfaces.api import Analyst

    events = store.events(thread_id)
    runs: dict[str, list[TraceEvent]] = {}
    for event in events:
        runs.setdefault(event.run_id, []).append(event)
    starts = [next((e for e in evs if e.kind == "run_start" and e.provenance), None) for evs in runs.values()]
    if not any(starts):
        raise TraceError(f"thread {thread_id!r}: no run with recorded provenance to replay")
    first = next(s for s in starts if s is not None).provenance
    assert first is not None
    settings = first.settings
    report = ReplayReport(thread_id=thread_id)
    model = ReplayChatModel()
    with tempfile.TemporaryDirectory(prefix="rsrag-replay-") as work:
        replay_settings = _replay_settings(
            settings, tiling=first.tiling, work=Path(work), sha256=bool(first.scene_sha256),
            explicit={"encoder.spec": encoder, "store.path": patch_store},
        )
        analyst = Analyst(replay_settings, model=model)
        with analyst:
            for n, (start, recorded) in enumerate(zip(starts, runs.values()), 1):
                if start is None or start.provenance is None:
                    report.divergences.append(Divergence(run=n, kind="unreplayable", message="run has no run_start event"))
                    continue
                model.outputs = [e.output for e in recorded if e.kind == "model" and e.output]
                model.served = 0
                scene = str(image or start.provenance.scene_path)
                try:
                    analyst.ask(scene, start.question or "", thread_id=thread_id)
                except ReplayExhaustedError as exc:
                    report.divergences.append(Divergence(run=n, kind="model", message=str(exc)))
                except RsragError as exc:
                    report.divergences.append(Divergence(run=n, kind="error", message=f"replay failed: {exc}"))
                    continue
                if model.outputs:
                    report.divergences.append(Divergence(run=n, kind="model", message=(
                        f"the replay ended after {model.served} model step(s); {len(model.outputs)} recorded step(s) unused")))
                replay_runs = analyst.tracer.store.runs(thread=thread_id)
                replayed = analyst.tracer.store.events(thread_id, run_id=replay_runs[-1].run_id)
                compared, found = compare_run(n, recorded, replayed)
                report.runs += 1
                report.tool_calls += compared
                report.divergences += found
                new_start = next((e for e in replayed if e.kind == "run_start" and e.provenance), None)
                if new_start is not None and new_start.provenance is not None:
                    report.changes += [f"run {n}: {c}" for c in provenance_changes(start.provenance, new_start.provenance)]
    return report


def _replay_settings(recorded: dict[str, Any], *, tiling: str | None, work: Path, sha256: bool,
                     explicit: dict[str, Any]) -> Settings:
    """The settings a replay runs with: the recorded ones (a whole settings dump, or the few keys traces
    recorded before that), ``explicit`` values over them, sessions, crops and the trace in ``work``."""
    from rsrag.agent.settings import Settings, flatten, load_settings

    if isinstance(recorded.get("encoder"), dict):
        flat = flatten({k: v for k, v in recorded.items() if k in Settings.model_fields})
    else:
        flat = {"encoder.spec": recorded.get("encoder"), "store.path": recorded.get("store"),
                "store.tiling": recorded.get("tiling") or tiling, "retrieval.top_k": recorded.get("top_k"),
                "retrieval.fast_threshold": recorded.get("fast_threshold"),
                **{f"budgets.{k}": v for k, v in (recorded.get("budgets") or {}).items()}}
    flat = {k: v for k, v in flat.items() if v is not None and v != "**********" and not k.startswith(("paths.", "trace."))}
    flat.pop("home", None)
    flat.update({k: v for k, v in explicit.items() if v is not None})
    flat.update({"paths.sessions": work / "replay.sqlite", "paths.crops": work / "crops", "trace.enabled": True,
                 "trace.sha256": sha256, "trace.path": work / "replay.sqlite"})
    return load_settings(overrides=flat)
