"""``rsrag serve [IMAGE ...]``: the web workspace, a deep-zoom viewer and a chat with the analyst agent."""

from __future__ import annotations

from pathlib import Path

import typer

from rsrag.agent.interfaces.cli.app import app, console, err_console, state

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@app.command("serve")
def serve_command(
    images: list[Path] = typer.Argument(None, help="Image files the page may open (GeoTIFF, COG, JPEG, PNG)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (the page has no login: keep it local)."),
    port: int = typer.Option(8765, "--port", min=1, max=65535, help="TCP port."),
    vlm: str | None = typer.Option(None, "--vlm", help="Chat model: rule | openai:MODEL@URL | transformers:PATH (default: settings, rule)."),
    encoder: str | None = typer.Option(None, "--encoder", help="Encoder spec (default: settings, else the offline encoder)."),
    tiling: str | None = typer.Option(None, "--tiling", help="Tiling used when a scene must be indexed first (default: settings, store.tiling)."),
    store: Path | None = typer.Option(None, "--store", help="Store folder (default: settings, else $RSRAG_HOME/store)."),
    upload_dir: Path | None = typer.Option(None, "--upload-dir", help="Where uploads go (default: $RSRAG_HOME/uploads)."),
    max_upload_mb: float = typer.Option(1024.0, "--max-upload-mb", min=0.0, help="Largest upload accepted, in MiB (0: no uploads)."),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Model steps per question (default: settings, budgets.max_steps)."),
    top_k: int | None = typer.Option(None, "--top-k", min=1, help="Regions a search returns (default: settings, retrieval.top_k)."),
    catalog: str | None = typer.Option(None, "--catalog", help="Serve this catalog's scenes: the page lists them with their footprints on an overview map, and questions can go across them."),
    fill: bool | None = typer.Option(None, "--fill/--no-fill", help="Fill a scene's finest pyramid level in the background after its first question (default: on, unless pyramid.background_fill = \"never\")."),
) -> None:
    """Serve the analyst page: open a registered image, ask questions, see the evidence on the image."""
    import uvicorn  # deferred: only this command needs the server stack

    from rsrag.agent.interfaces.web import create_app

    settings = state.settings(**{"vlm.spec": vlm, "encoder.spec": encoder, "store.tiling": tiling, "store.path": store,
                                 "budgets.max_steps": max_steps, "retrieval.top_k": top_k})
    with settings.analyst() as analyst:
        analyst.workspace.background_fill = fill if fill is not None else settings.pyramid.background_fill != "never"
        web = create_app(analyst, list(images or []), upload_dir=upload_dir,
                         max_upload_bytes=int(max_upload_mb * (1 << 20)), catalog=catalog)
        if host not in LOOPBACK:
            err_console.print(f"[yellow]warning:[/] listening on {host}: anyone who can reach it can use the agent "
                              "and upload files (the page has no login)")
        registry = web.state.web.registry
        for entry in registry:
            console.print(f"image [bold]{entry.id}[/]  {entry.path}", highlight=False, soft_wrap=True)
        shown = f"[{host}]" if ":" in host else host
        console.print(f"rsrag workspace on [bold]http://{shown}:{port}/[/] (Ctrl-C stops it)", highlight=False)
        uvicorn.run(web, host=host, port=port, log_level="warning")
