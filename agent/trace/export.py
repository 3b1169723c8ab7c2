"""Trace exports: JSON Lines (one event per line) and GeoJSON (the evidence regions), with redaction.

Redaction blanks ``prompts`` (questions, feedback sent to the model) and/or ``answers`` (answer texts, the
model's text replies and the ``answer`` tool's text) in the exported copy; the stored trace is unchanged, and
each redacted event lists what was blanked under ``redacted``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from rsrag.agent.trace.events import EvidenceRecord, TraceEvent
from rsrag.tools.errors import GeoreferenceError
from rsrag.tools.georef import map_box_to_lonlat
from rsrag.tools.region import MapBox

REDACTED = "[redacted]"


def _blank_answer_args(args: dict[str, Any] | None) -> dict[str, Any] | None:
    if isinstance(args, dict) and "text" in args:
        return {**args, "text": REDACTED}
    return args


def redact_event(event: TraceEvent, parts: set[str]) -> tuple[TraceEvent, list[str]]:
    """A copy of ``event`` with the ``parts`` (``prompts``, ``answers``) blanked, and the fields blanked."""
    update: dict[str, Any] = {}
    if "prompts" in parts:
        if event.question is not None:
            update["question"] = REDACTED
        if event.kind == "node" and event.node == "finalize" and event.result:
            update["result"] = REDACTED
    if "answers" in parts:
        if event.answer is not None:
            update["answer"] = event.answer.model_copy(update={"text": REDACTED})
        if event.kind == "answer" and event.result:
            update["result"] = REDACTED
        if event.kind == "tool" and event.tool == "answer":
            update["arguments"] = _blank_answer_args(event.arguments)
        if event.kind == "model" and event.output is not None:
            data = dict(event.output.get("data") or {})
            if data.get("content"):
                data["content"] = REDACTED
                update["result"] = REDACTED
            data["tool_calls"] = [
                {**c, "args": _blank_answer_args(c.get("args"))} if c.get("name") == "answer" else c
                for c in data.get("tool_calls") or []
            ]
            update["output"] = {**event.output, "data": data}
            if event.arguments and event.arguments.get("tool_calls"):
                calls = [{**c, "args": _blank_answer_args(c.get("args"))} if c.get("name") == "answer" else c
                         for c in event.arguments["tool_calls"]]
                update["arguments"] = {**event.arguments, "tool_calls": calls}
                if any(c.get("name") == "answer" for c in calls) and "result" not in update:
                    update["result"] = "calls " + ", ".join(
                        f"{c.get('name')}({json.dumps(c.get('args'), default=str)[:200]})" for c in calls)
    return (event.model_copy(update=update), sorted(update)) if update else (event, [])


def export_jsonl(events: Iterable[TraceEvent], redact: set[str] | None = None) -> str:
    """One JSON object per line per event (with ``seq``, ``hash`` and, if redacted, ``redacted``)."""
    lines = []
    for event in events:
        shown, blanked = redact_event(event, redact or set())
        row = shown.model_dump(mode="json")
        if blanked:
            row["redacted"] = blanked
        lines.append(json.dumps(row, ensure_ascii=False, sort_keys=True))
    return "\n".join(lines) + ("\n" if lines else "")


def lonlat_ring(record: EvidenceRecord) -> list[list[float]] | None:
    """The record's map box as a closed lon/lat ring (RFC 7946), or ``None`` when not georeferenced."""
    if record.map_crs is None or record.map_bounds is None or len(record.map_bounds) != 4:
        return None
    left, bottom, right, top = record.map_bounds
    try:
        west, south, east, north = map_box_to_lonlat(MapBox(crs=record.map_crs, left=left, bottom=bottom, right=right, top=top))
    except (GeoreferenceError, ValueError):
        return None
    return [[west, south], [east, south], [east, north], [west, north], [west, south]]


def evidence_of(events: Iterable[TraceEvent]) -> tuple[dict[str, tuple[EvidenceRecord, TraceEvent]], set[str]]:
    """Every evidence record produced in ``events`` (first producer kept) and the ids answers cited."""
    found: dict[str, tuple[EvidenceRecord, TraceEvent]] = {}
    cited: set[str] = set()
    for event in events:
        if event.kind == "tool":
            for record in event.evidence:
                found.setdefault(record.id, (record, event))
        if event.kind == "answer":
            cited.update(event.cited)
            for record in event.evidence:
                found.setdefault(record.id, (record, event))
    return found, cited


def export_geojson(events: list[TraceEvent]) -> dict[str, Any]:
    """The thread's evidence regions as a GeoJSON FeatureCollection (lon/lat polygons; ``null`` geometry
    for scenes without georeference), with the producing tool, step and whether an answer cited it."""
    found, cited = evidence_of(events)
    features = []
    for ev_id, (record, event) in found.items():
        if record.bbox is None:
            continue
        ring = lonlat_ring(record)
        features.append({
            "type": "Feature",
            "id": ev_id,
            "geometry": {"type": "Polygon", "coordinates": [ring]} if ring else None,
            "properties": {
                "evidence_id": ev_id, "kind": record.kind, "path": record.path, "bbox_px": record.bbox,
                "scene": record.scene, "map_crs": record.map_crs, "map_bounds": record.map_bounds,
                "score": record.score, "confidence": record.confidence, "query": record.query,
                "tool": event.tool, "tool_call_id": event.tool_call_id, "step": event.step, "run_id": event.run_id,
                "thread_id": event.thread_id, "cited": ev_id in cited,
            },
        })
    return {"type": "FeatureCollection", "features": features}
