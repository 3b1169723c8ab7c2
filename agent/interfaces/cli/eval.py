"""``rsrag eval retrieval DATA --encoder SPEC``: image-text retrieval recalls, mR and zero-shot accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rsrag.agent.interfaces.cli.app import app, console, state

eval_app = typer.Typer(help="Measure retrieval quality.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


@eval_app.command("retrieval")
def retrieval(
    data: Path = typer.Argument(..., help="Folder with captions.jsonl (image, class, captions) and the images."),
    encoder: str | None = typer.Option(None, "--encoder", help="Encoder spec (default: settings, else the offline encoder)."),
    split: str = typer.Option("val", "--split", help="val (the fixed held-out split `encoder train` never uses), train or all."),
    val_fraction: float = typer.Option(0.1, "--val-fraction"),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    device: str = typer.Option("cpu", "--device"),
    limit: int = typer.Option(0, "--limit", min=0, help="Evaluate only the first N chips of the split (0: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (recalls and mR in percent)."),
) -> None:
    """Image->text and text->image R@1/5/10, their mean mR, and zero-shot scene classification accuracy."""
    from rsrag.tools.encoders import load_encoder
    from rsrag.tools.captioned import read_chips, select_split
    from rsrag.tools.training.evaluate import evaluate

    chips = select_split(read_chips(data), split, val_fraction)
    if limit:
        chips = chips[:limit]
    enc = load_encoder(state.settings(**{"encoder.spec": encoder}).encoder.spec, device=device, batch_size=batch_size)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=as_json) as bar:
        task = bar.add_task("encoding images", total=len(chips))
        report = evaluate(enc, chips, progress=lambda n: bar.advance(task, n))
    result = {**report.as_dict(), "spec": encoder, "split": split, "data": str(data)}
    if as_json:
        print(json.dumps(result))
        return
    table = Table(title=f"{encoder} on {data} ({split}: {report.n_images} images, {report.n_texts} captions)")
    table.add_column("metric")
    table.add_column("value (%)", justify="right")
    for key, value in report.metrics.items():
        table.add_row(key, f"{value:.2f}")
    console.print(table)
    console.print(f"encoder id: {report.encoder}")
