"""``rsrag trace``: list, show, export, replay and verify the traces of analyst runs."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import typer
from rich.table import Table

from rsrag.agent.interfaces.cli.app import app, console
from rsrag.agent.trace.events import TraceEvent
from rsrag.agent.trace.export import export_geojson, export_jsonl, redact_event
from rsrag.agent.trace.store import TraceStore
from rsrag.agent.trace.tracer import TraceSettings
from rsrag.tools.errors import ConfigError, QueryError, TraceError, TraceIntegrityError
from rsrag.tools.store.location import rsrag_home

trace_app = typer.Typer(help="Inspect, export, replay and verify the traces of analyst runs.", no_args_is_help=True)
app.add_typer(trace_app, name="trace")

DB_HELP = "Trace database (default: $RSRAG_TRACE_PATH, else $RSRAG_HOME/sessions.sqlite)."
FORMATS = ("jsonl", "geojson", "html")


def _store(db: Path | None) -> TraceStore:
    path = db or TraceSettings().path or rsrag_home() / "sessions.sqlite"
    if not Path(path).is_file():
        raise ConfigError(f"{path}: no trace database (run `rsrag ask` first, or pass --db)")
    return TraceStore(path)


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
                                      "default: $RSRAG_TRACE_REDACT)."),
    db: Path | None = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Export a thread's trace as JSON Lines, GeoJSON (evidence regions) or a self-contained HTML report."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}: use {', '.join(FORMATS)}")
    parts = TraceSettings(redact=redact).redactions() if redact is not None else TraceSettings().redactions()
    events = _store(db).events(thread)
    if fmt == "jsonl":
        text = export_jsonl(events, parts)
    elif fmt == "geojson":
        text = json.dumps(export_geojson([redact_event(e, parts)[0] for e in events]), indent=1) + "\n"
    else:
        from rsrag.agent.trace.report import render_html

        text = render_html(events, parts)
    if output is None:
        print(text, end="")
        return
    output.write_text(text, encoding="utf-8")
    console.print(f"wrote {output} ({len(events)} events, {fmt})", highlight=False)


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
    db: Path | None = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Check a thread's hash chain; a tampered event is named (exit 2)."""
    report = _store(db).verify(thread)
    if report.ok:
        console.print(f"[green]ok[/]: {report.events} events of thread {thread} verified", highlight=False)
        return
    for problem in report.problems[1:]:
        console.print(f"[red]also[/] {problem}", highlight=False, soft_wrap=True)
    more = f" (+{len(report.problems) - 1} more above)" if len(report.problems) > 1 else ""
    raise TraceIntegrityError(f"trace of thread {thread!r} is tampered: {report.problems[0]}{more}")
