"""Audit-grade traces of analyst runs: every step, its evidence and its provenance.

* :mod:`~rsrag.agent.trace.events`: the records (:class:`TraceEvent`, :class:`Provenance`).
* :mod:`~rsrag.agent.trace.store`: append-only, hash-chained SQLite storage, queries, :meth:`TraceStore.verify`.
* :mod:`~rsrag.agent.trace.recorder` / :mod:`~rsrag.agent.trace.tracer`: recording a run as it goes.
* :mod:`~rsrag.agent.trace.export` / :mod:`~rsrag.agent.trace.report`: JSONL, GeoJSON and HTML exports.
* :mod:`~rsrag.agent.trace.replay`: re-running a thread with the recorded model outputs.
* :mod:`~rsrag.agent.trace.otel`: optional OpenTelemetry spans.
"""

from rsrag.agent.trace.events import AnswerRecord, EvidenceRecord, Provenance, TraceEvent
from rsrag.agent.trace.store import RunRow, TraceStore, VerifyReport
from rsrag.agent.trace.tracer import TraceRun, TraceSettings, Tracer

__all__ = [
    "AnswerRecord", "EvidenceRecord", "Provenance", "RunRow", "TraceEvent", "TraceRun", "TraceSettings",
    "TraceStore", "Tracer", "VerifyReport",
]
