"""The HTML report of a thread's trace: one self-contained page (no external URL; images as data URLs).

For each run: the question, the answer split into claims with each claim linked to the evidence it cites,
an overview of the scene with every evidence region drawn on it (cited ones highlighted, each a link to its
card), the evidence cards with their crops, the provenance, and the steps one by one.
"""

from __future__ import annotations

import base64
import io
import re
from datetime import datetime, UTC
from html import escape
from pathlib import Path
from typing import Any

from PIL import Image

from rsrag.agent.evidence import EVIDENCE_ID, find_evidence_ids
from rsrag.agent.trace.events import EvidenceRecord, Provenance, TraceEvent
from rsrag.agent.trace.export import evidence_of, redact_event
from rsrag.tools.errors import RsragError

OVERVIEW_SIDE = 900
_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1f2933;background:#fff}
h1{font-size:22px}h2{font-size:18px;border-top:2px solid #cbd2d9;padding-top:12px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #cbd2d9;padding:3px 6px;vertical-align:top;text-align:left}
.overview{position:relative;display:inline-block;border:1px solid #9aa5b1}.overview img{display:block;max-width:100%}
.overview svg{position:absolute;left:0;top:0;width:100%;height:100%}
.claims li{margin:4px 0}.ev{border:1px solid #cbd2d9;border-radius:6px;padding:8px;margin:8px;display:inline-block;
vertical-align:top;width:260px}.ev table{width:100%;table-layout:fixed;overflow-wrap:anywhere}.ev img{max-width:240px;image-rendering:pixelated}.cited{border-color:#e11d48;border-width:2px}
.err{color:#b91c1c}.muted{color:#616e7c}code{font-size:12px}
"""


def _png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _crop_url(path: str | None) -> str | None:
    if not path or not Path(path).is_file():
        return None
    try:
        with Image.open(path) as img:
            img.thumbnail((480, 480))
            return _png(img.convert("RGB"))
    except OSError:
        return None


def _overview(prov: Provenance | None, found: dict[str, tuple[EvidenceRecord, TraceEvent]]) -> tuple[str | None, str]:
    """The scene overview as a data URL (from the scene file, else the scene_info crop) and a note."""
    if prov is not None and Path(prov.scene_path).is_file():
        from rsrag.tools.raster import open_scene

        try:
            with open_scene(prov.scene_path) as scene:
                out = scene.full_box.fit_within(OVERVIEW_SIDE)
                url = _png(Image.fromarray(scene.read_display(scene.full_box, out_size=out)))
                changed = scene.fingerprint != prov.scene_fingerprint
            return url, "the scene file has changed since this run" if changed else ""
        except RsragError as exc:
            note = f"scene not readable ({exc})"
    else:
        note = "scene file not found"
    for record, _ in found.values():
        if record.kind == "scene" and (url := _crop_url(record.crop)):
            return url, note + "; overview from the run's scene_info image"
    return None, note


def _link_ids(text: str) -> str:
    return EVIDENCE_ID.sub(lambda m: f'<a href="#ev-{m.group(0)}">{m.group(0)}</a>', escape(text))


def _claims(text: str, cited: list[str]) -> str:
    """The answer as a list of claims (sentences), each linked to the evidence it cites."""
    sentences = [s for s in re.split(r"(?<=[.!?;])\s+", text.strip()) if s]
    items = []
    for sentence in sentences:
        ids = find_evidence_ids(sentence)
        refs = ids or cited  # a claim naming no evidence rests on everything the answer cites
        links = " ".join(f'<a class="ref" href="#ev-{i}">[{i}]</a>' for i in refs)
        items.append(f"<li>{_link_ids(sentence)} {links}</li>")
    all_links = ", ".join(f'<a href="#ev-{i}">{i}</a>' for i in cited) or "none"
    return f'<ol class="claims">{"".join(items)}</ol><p>Cited evidence: {all_links}</p>'


def _svg(prov: Provenance | None, found: dict[str, tuple[EvidenceRecord, TraceEvent]], cited: set[str]) -> str:
    if prov is None or len(prov.scene_size) != 2:
        return ""
    width, height = prov.scene_size
    shapes = []
    ordered = sorted(found.items(), key=lambda kv: kv[0] in cited)  # cited boxes drawn last, on top
    for ev_id, (record, _) in ordered:
        if record.bbox is None or record.kind == "scene":
            continue
        x0, y0, x1, y1 = record.bbox
        colour, stroke = ("#ff1f5a", 3) if ev_id in cited else ("#2563eb", 1.5)
        shapes.append(
            f'<a href="#ev-{ev_id}"><rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="{colour}" '
            f'fill-opacity="0.12" stroke="{colour}" stroke-width="{stroke}" vector-effect="non-scaling-stroke">'
            f"<title>{ev_id} {escape(record.path)}</title></rect></a>")
    return f'<svg viewBox="0 0 {width} {height}" preserveAspectRatio="none">{"".join(shapes)}</svg>'


def _card(record: EvidenceRecord, event: TraceEvent, cited: set[str]) -> str:
    url = _crop_url(record.crop)
    image = f'<img alt="crop {record.id}" src="{url}">' if url else '<p class="muted">no crop</p>'
    rows = [("path", record.path), ("bbox px", record.bbox), ("map", f"{record.map_crs} {record.map_bounds}" if record.map_crs else None),
            ("score", record.score), ("confidence", record.confidence), ("query", record.query),
            ("entry", f"{record.knowledge_id} {record.title}" if record.knowledge_id else None),
            ("by", f"{event.tool or event.node} step {event.step}")]
    table = "".join(f"<tr><th>{k}</th><td>{escape(str(v))}</td></tr>" for k, v in rows if v is not None)
    css = "ev cited" if record.id in cited else "ev"
    return f'<div class="{css}" id="ev-{record.id}"><b>{record.id}</b>{" (cited)" if record.id in cited else ""}{image}<table>{table}</table></div>'


def _steps(events: list[TraceEvent]) -> str:
    rows = []
    for ev in events:
        what = ev.tool or ev.node or ""
        args = escape(str(ev.arguments)[:300]) if ev.arguments else ""
        text = _link_ids((ev.error if ev.status == "error" else ev.result) or "")[:1200]
        ids = " ".join(f'<a href="#ev-{e.id}">{e.id}</a>' for e in ev.evidence)
        extra = " ".join(filter(None, [f"{ev.latency_ms:.0f} ms" if ev.latency_ms is not None else "",
                                       f"model {escape(ev.model)}" if ev.model else "",
                                       f"tokens {ev.tokens.total}" if ev.tokens and ev.tokens.total else "",
                                       escape(ev.prompt_version or "")]))
        css = ' class="err"' if ev.status == "error" else ""
        rows.append(f"<tr{css}><td>{ev.index}</td><td>{ev.step if ev.step is not None else ''}</td><td>{ev.kind}</td>"
                    f"<td>{escape(what)}</td><td><code>{args}</code></td><td>{text}</td><td>{ids}</td><td>{extra}</td></tr>")
    head = "<tr><th>#</th><th>step</th><th>kind</th><th>node/tool</th><th>arguments</th><th>result</th><th>evidence</th><th>details</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def render_html(events: list[TraceEvent], redact: set[str] | None = None, head: Any = None) -> str:
    """The self-contained HTML report of a thread's events (see the module docstring); ``head`` (a
    :class:`~rsrag.agent.trace.store.ChainHead`) is shown and embedded as JSON for ``trace verify --export``."""
    events = [redact_event(e, redact or set())[0] for e in events]
    runs: dict[str, list[TraceEvent]] = {}
    for event in events:
        runs.setdefault(event.run_id, []).append(event)
    thread = events[0].thread_id if events else ""
    body = [f"<h1>rsrag trace: thread {escape(thread)}</h1>",
            f'<p class="muted">{len(runs)} run(s), {len(events)} events; redacted: {escape(", ".join(sorted(redact or [])) or "nothing")}</p>']
    for n, (run_id, run_events) in enumerate(runs.items(), 1):
        start = next((e for e in run_events if e.kind == "run_start"), None)
        end = next((e for e in run_events if e.kind == "run_end"), None)
        prov = start.provenance if start else None
        found, cited = evidence_of(run_events)
        answer = end.answer if end and end.answer else next((e.answer for e in run_events if e.answer), None)
        when = datetime.fromtimestamp(run_events[0].time, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        body.append(f"<h2>Run {n}: {escape(start.question or '') if start else ''}</h2>"
                    f'<p class="muted">run {run_id} &middot; {when} &middot; status {escape(end.result or "") if end else "unfinished (no run_end: crashed or still running)"}</p>')
        if answer is not None:
            flag = "" if answer.supported else f' <span class="err">unsupported: {escape(answer.missing or "")}</span>'
            body.append(f"<h3>Answer (confidence {answer.confidence:.2f}){flag}</h3>{_claims(answer.text, answer.cited)}")
        url, note = _overview(prov, found)
        if url:
            body.append(f'<h3>Evidence on the scene</h3><div class="overview"><img alt="scene overview" src="{url}">'
                        f"{_svg(prov, found, cited)}</div>")
        if note:
            body.append(f'<p class="muted">{escape(note)}</p>')
        body.append("<h3>Evidence</h3>" + "".join(_card(r, e, cited) for r, e in found.values()))
        if prov is not None:
            rows = {k: v for k, v in prov.model_dump().items() if v not in (None, [], {}, "")}
            body.append("<h3>Provenance</h3><table>" + "".join(
                f"<tr><th>{escape(k)}</th><td><code>{escape(str(v))}</code></td></tr>" for k, v in rows.items()) + "</table>")
        body.append("<h3>Steps</h3>" + _steps(run_events))
    if head is not None:
        import json

        from rsrag.agent.trace.export import head_json

        data = json.dumps(head_json(head), sort_keys=True).replace("</", "<\\/")
        body.append(f'<h3>Chain head</h3><p class="muted">{head.events} events, last hash <code>{escape(head.hash)}</code>'
                    f'{" (HMAC-signed)" if head.signature else ""}; keep it to anchor the trace: '
                    f'<code>rsrag trace verify {escape(head.thread_id)} --head {escape(head.line())}</code></p>'
                    f'<script type="application/json" id="rsrag-chain-head">{data}</script>')
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>rsrag trace {escape(thread)}</title>'
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>")
