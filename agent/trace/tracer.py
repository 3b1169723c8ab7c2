"""Tracing runs of the analyst: settings, the per-Analyst :class:`Tracer` and the per-question :class:`TraceRun`.

Usage (this is what :class:`rsrag.agent.interfaces.api.Analyst` does)::

    with tracer.run(context, thread_id, scene_path, question) as run:
        result = graph.invoke(inputs, run.config(config), context=context)

``run_start`` (question and provenance) is written when the block starts, each step as it finishes
(through the :class:`~rsrag.agent.trace.recorder.TraceRecorder` callback in the run config), and
``run_end`` (status, answer, the step -> checkpoint id map) when the block ends, also on errors.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from rsrag.agent.context import AgentContext, Resources
from rsrag.agent.settings import TraceSettings
from rsrag.tools.sources import source_key
from rsrag.agent.trace.events import AnswerRecord, TraceEvent
from rsrag.agent.trace.provenance import collect_provenance
from rsrag.agent.trace.recorder import TraceRecorder
from rsrag.agent.trace.store import TraceStore

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig

_STORE_LOCK = threading.Lock()


def hmac_key(settings: Any) -> bytes | None:
    """The key that signs chain heads (``trace.hmac_key``), or ``None`` when none is set."""
    secret = getattr(settings, "hmac_key", None)
    value = secret.get_secret_value() if hasattr(secret, "get_secret_value") else secret
    return value.encode() if value else None


class Tracer:
    """Records the runs of one :class:`~rsrag.agent.interfaces.api.Analyst`.

    Args:
        sessions_path: the sessions SQLite file; traces go into it unless ``settings.path`` says otherwise.
        settings: the ``[trace]`` settings; ``True``/``None``: the defaults; ``False``: tracing off.
        graph: the compiled graph (its checkpointer links steps to checkpoint ids).
        tracer_provider: an OpenTelemetry tracer provider (overrides ``settings.otel``).
    """

    def __init__(self, sessions_path: str | os.PathLike[str], settings: TraceSettings | bool | None = None,
                 graph: Any = None, tracer_provider: Any = None) -> None:
        if settings is None or settings is True:
            settings = TraceSettings()
        elif settings is False:
            settings = TraceSettings(enabled=False)
        self.settings = settings
        self.path = Path(settings.path or sessions_path)
        self.graph = graph
        self._provider = tracer_provider
        self._provider_resolved = tracer_provider is not None or not settings.enabled
        self._store: TraceStore | None = None

    @property
    def store(self) -> TraceStore:
        """The trace store (opened on first use, once, whichever of a server's threads asks first)."""
        with _STORE_LOCK:
            if self._store is None:
                self._store = TraceStore(self.path, hmac_key=hmac_key(self.settings))
            return self._store

    @property
    def provider(self) -> Any:
        """The OpenTelemetry tracer provider, or ``None`` when no exporter is configured (resolved once)."""
        if not self._provider_resolved:
            self._provider_resolved = True
            if self._provider is None and (self.settings.otel or os.environ.get("OTEL_TRACES_EXPORTER")):
                from rsrag.agent.trace.otel import tracer_provider_from_settings

                self._provider = tracer_provider_from_settings(self.settings.otel)
        return self._provider

    def run(self, context: AgentContext, resources: Resources, thread_id: str, scene: str | os.PathLike[str] | None,
            question: str, catalog: str | None = None) -> TraceRun:
        """A context manager tracing one question on ``thread_id`` about ``scene`` or across ``catalog`` (a
        no-op when tracing is off)."""
        return TraceRun(self, context, resources, thread_id, source_key(scene) if scene is not None else None, question,
                        catalog=catalog)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        flush = getattr(self._provider, "force_flush", None)
        if callable(flush):
            flush()


class TraceRun:
    """The trace of one question (see the module docstring)."""

    def __init__(self, tracer: Tracer, context: AgentContext, resources: Resources, thread_id: str, scene: str | None,
                 question: str, catalog: str | None = None) -> None:
        self.tracer, self.context, self.resources = tracer, context, resources
        self.thread_id, self.scene, self.question, self.catalog = thread_id, scene, question, catalog
        self.run_id = uuid.uuid4().hex
        self.enabled = tracer.settings.enabled
        self.recorder: TraceRecorder | None = None
        self.events: list[TraceEvent] = []
        self.answer: AnswerRecord | None = None
        self._spans: Any = None
        self._started = time.time()

    # --- the block --------------------------------------------------------------------------------------

    def __enter__(self) -> TraceRun:
        if not self.enabled:
            return self
        self._started = time.time()
        if self.tracer.provider is not None:
            from rsrag.agent.trace.otel import SpanEmitter

            self._spans = SpanEmitter(self.tracer.provider, self.thread_id, self.run_id, self._started)
        provenance = collect_provenance(self.context, self.resources, self.scene, sha256=self.tracer.settings.sha256,
                                        catalog=self.catalog)
        self._write(TraceEvent(run_id=self.run_id, thread_id=self.thread_id, time=time.time(), kind="run_start",
                               question=self.question, provenance=provenance), self._started)
        self.recorder = TraceRecorder(self._write, self.run_id, self.thread_id, self.resources)
        return self

    def config(self, config: RunnableConfig) -> RunnableConfig:
        """``config`` with the recorder added to its callbacks."""
        if self.recorder is None:
            return config
        callbacks = config.get("callbacks")
        extra = [self.recorder]
        if callbacks is None:
            merged: Any = extra
        elif isinstance(callbacks, list):
            merged = callbacks + extra
        else:  # a callback manager
            merged = callbacks.copy()
            merged.add_handler(self.recorder, inherit=True)
        return cast("RunnableConfig", {**config, "callbacks": merged})

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self.enabled or self.recorder is None:
            return
        if exc is None:
            status, error = "ok", None
        elif isinstance(exc, (GeneratorExit, KeyboardInterrupt)):
            status, error = "interrupted", type(exc).__name__
        else:
            status, error = "error", f"{type(exc).__name__}: {exc}"
        if self.answer is None:
            found = [e.answer for e in self.events if e.kind == "answer" and e.answer is not None]
            self.answer = found[-1] if found else None
        end = TraceEvent(run_id=self.run_id, thread_id=self.thread_id, time=time.time(), kind="run_end",
                         status="ok" if status == "ok" else "error", result=status, error=error, answer=self.answer,
                         cited=list(self.answer.cited) if self.answer else [], checkpoints=self._checkpoints(),
                         scenes=self._scenes(),
                         latency_ms=round((time.time() - self._started) * 1000, 3))
        if self.recorder.failures:
            end.error = "; ".join(filter(None, [error, f"{len(self.recorder.failures)} trace event(s) not written"]))
        self._write(end, self._started)
        if self._spans is not None:
            self._spans.finish(status, end.time)

    def answered(self, answer: Any) -> None:
        """Record the answer the caller received (when the graph's own answer event is not enough)."""
        self.answer = AnswerRecord.of(answer)

    # --- internals --------------------------------------------------------------------------------------

    def _write(self, event: TraceEvent, started: float) -> None:
        stored = self.tracer.store.append(event)
        self.events.append(stored)
        if self._spans is not None:
            self._spans.event(stored, started)

    def _scenes(self) -> list[dict[str, str | None]]:
        """Every scene the evidence of this run lies in, in order of first use (its source where recorded)."""
        out: dict[str, dict[str, str | None]] = {}
        for event in self.events:
            for record in event.evidence:
                if record.scene is None:
                    continue
                known = out.setdefault(record.scene, {"source": None, "fingerprint": record.scene, "id": None})
                known["source"] = known["source"] or record.scene_source
                known["id"] = known["id"] or record.scene_id
        if not out and self.scene is not None and self.events and self.events[0].provenance is not None:
            prov = self.events[0].provenance
            out[prov.scene_fingerprint] = {"source": self.scene, "fingerprint": prov.scene_fingerprint, "id": None}
        return list(out.values())

    def _checkpoints(self) -> dict[str, str]:
        """Step -> id of the checkpoint written after it, for the steps of this run."""
        saver = getattr(self.tracer.graph, "checkpointer", None)
        if saver is None or self.recorder is None or not self.recorder.steps or not hasattr(saver, "list"):
            return {}
        first, last = min(self.recorder.steps) - 1, max(self.recorder.steps)
        out: dict[str, str] = {}
        for item in saver.list({"configurable": {"thread_id": self.thread_id, "checkpoint_ns": ""}}):
            step = (item.metadata or {}).get("step")
            if isinstance(step, int) and first <= step <= last:
                out[str(step)] = item.config["configurable"]["checkpoint_id"]
            elif isinstance(step, int) and step < first:
                break
        return dict(sorted(out.items(), key=lambda kv: int(kv[0])))
