"""``rsrag cache list|clear``: the scene cache, where PNG, JPEG, striped TIFF ... sources are kept converted.

:func:`conversion_progress` is the progress bar the other commands (``describe``, ``index``, ``ask``...) show
while a source is converted on first open.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import typer

from rsrag.agent.interfaces.cli.app import app, console, err_console, state

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import TaskID

    from rsrag.tools.scene_cache import ConversionProgress

cache_app = typer.Typer(help="The scene cache: sources converted for fast windowed reads (list, clear).",
                        no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@contextlib.contextmanager
def conversion_progress(out: Console | None = None, *, enabled: bool = True) -> Iterator[Callable[[ConversionProgress], None]]:
    """A rich progress bar (on standard error by default) for a conversion into the scene cache; yields the
    callback to give :func:`~rsrag.tools.raster.open_scene`. Nothing is shown unless a conversion happens."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    bar = Progress(*columns, console=out or err_console, disable=not enabled, transient=False)
    tasks: dict[str, TaskID] = {}

    def on_progress(p: ConversionProgress) -> None:
        key = f"{p.kind}:{p.source}"
        name = p.source.rsplit("/", 1)[-1]
        verb = "caching overviews of" if p.kind == "overviews" else "converting"
        if p.resumed_from:
            verb = f"resuming (at row {p.resumed_from:,}) {verb}"
        if key not in tasks:
            if not tasks:
                bar.start()  # only now: a scene that needs no conversion draws nothing (not even an empty line)
            tasks[key] = bar.add_task(f"{verb} {name}", total=p.total or None)
        if p.waiting:
            bar.update(tasks[key], description=f"waiting for another process converting {name}")
        else:  # named again: after waiting for a process that was killed, this one converts (or resumes) itself
            bar.update(tasks[key], description=f"{verb} {name}", completed=p.done, total=p.total)

    try:
        yield on_progress
    finally:
        if tasks:
            bar.stop()


@cache_app.command("list")
def list_command(as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table.")) -> None:
    """List the cached scenes (least recently used first), their sizes, and the cache's limit."""
    cache = state.settings().scene_cache()
    entries = cache.entries()
    total = sum(e.bytes for e in entries)
    if as_json:
        print(json.dumps({
            "path": str(cache.root), "bytes": total, "max_bytes": cache.max_bytes,
            "temporaries": [str(t) for t in cache.temporaries()],
            "entries": [e.model_dump(mode="json") for e in entries],
        }))
        return
    from rich.table import Table

    table = Table(title=f"scene cache {cache.root}")
    for column in ("fingerprint", "kind", "source", "size", "levels", "reason", "last used"):
        table.add_column(column)
    for e in entries:
        table.add_row(e.fingerprint[:12], e.kind, e.source, _size(e.bytes), str(len(e.levels)), e.reason,
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used)))
    console.print(table)
    limit = f" of {_size(cache.max_bytes)}" if cache.max_bytes else ""
    leftovers = cache.temporaries()
    extra = f"; {len(leftovers)} unfinished conversion(s) (in progress, or killed: `rsrag cache clear` removes those)" \
        if leftovers else ""
    console.print(f"{len(entries)} entries, {_size(total)}{limit}{extra}", highlight=False)


@cache_app.command("clear")
def clear_command(
    match: list[str] = typer.Argument(None, help="Only these: fingerprints (a prefix is enough) or sources as listed."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Remove cached scenes (all, or those named) and leftovers of killed conversions; entries another process
    is reading are kept."""
    from rsrag.tools.sources import normalise_source

    cache = state.settings().scene_cache()
    wanted = None
    if match:
        wanted = list(match) + [_normalised(normalise_source, m) for m in match]
    report = cache.clear(wanted)
    if as_json:
        print(json.dumps(report.model_dump(mode="json")))
        return
    kept = f"; {len(report.in_use)} kept (in use by another process)" if report.in_use else ""
    temps = f", {report.temporaries} unfinished conversion(s)" if report.temporaries else ""
    console.print(f"removed {report.removed} entries ({_size(report.freed_bytes)}){temps}{kept}", highlight=False)


def _normalised(normalise: Callable[[str], str], text: str) -> str:
    from rsrag.tools.errors import SourceError

    try:
        return normalise(text)
    except SourceError:
        return text


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 1024:
        return f"{n} B"
    value, unit = float(n), "B"
    for unit in ("KiB", "MiB", "GiB"):  # noqa: B007  (the unit the loop stops at is printed after it)
        value /= 1024
        if value < 1024:
            break
    return f"{value:.1f} {unit}"
