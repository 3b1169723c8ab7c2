"""``rsrag ask IMAGE "question"`` (or ``rsrag ask --catalog NAME "question"``, across the scenes of a catalog):
run the analyst agent once and print its cited answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from rsrag.agent.interfaces.cli.app import app, err_console, state
from rsrag.agent.interfaces.cli.app import console as default_console

if TYPE_CHECKING:
    from rich.console import Console

    from rsrag.agent.evidence import Answer


@app.command("ask")
def ask_command(
    image: str = typer.Argument(..., help="Image file or URL: GeoTIFF, COG, VRT, JPEG or PNG (with --catalog: the question).", show_default=False),
    question: str | None = typer.Argument(None, help="The question, e.g. 'where are the storage tanks?'.", show_default=False),
    catalog: str | None = typer.Option(None, "--catalog", help="Ask across the scenes of this catalog (see `rsrag catalog list`); the image is then optional."),
    vlm: str | None = typer.Option(None, "--vlm", help="Chat model: rule | openai:MODEL@URL | transformers:PATH (default: settings, rule)."),
    encoder: str | None = typer.Option(None, "--encoder", help="Encoder spec (default: settings, else the offline encoder)."),
    tiling: str | None = typer.Option(None, "--tiling", help="Tiling used if the scene must be indexed first (default: settings, store.tiling)."),
    store: Path | None = typer.Option(None, "--store", help="Store folder (default: settings, else $RSRAG_HOME/store)."),
    thread: str | None = typer.Option(None, "--thread", help="Chat thread to continue (default: a new one)."),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Model steps before answering with what it has (default: settings, budgets.max_steps)."),
    top_k: int | None = typer.Option(None, "--top-k", min=1, help="Regions a search returns (default: settings, retrieval.top_k)."),
    threshold: float | None = typer.Option(None, "--threshold", min=0.0, max=1.0, help="Fast-path confidence threshold (default: settings, retrieval.fast_threshold)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (answer, evidence with bbox, GeoJSON)."),
    quiet: bool = typer.Option(False, "--quiet", help="Do not print the steps as they happen."),
) -> None:
    """Ask a question about a scene, or across a catalog's scenes; the answer cites evidence with pixel and map
    coordinates (and, across a catalog, the scene of each piece of evidence)."""
    from rsrag.tools.errors import QueryError

    if question is None:
        if catalog is None:
            raise QueryError("give the image and the question (rsrag ask IMAGE \"question\"), or a catalog "
                             "(rsrag ask --catalog NAME \"question\")")
        image_ref: str | None = None
        question = image
    else:
        image_ref = image
    settings = state.settings(**{"vlm.spec": vlm, "encoder.spec": encoder, "store.tiling": tiling, "store.path": store,
                                 "budgets.max_steps": max_steps, "retrieval.top_k": top_k,
                                 "retrieval.fast_threshold": threshold})
    with settings.analyst() as analyst:
        if as_json or quiet:
            answer = analyst.ask(image_ref, question, thread_id=thread, catalog=catalog)
        else:
            from rsrag.agent.interfaces.cli.cache import conversion_progress
            from rsrag.agent.interfaces.cli.index import index_progress

            if image_ref is not None:
                with conversion_progress(err_console) as on_convert:  # a PNG, JPEG... is converted into the cache first
                    analyst.workspace.on_convert_progress = on_convert
                    analyst.workspace.scene(image_ref)
                    analyst.workspace.on_convert_progress = None
            answer = None
            # the windows a pyramid search encodes on a fresh scene (or a flat index built first), as progress bars
            with index_progress(err_console, transient=True) as on_progress:
                remove = analyst.workspace.add_index_listener(on_progress)
                try:
                    for step in analyst.stream(image_ref, question, thread_id=thread, catalog=catalog):
                        err_console.print(f"[dim]{step.node:>8}[/] {step.text}", highlight=False, soft_wrap=True)
                        answer = step.update.get("answer") or answer
                finally:
                    remove()
    assert answer is not None  # the last streamed step carries the answer
    if as_json:
        print(json.dumps(answer.to_json()))
    else:
        print_answer(answer)
    if answer.bad_input is not None:  # the answer above says so too
        err_console.print(f"error: {answer.bad_input}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(2)


def print_answer(answer: Answer, out: Console | None = None) -> None:
    """The answer, its finding, the cited evidence's confidence and a table of the cited places (numbered,
    as ``rsrag chat``'s /zoom N uses); see :func:`rsrag.agent.interfaces.cli.display.print_answer`."""
    from rsrag.agent.interfaces.cli.display import print_answer as show

    show(answer, out or default_console)
