"""``rsrag eval retrieval DATA --encoder SPEC``: image-text retrieval recalls, mR and zero-shot accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from rsrag.agent.interfaces.cli.app import app, console, state

eval_app = typer.Typer(help="Measure retrieval quality.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


@eval_app.command("retrieval")
def retrieval(
    data: Path = typer.Argument(..., help="Folder with captions.jsonl (image, class, captions) and the images."),
    encoder: str | None = typer.Option(None, "--encoder", help="Encoder spec (default: settings, else the offline encoder)."),
    split: str | None = typer.Option(
        None, "--split",
        help="all, val (the fixed held-out split `encoder train` never uses) or train. Default: val when DATA is the "
             "folder the encoder's heads were trained on (their recorded fingerprint), otherwise all.",
    ),
    val_fraction: float | None = typer.Option(None, "--val-fraction", help="Held-out share for val/train (default: the heads' own)."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Images per encoder call (default: settings, encoder.batch_size)."),
    device: str | None = typer.Option(None, "--device", help="Torch device (default: settings, encoder.device)."),
    limit: int = typer.Option(0, "--limit", min=0, help="Evaluate only the first N chips of the split (0: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (recalls and mR in percent)."),
) -> None:
    """Image->text and text->image R@1/5/10, their mean mR, and zero-shot scene classification accuracy."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from rsrag.tools.captioned import read_chips
    from rsrag.tools.encoders import load_encoder
    from rsrag.tools.training.evaluate import evaluate, select_for_eval, training_record

    settings = state.settings(**{"encoder.spec": encoder, "encoder.device": device, "encoder.batch_size": batch_size}).encoder
    spec = settings.spec
    chips = read_chips(data)
    enc = load_encoder(spec, device=settings.device, batch_size=settings.batch_size, precision=settings.precision)
    chosen = select_for_eval(chips, training_record(spec), split, val_fraction)
    chips = list(chosen.chips[:limit] if limit else chosen.chips)
    head = f"split {chosen.split}: {len(chips)} images" + (f" (--limit; the split has {len(chosen.chips)})" if limit else "")
    warning = (f"warning: {chosen.seen} of these {len(chosen.chips)} images were used to train the encoder's heads; "
               "the figures are optimistic") if chosen.seen else ""
    if not as_json:
        console.print(f"{head} ({chosen.reason})")
        if warning:
            console.print(warning)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=as_json) as bar:
        task = bar.add_task("encoding images", total=len(chips))
        report = evaluate(enc, chips, progress=lambda n: bar.advance(task, n))
    result = {"split": chosen.split, "n_images": report.n_images, "split_reason": chosen.reason,
              "seen_in_training": chosen.seen, **report.as_dict(), "spec": encoder, "data": str(data)}
    if as_json:
        print(json.dumps(result))
        return
    table = Table(title=f"{spec or 'rsrag-lit'} on {data} ({chosen.split}: {report.n_images} images, {report.n_texts} captions)")
    table.add_column("metric")
    table.add_column("value (%)", justify="right")
    for key, value in report.metrics.items():
        table.add_row(key, f"{value:.2f}")
    console.print(table)
    console.print(f"encoder id: {report.encoder}")
    if report.extra.get("t2i_scores") == "hub-corrected":
        console.print("text -> image scored as the window index ranks: hub-corrected (tools/encoders/hubness.py)")
