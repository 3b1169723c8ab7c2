"""``rsrag kb ...``: build, inspect and search the knowledge base (RS-RAG knowledge and the concept library)."""

from __future__ import annotations

import json
from pathlib import Path

from typing import TYPE_CHECKING

import typer

from rsrag.agent.interfaces.cli import index as index_cli
from rsrag.agent.interfaces.cli.app import app, console, err_console, state

if TYPE_CHECKING:
    from rich.progress import Progress

    from rsrag.tools.knowledge import KnowledgeBase

kb_app = typer.Typer(name="kb", help="Knowledge base: add files, build a concept library, search, stats.",
                     no_args_is_help=True)
app.add_typer(kb_app, name="kb")

_STORE = typer.Option(None, "--store", help="Store folder (default: settings, else $RSRAG_HOME/store).")
_ENCODER = typer.Option(None, "--encoder", help="Encoder spec (default: settings, else the offline encoder).")
_NAME = typer.Option(None, "--kb", help="Knowledge base name; several can share a store (default: settings, 'default').")
_JSON = typer.Option(False, "--json", help="Print the result as JSON.")


def _open(store: Path | None, encoder: str | None, name: str | None) -> KnowledgeBase:
    """The knowledge base the options name; what they leave out comes from the settings (as for the agent,
    so `kb concepts` fills the library the agent's slow path reads, on the Weaviate server when
    ``knowledge.weaviate_url`` is set)."""
    from rsrag.tools.knowledge import KnowledgeBase

    settings = state.settings(**{"store.path": store, "encoder.spec": encoder, "knowledge.name": name})
    enc = index_cli.load_cli_encoder(settings)
    return KnowledgeBase(settings.knowledge_store() or settings.store_path, enc, name=settings.knowledge.name)


def _bar(quiet: bool) -> Progress:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("eta"), TimeRemainingColumn(), console=err_console, disable=quiet)


@kb_app.command("add")
def add_command(
    path: Path = typer.Argument(..., help="Knowledge file: .jsonl, .csv or .geojson."),
    images: Path | None = typer.Option(None, "--images", help="Folder image paths are relative to (default: the file's)."),
    max_field_chars: int = typer.Option(200_000, "--max-field-chars", min=1, help="Longest text field accepted."),
    store: Path | None = _STORE, encoder: str | None = _ENCODER, name: str | None = _NAME, as_json: bool = _JSON,
) -> None:
    """Import a knowledge file; bad records are reported (file:line, field) and skipped; re-adding is a no-op."""
    from rsrag.tools.knowledge import ingest_file
    from rsrag.tools.knowledge.ingest import check_file

    check_file(path)  # a folder or a missing file is one line, before the store opens or a progress bar starts
    kb = _open(store, encoder, name)
    with _bar(as_json) as bar:
        task = bar.add_task(f"adding {path.name}", total=None)
        report = ingest_file(kb, path, images, max_field_chars=max_field_chars,
                             progress=lambda done, total: bar.update(task, completed=done, total=total))
    if as_json:
        print(report.model_dump_json())
    else:
        for issue in report.issues:  # on standard error, like every problem; the summary stays on stdout
            err_console.print(f"[yellow]skipped[/] {issue}", highlight=False, soft_wrap=True)
        w = report.written
        console.print(f"{path.name}: {report.records} records: {w.added} added, {w.updated} updated, "
                      f"{w.unchanged} unchanged, {report.skipped} skipped; {w.images} images encoded; "
                      f"table {kb.entry_schema.name} v{w.version}")
    if report.issues:  # the good records are in; the exit status still says the file was not clean
        from rsrag.tools.errors import DataError

        raise DataError(f"{path.name}: {report.skipped} of {report.records} records skipped (each named above with "
                        "its line and field); fix them and add the file again (re-adding is idempotent)")


@kb_app.command("concepts")
def concepts_command(
    data: Path = typer.Argument(..., help="Folder with captions.jsonl (or that file), or a class-labelled folder."),
    per_class: int | None = typer.Option(None, "--per-class", min=1, help="At most this many chips per class."),
    name: str | None = _NAME,
    store: Path | None = _STORE, encoder: str | None = _ENCODER, as_json: bool = _JSON,
) -> None:
    """Build (or update) the slow path's concept library: one entry per class, one image vector per chip."""
    from rsrag.tools.knowledge import build_concepts

    entries = build_concepts(data, per_class=per_class)
    kb = _open(store, encoder, name)
    chips = sum(len(e.images) for e in entries)
    with _bar(as_json) as bar:
        task = bar.add_task(f"{len(entries)} concepts, {chips} chips", total=len(entries))
        report = kb.add(entries, batch_entries=4, total=len(entries),
                        progress=lambda done, total: bar.update(task, completed=done, total=total))
    if as_json:
        print(report.model_dump_json())
        return
    console.print(f"concept library {name!r}: {report.added} added, {report.updated} updated, {report.unchanged} "
                  f"unchanged; {report.images} chips encoded; table {kb.entry_schema.name} v{report.version}")


@kb_app.command("search")
def search_command(
    text: str = typer.Argument("", help="Query text (may be empty with --image)."),
    image: Path | None = typer.Option(None, "--image", help="Query image file."),
    category: list[str] = typer.Option([], "--category", help="Only these categories (repeatable)."),
    bbox: str | None = typer.Option(None, "--bbox", help="Location box WEST,SOUTH,EAST,NORTH in degrees."),
    kind: str | None = typer.Option(None, "--kind", help="knowledge or concept."),
    k: int = typer.Option(10, "--top-k", "-k", min=1, help="Entries to return."),
    alpha: float = typer.Option(0.5, "--alpha", min=0.0, max=1.0, help="Text: vector weight vs BM25 (1 = vector only)."),
    image_weight: float = typer.Option(0.5, "--image-weight", min=0.0, max=1.0, help="Text+image: weight of image similarity."),
    store: Path | None = _STORE, encoder: str | None = _ENCODER, name: str | None = _NAME, as_json: bool = _JSON,
) -> None:
    """Search by text (BM25 + vector), by image, or both (RS-RAG re-ranking), with filters."""
    from rich.table import Table

    from rsrag.tools.errors import QueryError

    box = None
    if bbox:
        try:
            west, south, east, north = (float(v) for v in bbox.split(","))
        except ValueError:
            raise QueryError(f"--bbox {bbox!r}: give four numbers WEST,SOUTH,EAST,NORTH") from None
        box = (west, south, east, north)
    if kind not in (None, "knowledge", "concept"):
        raise QueryError(f"--kind {kind!r}: use knowledge or concept")
    kb = _open(store, encoder, name)
    res = kb.search(text or None, str(image) if image else None, k=k, alpha=alpha, image_weight=image_weight,
                    kind=kind, category=category or None, bbox=box)  # type: ignore[arg-type]
    if as_json:
        print(json.dumps({"mode": res.mode, "table": res.table, "version": res.version, "encoder": res.encoder,
                          "hits": [{"id": h.id, "score": h.score, "scores": h.scores, "name": h.entry.name,
                                    "category": h.entry.category, "kind": h.entry.kind} for h in res.hits]}))
        return
    table = Table(title=f"{res.mode} search: {len(res.hits)} entries (table {res.table} v{res.version})")
    for col in ("#", "score", "id", "name", "category", "parts"):
        table.add_column(col)
    for i, h in enumerate(res.hits, 1):
        table.add_row(str(i), f"{h.score:.3f}", h.id, h.entry.name, h.entry.category,
                      ", ".join(f"{n} {v:.3f}" for n, v in h.scores.items()))
    console.print(table)


@kb_app.command("stats")
def stats_command(store: Path | None = _STORE, encoder: str | None = _ENCODER, name: str | None = _NAME, as_json: bool = _JSON) -> None:
    """Entries by kind and category, images, table version, encoder."""
    stats = _open(store, encoder, name).stats()
    if as_json:
        print(json.dumps(stats))
        return
    console.print(f"knowledge base {stats['name']!r} in {stats['store']} (encoder {stats['encoder']}): {stats['entries']} "
                  f"entries {stats['by_kind']}, {stats['images']} images, {stats['located']} located; "
                  f"table {stats['table']} v{stats['version']}", highlight=False)
    top = list(stats["categories"].items())[:20]
    if top:
        console.print("categories: " + ", ".join(f"{c or '-'} {n}" for c, n in top), highlight=False)
