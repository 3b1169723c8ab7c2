"""``rsrag index IMAGE``: build (or resume) a scene's patch index, with a progress bar."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from rsrag.agent.interfaces.cli.app import app, console, state
from rsrag.tools.indexing import DEFAULT_TILING, IndexProgress, IndexReport, index_scene
from rsrag.tools.store import open_store

if TYPE_CHECKING:
    from rsrag.tools.encoders.base import Encoder


def load_cli_encoder(spec: str | None, batch_size: int) -> Encoder:
    """The encoder named by ``--encoder`` (``None``: the project's default offline encoder)."""
    from rsrag.tools.encoders import load_encoder  # deferred: loading torch models is slow

    return load_encoder(spec, batch_size=batch_size)


def run_index(image: Path, encoder: Encoder, tiling: str, store: Path | None, batch_size: int, readers: int | None,
              wait: bool, show_progress: bool) -> IndexReport:
    """Index ``image`` with a rich progress bar (patches/s and ETA)."""
    columns = (TextColumn("[bold]indexing[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]:.1f} patches/s"), TimeElapsedColumn(), TextColumn("eta"),
               TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not show_progress, transient=False) as bar:
        task = bar.add_task(image.name, total=None, rate=0.0)

        def on_progress(p: IndexProgress) -> None:
            bar.update(task, completed=p.done, total=p.total, rate=p.rate)

        return index_scene(image, encoder, tiling, open_store(store), batch_size=batch_size, readers=readers,
                           wait=wait, progress=on_progress)


@app.command("index")
def index_command(
    image: Path = typer.Argument(..., help="Image file: GeoTIFF, COG, VRT, JPEG or PNG."),
    encoder: str | None = typer.Option(None, "--encoder", help="Encoder spec (default: settings, else the offline encoder)."),
    tiling: str | None = typer.Option(None, "--tiling", help=f"Tiling spec, e.g. vit:448, grid:512:overlap=0.25:scales=1,2, cc (default: settings, {DEFAULT_TILING})."),
    store: Path | None = typer.Option(None, "--store", help="Store folder (default: settings, else $RSRAG_HOME/store or the user data dir)."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Patches per encoder call (default: settings, 32)."),
    readers: int | None = typer.Option(None, "--readers", min=1, help="Reader threads decoding patches (default: half the cores, 1-4)."),
    wait: bool = typer.Option(False, "--wait", help="If another process is indexing this image, wait for it."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON (no progress bar)."),
) -> None:
    """Index a scene's patches (resumable: re-run after an interruption to continue; no-op when done)."""
    settings = state.settings(**{"encoder.spec": encoder, "store.tiling": tiling, "store.path": store,
                                 "encoder.batch_size": batch_size})
    enc = load_cli_encoder(settings.encoder.spec, settings.encoder.batch_size)
    report = run_index(image, enc, settings.store.tiling, settings.store_path, settings.encoder.batch_size, readers, wait,
                       show_progress=not as_json)
    if as_json:
        print(json.dumps(report.model_dump(mode="json")))
        return
    info = report.info
    if report.no_op:
        console.print(f"already indexed: {info.n_patches} patches ({info.tiling}, {info.encoder}); nothing to do")
    else:
        resumed = f", {report.skipped} kept from an earlier run" if report.skipped else ""
        console.print(f"indexed {report.encoded} patches in {report.seconds:.1f} s "
                      f"({report.patches_per_s:.1f} patches/s){resumed}; index {info.key}")
