"""Optional OpenTelemetry spans for traced runs (GenAI semantic conventions).

Spans are made only when an exporter is configured: ``RSRAG_TRACE__OTEL=console|otlp`` (the OTLP/HTTP
exporter reads the standard ``OTEL_EXPORTER_OTLP_*`` variables), the standard ``OTEL_TRACES_EXPORTER``, or
a tracer provider handed to :class:`~rsrag.agent.trace.tracer.Tracer`. opentelemetry-sdk is imported
only then (``pip install 'rsrag[otel]'``).

One ``invoke_agent`` span per run, with a child span per step: ``chat <model>`` for model calls and
``execute_tool <tool>`` for tool calls (``gen_ai.*`` attributes), ``<node>`` for other graph nodes.
"""

from __future__ import annotations

import os
from typing import Any

from rsrag.agent.trace.events import TraceEvent
from rsrag.tools.errors import ConfigError


def tracer_provider_from_settings(exporter: str) -> Any | None:
    """A tracer provider exporting to ``exporter`` (``console`` / ``otlp``), or ``None`` when none is configured."""
    name = (exporter or os.environ.get("OTEL_TRACES_EXPORTER", "")).strip().lower()
    if name in ("", "none"):
        return None
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError as exc:
        raise ConfigError(f"OpenTelemetry exporter {name!r} configured but opentelemetry-sdk is not installed "
                          "(pip install 'rsrag[otel]')") from exc
    if name == "console":
        span_exporter: Any = ConsoleSpanExporter()
    elif name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise ConfigError("OTLP exporter configured but opentelemetry-exporter-otlp-proto-http is not installed") from exc
        span_exporter = OTLPSpanExporter()
    else:
        raise ConfigError(f"unknown OpenTelemetry exporter {name!r}: use console or otlp")
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    return provider


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class SpanEmitter:
    """Turns the trace events of one run into OpenTelemetry spans.

    Args:
        provider: an OpenTelemetry ``TracerProvider``.
        thread_id / run_id: recorded as ``gen_ai.conversation.id`` and ``rsrag.run_id``.
        started: start of the run (seconds since the epoch).
    """

    def __init__(self, provider: Any, thread_id: str, run_id: str, started: float) -> None:
        from opentelemetry import trace

        self._trace = trace
        self.tracer = provider.get_tracer("rsrag.agent.trace")
        self.provider = provider
        self.run_span = self.tracer.start_span(
            "invoke_agent rsrag-analyst", start_time=_ns(started), kind=trace.SpanKind.INTERNAL,
            attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "rsrag-analyst",
                        "gen_ai.conversation.id": thread_id, "rsrag.run_id": run_id})

    def event(self, ev: TraceEvent, started: float) -> None:
        """A span for one step (run-level events only annotate the run span)."""
        if ev.kind in ("run_start", "run_end"):
            if ev.provenance is not None:
                self.run_span.set_attribute("rsrag.scene.fingerprint", ev.provenance.scene_fingerprint)
                if ev.provenance.encoder_id:
                    self.run_span.set_attribute("rsrag.encoder.id", ev.provenance.encoder_id)
            return
        attrs: dict[str, Any] = {"rsrag.event.index": ev.index, "rsrag.node": ev.node or ""}
        if ev.step is not None:
            attrs["rsrag.step"] = ev.step
        if ev.kind == "model":
            name = f"chat {ev.model or 'model'}"
            attrs.update({"gen_ai.operation.name": "chat", "gen_ai.request.model": ev.model or "",
                          "gen_ai.provider.name": ev.provider or ev.backend or ""})
            if ev.tokens is not None and ev.tokens.input is not None:
                attrs["gen_ai.usage.input_tokens"] = ev.tokens.input
            if ev.tokens is not None and ev.tokens.output is not None:
                attrs["gen_ai.usage.output_tokens"] = ev.tokens.output
        elif ev.kind == "tool":
            name = f"execute_tool {ev.tool}"
            attrs.update({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": ev.tool or "",
                          "gen_ai.tool.call.id": ev.tool_call_id or "", "gen_ai.tool.type": "function",
                          "rsrag.evidence.ids": [e.id for e in ev.evidence]})
        else:
            name = f"{ev.kind} {ev.node or ''}".strip()
        if ev.cited:
            attrs["rsrag.evidence.cited"] = list(ev.cited)
        start = ev.time - (ev.latency_ms or 0.0) / 1000 if ev.latency_ms else started
        span = self.tracer.start_span(name, context=self._trace.set_span_in_context(self.run_span),
                                      start_time=_ns(start), attributes=attrs)
        if ev.status == "error":
            span.set_attribute("error.type", (ev.error or "error").split(":")[0][:100])
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, ev.error or ""))
        span.end(end_time=_ns(ev.time))

    def finish(self, status: str, ended: float) -> None:
        """End the run span."""
        if status != "ok":
            self.run_span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, status))
        self.run_span.end(end_time=_ns(ended))
