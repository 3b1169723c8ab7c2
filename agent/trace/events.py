"""Trace records: one :class:`TraceEvent` per step of a run, and the run's :class:`Provenance`.

Events are small, JSON-serialisable pydantic models. Their canonical JSON (sorted keys, no spaces) is what
the store hashes into the thread's hash chain, so an event's content cannot change without
:func:`rsrag.agent.trace.store.TraceStore.verify` noticing.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, Field

from rsrag.agent.evidence import Answer, Evidence

EventKind = Literal["run_start", "model", "tool", "node", "answer", "error", "run_end"]
RESULT_CHARS = 2000
"""Longest tool result or model text kept in an event (the full text stays in the checkpoints)."""


class TokenUsage(BaseModel):
    """Tokens of one model call, where the backend reports them."""

    input: int | None = None
    output: int | None = None
    total: int | None = None


class EvidenceRecord(BaseModel):
    """The compact form of an :class:`~rsrag.agent.evidence.Evidence` kept in a trace event."""

    id: str
    kind: str
    path: str
    bbox: list[int] | None = None
    scene: str | None = None
    scene_source: str | None = None
    """The path or URL of the evidence's scene (``scene`` is its fingerprint)."""
    scene_id: str | None = None
    """The catalog's id of that scene, for evidence from a catalog search."""
    map_crs: str | None = None
    map_bounds: list[float] | None = None
    score: float | None = None
    confidence: float | None = None
    query: str | None = None
    crop: str | None = None
    knowledge_id: str | None = None
    title: str | None = None
    index_version: int | None = None

    @classmethod
    def of(cls, ev: Evidence) -> EvidenceRecord:
        """Compact record of ``ev``."""
        region = ev.region
        version = ev.provenance.get("index_version")
        return cls(
            id=ev.id, kind=ev.kind, path=ev.path, bbox=ev.bbox, scene=region.scene if region else None,
            scene_source=ev.scene_source, scene_id=ev.scene_id,
            map_crs=region.map_box.crs if region and region.map_box else None,
            map_bounds=list(region.map_box.as_tuple()) if region and region.map_box else None,
            score=ev.score, confidence=ev.confidence, query=ev.query, crop=ev.crop,
            knowledge_id=ev.knowledge_id, title=ev.title,
            index_version=int(version) if isinstance(version, (int, float)) else None,
        )


class AnswerRecord(BaseModel):
    """The accepted answer of a run."""

    text: str
    cited: list[str]
    confidence: float
    supported: bool
    missing: str | None = None
    backend: str = ""
    steps: int = 0

    @classmethod
    def of(cls, answer: Answer) -> AnswerRecord:
        """Compact record of ``answer``."""
        return cls(text=answer.text, cited=list(answer.cited), confidence=answer.confidence,
                   supported=answer.supported, missing=answer.missing, backend=answer.backend, steps=answer.steps)


class Provenance(BaseModel):
    """What produced a run's results, recorded once at its start.

    Attributes:
        scene_path / scene_fingerprint / scene_sha256: the image (the full SHA-256 only on request); empty
            for a run across a catalog that started with no scene open (the scenes it used are on ``run_end``).
        catalog: the catalog of scenes the run worked across, if any.
        scene_size: ``[width, height]`` in pixels; scene_crs: its CRS, if georeferenced.
        encoder_spec / encoder_id: the encoder asked for and the one loaded (its id includes a weights hash).
        index_key / index_table / index_version / tiling: the scene's patch index and its table version.
        knowledge_table / knowledge_version: the knowledge base's table and version, when one is configured.
        prompts: prompt name -> version used by the graph.
        settings: the run's settings (backend, budgets, top_k, threshold, store, crop folder).
        package_version / versions: rsrag's version and those of the libraries that shape results.
    """

    scene_path: str
    scene_fingerprint: str
    scene_sha256: str | None = None
    scene_size: list[int] = Field(default_factory=list)
    scene_crs: str | None = None
    catalog: str | None = None
    encoder_spec: str | None = None
    encoder_id: str | None = None
    index_key: str | None = None
    index_table: str | None = None
    index_version: int | None = None
    tiling: str | None = None
    knowledge_table: str | None = None
    knowledge_version: int | None = None
    prompts: dict[str, str] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)
    package_version: str = ""
    versions: dict[str, str] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)


class TraceEvent(BaseModel):
    """One step of a run.

    Attributes:
        seq: the store's global sequence number (0 until stored).
        index: position in the thread's hash chain (assigned by the store).
        run_id / thread_id: the run (one question) and the LangGraph thread it belongs to.
        time: when the step ended (seconds since the epoch).
        kind: ``run_start`` (question + provenance), ``model``, ``tool``, ``node``, ``answer``, ``error``, ``run_end``.
        node / step / checkpoint_ns: the graph node, its LangGraph superstep and checkpoint namespace; the
            checkpoint written after the step is ``checkpoints[step]`` of the run's ``run_end`` event.
        tool / tool_call_id / arguments: the tool call, for tool events (and the calls a model event asked for).
        result: compact text result (tool output, model text, node summary).
        status / error: ``ok`` or ``error`` and the error message.
        evidence / cited: evidence produced by the step, and ids cited (by an answer).
        model / backend / provider / prompt_version / prompt_digest / tokens / latency_ms: model call details.
        output: the model's message as LangChain dict (what a replay returns).
        question / provenance / answer / checkpoints: run-level data on run_start, answer and run_end.
        prev_hash / hash: the hash chain (``hash`` = SHA-256 of the canonical JSON without ``hash``/``seq``).
    """

    seq: int = 0
    index: int = 0
    run_id: str
    thread_id: str
    time: float
    kind: EventKind
    node: str | None = None
    step: int | None = None
    checkpoint_ns: str | None = None
    tool: str | None = None
    tool_call_id: str | None = None
    arguments: dict[str, Any] | None = None
    result: str | None = None
    status: Literal["ok", "error"] = "ok"
    error: str | None = None
    evidence: list[EvidenceRecord] = Field(default_factory=list)
    cited: list[str] = Field(default_factory=list)
    model: str | None = None
    backend: str | None = None
    provider: str | None = None
    prompt_version: str | None = None
    prompt_digest: str | None = None
    tokens: TokenUsage | None = None
    latency_ms: float | None = None
    output: dict[str, Any] | None = None
    question: str | None = None
    provenance: Provenance | None = None
    answer: AnswerRecord | None = None
    checkpoints: dict[str, str] | None = None
    scenes: list[dict[str, str | None]] | None = None
    """On ``run_end``: every scene the run's evidence lies in (``source``, ``fingerprint``, catalog ``id``)."""
    prev_hash: str = ""
    hash: str = ""

    def canonical(self) -> str:
        """The JSON text that is hashed: sorted keys, no whitespace, without ``hash`` and ``seq``."""
        data = _without_unset_additions(self.model_dump(mode="json", exclude={"hash", "seq"}))
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def compute_hash(self) -> str:
        """SHA-256 (hex) of :meth:`canonical`."""
        return hashlib.sha256(self.canonical().encode()).hexdigest()

    def label(self) -> str:
        """A short name for messages: ``#index kind tool/node (step N)``."""
        what = self.tool or self.node or ""
        step = f" step {self.step}" if self.step is not None else ""
        return f"event #{self.index} ({self.kind}{' ' + what if what else ''}{step}, run {self.run_id[:8]})"


ADDED_FIELDS = {"scenes", "catalog", "scene_source", "scene_id"}
"""Fields added after traces were first written (scenes across a catalog): left out of the hashed JSON while
unset, so events written before them keep their hashes."""


def _without_unset_additions(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _without_unset_additions(v) for k, v in data.items() if not (k in ADDED_FIELDS and v is None)}
    if isinstance(data, list):
        return [_without_unset_additions(v) for v in data]
    return data


def clip(text: str | None, limit: int = RESULT_CHARS) -> str | None:
    """``text`` cut to ``limit`` characters (with a marker when cut)."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 20] + f"... [{len(text) - limit + 20} chars cut]"
