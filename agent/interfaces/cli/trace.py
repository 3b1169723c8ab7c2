"""``rsrag trace``: list, show, export, replay and verify the traces of analyst runs."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from typing import TYPE_CHECKING

import typer

from rsrag.agent.interfaces.cli.app import app, console, err_console, state
from rsrag.tools.errors import ConfigError, QueryError, TraceError, TraceIntegrityError

if TYPE_CHECKING:
    from rsrag.agent.trace.events import TraceEvent
    from rsrag.agent.trace.store import TraceStore

trace_app = typer.Typer(help="Inspect, export, replay and verify the traces of analyst runs.", no_args_is_help=True)
app.add_typer(trace_app, name="trace")

DB_HELP = "Trace database (default: settings, trace.path, else the sessions file paths.sessions)."
FORMATS = ("jsonl", "geojson", "html")


def _store(db: Path | None) -> TraceStore:
    from rsrag.agent.trace.store import TraceStore

    from rsrag.agent.trace.tracer import hmac_key

    settings = state.settings()
    path = db or settings.trace_path
    if not Path(path).is_file():
        raise ConfigError(f"{path}: no trace database (run `rsrag ask` first, or pass --db)")
    return TraceStore(path, hmac_key=hmac_key(settings.trace))


def _time(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError as exc:
        raise QueryError(f"{name} {value!r} is not an ISO date or time, e.g. 2026-05-01 or 2026-05-01T12:00") from exc


def _stamp(seconds: float | None) -> str:
    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S") if seconds else ""


@trace_app.command("list")
def list_command(
    thread: str | None = typer.Option(None, "--thread", help="Only this thread."),
    scene: str | None = typer.Option(None, "--scene", help="Only runs on this scene (fingerprint or part of its path)."),
    since: str | None = typer.Option(None, "--since", help="Only runs started at or after this ISO time."),
    until: str | None = typer.Option(None, "--until", help="Only runs started at or before this ISO time."),
    limit: int = typer.Option(50, "--limit", min=1, help="Most recent runs shown."),
    db: Path | None = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """List traced runs (one per question), oldest first."""
    from rich.table import Table

    store = _store(db)
    runs = store.runs(thread=thread, scene=scene, since=_time(since, "--since"), until=_time(until, "--until"), limit=limit)
    if not runs:
        console.print("no traced runs match")
        return
    table = Table("thread", "run", "started", "scene", "question", "status", "events")
    for column in (0, 1, 5):
        table.columns[column].no_wrap = True
    for r in runs:
        table.add_row(r.thread_id, r.run_id[:8], _stamp(r.started), Path(r.scene_path or "").name,
                      (r.question or "")[:60], r.status or "", str(r.n_events))
    console.print(table)


def _describe(ev: TraceEvent) -> str:
    if ev.kind == "run_start":
        p = ev.provenance
        where = f"{Path(p.scene_path).name} [{p.scene_fingerprint[:12]}] encoder {p.encoder_id} index v{p.index_version}" if p else ""
        return f"question: {ev.question}\n      {where}"
    if ev.kind == "model":
        usage = f", {ev.tokens.total} tokens" if ev.tokens and ev.tokens.total else ""
        return f"{ev.model or 'model'} ({ev.backend}, {ev.prompt_version}{usage}): {ev.result}"
    if ev.kind == "tool":
        args = json.dumps(ev.arguments, default=str)[:160] if ev.arguments else ""
        ids = f" -> {', '.join(e.id for e in ev.evidence)}" if ev.evidence else ""
        first = (ev.error if ev.status == "error" else ev.result or "").splitlines()[0] if (ev.error or ev.result) else ""
        return f"{ev.tool}({args}){ids}\n      {first[:200]}"
    if ev.kind == "answer" and ev.answer is not None:
        return f"answer (confidence {ev.answer.confidence:.2f}, cites {', '.join(ev.cited) or 'nothing'}): {ev.answer.text}"
    if ev.kind == "run_end":
        return f"run {ev.result}{': ' + ev.error if ev.error else ''} ({len(ev.checkpoints or {})} checkpoints linked)"
    return (ev.error if ev.status == "error" else ev.result) or ""


@trace_app.command("show")
def show_command(
    thread: str = typer.Argument(..., help="Thread id."),
    run: str | None = typer.Option(None, "--run", help="Only this run (id or prefix)."),
    db: Path | None = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Show a thread's runs step by step."""
    events = _store(db).events(thread)
    if run:
        events = [e for e in events if e.run_id.startswith(run)]
    current = None
    for ev in events:
        if ev.run_id != current:
            current = ev.run_id
            console.print(f"\n[bold]run {ev.run_id}[/] ({_stamp(ev.time)})", highlight=False)
        style = "red" if ev.status == "error" else "cyan"
        step = f"step {ev.step}" if ev.step is not None else ""
        timing = f" {ev.latency_ms:.0f} ms" if ev.latency_ms is not None else ""
        console.print(f"[{style}]#{ev.index:<3} {ev.kind:<9} {step:<8}[/]{timing} {_describe(ev)}",
                      highlight=False, soft_wrap=True, markup=True)


@trace_app.command("export")
def export_command(
    thread: str = typer.Argument(..., help="Thread id."),
    fmt: str = typer.Option("jsonl", "--format", "-f", help="jsonl | geojson | html."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Output file (default: standard output)."),
    redact: str | None = typer.Option(None, "--redact", help="Blank 'prompts' and/or 'answers' (comma-separated; "
                                      "default: settings, trace.redact)."),
    db: Path | None = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Export a thread's trace as JSON Lines, GeoJSON (evidence regions) or a self-contained HTML report."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}: use {', '.join(FORMATS)}")
    from rsrag.agent.trace.export import export_geojson, export_jsonl, redact_event

    trace_settings = state.settings(**{"trace.redact": redact}).trace
    parts = trace_settings.redactions()
    store = _store(db)
    events = store.events(thread)
    head = store.head(thread)  # written into the export: kept elsewhere, it anchors the chain (verify --export)
    if fmt == "jsonl":
        text = export_jsonl(events, parts, head=head)
    elif fmt == "geojson":
        text = json.dumps(export_geojson([redact_event(e, parts)[0] for e in events], head=head), indent=1) + "\n"
    else:
        from rsrag.agent.trace.report import render_html

        text = render_html(events, parts, head=head)
    if output is None:
        print(text, end="")
        return
    output.write_text(text, encoding="utf-8")
    console.print(f"wrote {output} ({len(events)} events, {fmt}; chain head {head.line()})", highlight=False)


@trace_app.command("replay")
def replay_command(
    thread: str = typer.Argument(..., help="Thread id."),
    image: Path | None = typer.Option(None, "--image", help="Replay on this image instead of the recorded path."),
    encoder: str | None = typer.Option(None, "--encoder", help="Encoder spec instead of the recorded one."),
    store: Path | None = typer.Option(None, "--store", help="Patch store folder instead of the recorded one."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    db: Path | None = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Re-run a thread with the recorded model outputs; report where the tools' evidence diverges (exit 2)."""
    from rsrag.agent.trace.replay import replay_thread

    report = replay_thread(_store(db), thread, image=image, encoder=encoder, patch_store=store)
    if as_json:
        print(json.dumps(report.model_dump(mode="json") | {"ok": report.ok}))
    else:
        for change in report.changes:
            console.print(f"[yellow]changed[/] {change}", highlight=False, soft_wrap=True)
        for d in report.divergences:
            console.print(f"[red]divergence[/] run {d.run} {d.kind}: {d.message}", highlight=False, soft_wrap=True)
        verdict = "[green]no divergence[/]" if report.ok else f"[red]{len(report.divergences)} divergence(s)[/]"
        console.print(f"{verdict}: {report.runs} run(s), {report.tool_calls} tool call(s) replayed", highlight=False)
    if not report.ok:
        raise TraceError(f"replay of thread {thread!r} diverged from its trace ({len(report.divergences)} divergence(s))")


@trace_app.command("verify")
def verify_command(
    thread: str = typer.Argument(..., help="Thread id."),
    head: str | None = typer.Option(None, "--head", help="A chain head recorded elsewhere (HASH or HASH:EVENTS, "
                                    "as printed here or by `trace export`): the chain must still hold it."),
    export: Path | None = typer.Option(None, "--export", help="An export of this thread kept elsewhere: its chain "
                                       "head (and, for JSONL, each event's hash) must match the stored chain."),
    db: Path | None = typer.Option(None, "--db", help=DB_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Check a thread's hash chain and runs rows (exit 2 naming what is tampered), against an anchor when given.

    Without --head, --export or an HMAC key (trace.hmac_key) this proves only that the stored chain is
    consistent; a rewrite of the whole chain is detected only against an anchor or a signature.
    """
    from rsrag.agent.trace.export import read_export_anchor
    from rsrag.agent.trace.store import parse_head

    if head is not None and export is not None:
        raise QueryError("give --head or --export, not both")
    anchor, exported = None, None
    if head is not None:
        anchor = parse_head(head, thread)
    elif export is not None:
        anchor, exported = read_export_anchor(export)
    store = _store(db)
    report = store.verify(thread, anchor=anchor, exported=exported)
    if as_json:
        print(json.dumps({"thread": thread, "ok": report.ok, "events": report.events, "problems": report.problems,
                          "anchored_at": report.anchored_at, "signed": report.signed, "proves": report.proves(),
                          "head": report.head.model_dump(mode="json") if report.head else None}))
    if report.ok:
        if not as_json:
            console.print(f"[green]ok[/]: {report.proves()}", highlight=False, soft_wrap=True)
            if report.head is not None:
                console.print(f"chain head {report.head.line()} (keep it elsewhere to anchor this trace)",
                              highlight=False)
        return
    for problem in report.problems[1:]:
        err_console.print(f"[red]also[/] {problem}", highlight=False, soft_wrap=True)
    more = f" (+{len(report.problems) - 1} more above)" if len(report.problems) > 1 else ""
    raise TraceIntegrityError(f"trace of thread {thread!r} is tampered: {report.problems[0]}{more}")
