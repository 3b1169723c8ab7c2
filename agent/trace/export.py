"""Trace exports: JSON Lines (one event per line) and GeoJSON (the evidence regions), with redaction.

Redaction blanks ``prompts`` (questions, feedback sent to the model) and/or ``answers`` (answer texts, the
model's text replies and the ``answer`` tool's text) in the exported copy; the stored trace is unchanged, and
each redacted event lists what was blanked under ``redacted``.

Every export carries the chain head of the thread (:class:`~rsrag.agent.trace.store.ChainHead`: number of
events, hash of the last one, its HMAC signature when one was written): the last JSONL line is
``{"record": "chain_head", ...}``, a GeoJSON export has an ``rsrag_chain_head`` member and the HTML report
embeds it. Kept elsewhere, an export anchors the chain: ``rsrag trace verify THREAD --export FILE``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from pathlib import Path

from rsrag.agent.trace.events import EvidenceRecord, TraceEvent
from rsrag.agent.trace.store import ChainHead
from rsrag.tools.errors import GeoreferenceError, TraceError
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


CHAIN_HEAD_RECORD = "chain_head"
GEOJSON_HEAD_MEMBER = "rsrag_chain_head"


def head_json(head: ChainHead) -> dict[str, Any]:
    """The chain head as it is written into an export."""
    return {"record": CHAIN_HEAD_RECORD, **head.model_dump(mode="json")}


def export_jsonl(events: Iterable[TraceEvent], redact: set[str] | None = None, head: ChainHead | None = None) -> str:
    """One JSON object per line per event (with ``seq``, ``hash`` and, if redacted, ``redacted``), then the
    chain head on the last line when ``head`` is given."""
    lines = []
    for event in events:
        shown, blanked = redact_event(event, redact or set())
        row = shown.model_dump(mode="json")
        if blanked:
            row["redacted"] = blanked
        lines.append(json.dumps(row, ensure_ascii=False, sort_keys=True))
    if head is not None:
        lines.append(json.dumps(head_json(head), sort_keys=True))
    return "\n".join(lines) + ("\n" if lines else "")


def read_export_anchor(path: str | Path) -> tuple[ChainHead, list[tuple[int, str]]]:
    """The chain head written into an export (JSONL, GeoJSON or HTML), and the ``(index, hash)`` of the
    events it lists (JSONL only; the other formats carry the head alone).

    Raises:
        TraceError: the file cannot be read or carries no chain head.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"export {file} cannot be read ({type(exc).__name__}: {exc})") from None
    head: dict[str, Any] | None = None
    events: list[tuple[int, str]] = []
    stripped = text.lstrip()
    if stripped.startswith("<"):
        start = text.find('<script type="application/json" id="rsrag-chain-head">')
        if start >= 0:
            body = text[text.index(">", start) + 1:text.index("</script>", start)]
            head = _json_object(body)
    elif stripped.startswith("{") and "\n{" not in stripped.strip():
        doc = _json_object(stripped)
        head = doc.get(GEOJSON_HEAD_MEMBER) if isinstance(doc, dict) else None
    else:
        for line in text.splitlines():
            row = _json_object(line) if line.strip() else None
            if not isinstance(row, dict):
                continue
            if row.get("record") == CHAIN_HEAD_RECORD:
                head = row
            elif isinstance(row.get("index"), int) and isinstance(row.get("hash"), str):
                events.append((row["index"], row["hash"]))
    if not isinstance(head, dict):
        raise TraceError(f"export {file} carries no chain head (exported by an older rsrag, or not a trace "
                         "export); give the head with --head instead")
    try:
        return ChainHead.model_validate({k: v for k, v in head.items() if k != "record"}), events
    except ValueError as exc:
        raise TraceError(f"export {file}: its chain head is malformed ({exc})") from None


def _json_object(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


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


def export_geojson(events: list[TraceEvent], head: ChainHead | None = None) -> dict[str, Any]:
    """The thread's evidence regions as a GeoJSON FeatureCollection (lon/lat polygons; ``null`` geometry
    for scenes without georeference), with the producing tool, step and whether an answer cited it, and the
    chain head (member ``rsrag_chain_head``) when ``head`` is given."""
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
                "scene": record.scene, "scene_source": record.scene_source, "scene_id": record.scene_id,
                "map_crs": record.map_crs, "map_bounds": record.map_bounds,
                "score": record.score, "confidence": record.confidence, "query": record.query,
                "tool": event.tool, "tool_call_id": event.tool_call_id, "step": event.step, "run_id": event.run_id,
                "thread_id": event.thread_id, "cited": ev_id in cited,
            },
        })
    collection: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if head is not None:
        collection[GEOJSON_HEAD_MEMBER] = head_json(head)
    return collection
