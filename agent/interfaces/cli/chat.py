"""``rsrag chat IMAGE`` (or ``rsrag chat --catalog NAME``): a conversation with the analyst about one scene, or
across the scenes of a catalog, step by step.

Each question streams the agent's steps as they happen (tool calls on one line each, crop files as they
are written), then the cited answer. Commands start with ``/`` (see
:data:`rsrag.agent.interfaces.cli.chat_session.HELP`). The conversation is kept per thread in the sessions
file, so ``rsrag chat IMAGE --thread T`` continues it later. Ctrl-C stops the current question (the thread
stays usable); at the prompt, ``/quit`` or end of input leaves. Across a catalog, evidence names its scene
and ``/zoom N`` opens the scene of that place. The session itself is
:class:`~rsrag.agent.interfaces.cli.chat_session.ChatSession` (imported when the command runs, so
``rsrag --help`` stays light).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from rsrag.agent.interfaces.cli.app import app, console, state


@app.command("chat")
def chat_command(
    image: Path | None = typer.Argument(None, help="Image file: GeoTIFF, COG, VRT, JPEG or PNG (none with --catalog).", show_default=False),
    catalog: str | None = typer.Option(None, "--catalog", help="Chat across the scenes of this catalog (see `rsrag catalog list`) instead of one image."),
    thread: str | None = typer.Option(None, "--thread", help="Thread to continue (default: a new one)."),
    vlm: str | None = typer.Option(None, "--vlm", help="Chat model: rule | openai:MODEL@URL | transformers:PATH."),
    encoder: str | None = typer.Option(None, "--encoder", help="Encoder spec (default: settings, else the offline encoder)."),
    tiling: str | None = typer.Option(None, "--tiling", help="Tiling used if the scene must be indexed first."),
    store: Path | None = typer.Option(None, "--store", help="Store folder (default: settings, else $RSRAG_HOME/store)."),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Model steps per question (default: 10)."),
) -> None:
    """Chat with the analyst about an image, or across a catalog's scenes: streamed steps, cited answers,
    /evidence, /zoom N, /trace, /new."""
    from rsrag.tools.errors import QueryError

    usage = "give an image (rsrag chat IMAGE) or a catalog (rsrag chat --catalog NAME)"
    if image is None and catalog is None:
        raise QueryError(usage)
    if image is not None and catalog is not None:
        raise QueryError(f"{usage}, not both")
    settings = state.settings(**{"vlm.spec": vlm, "encoder.spec": encoder, "store.tiling": tiling, "store.path": store,
                                 "budgets.max_steps": max_steps})
    from rsrag.agent.interfaces.cli.chat_session import ChatSession

    with settings.analyst() as analyst:
        ChatSession(analyst, image, thread, console, catalog=catalog).run(sys.stdin)
