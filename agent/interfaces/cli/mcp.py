"""``rsrag mcp``: serve rsrag's tools and the ``ask`` agent over MCP (stdio, or streamable HTTP on a port)."""

from __future__ import annotations

from pathlib import Path

import typer

from rsrag.agent.interfaces.cli.app import app, err_console, state


@app.command("mcp")
def mcp_command(
    http: bool = typer.Option(False, "--http", help="Serve streamable HTTP instead of stdio."),
    host: str = typer.Option("127.0.0.1", "--host", help="HTTP address to bind (loopback by default)."),
    port: int = typer.Option(8765, "--port", min=1, max=65535, help="HTTP port."),
    path: str = typer.Option("/mcp", "--path", help="HTTP endpoint path."),
    images: list[Path] = typer.Option([], "--images", help="Only serve images inside this folder (repeatable; "
                                      "symlinks and every file a VRT references must resolve inside too)."),
    allow_url: list[str] = typer.Option([], "--allow-url", help="Also open remote images whose URL starts with this "
                                        "prefix (repeatable; none by default)."),
    vlm: str | None = typer.Option(None, "--vlm", help="Chat model of the `ask` tool (default: settings, rule)."),
    encoder: str | None = typer.Option(None, "--encoder", help="Encoder spec (default: settings, else the offline encoder)."),
    store: Path | None = typer.Option(None, "--store", help="Store folder (default: settings, else $RSRAG_HOME/store)."),
    tiling: str | None = typer.Option(None, "--tiling", help="Tiling used when a scene must be indexed."),
) -> None:
    """Run an MCP server: tools scene_info, search_patches, zoom (image content), lookup_knowledge, and ask.

    Over stdio (the default) the protocol owns stdout, so nothing else is printed there; add it to an MCP
    client as the command `rsrag mcp`. With --http it serves http://HOST:PORT/mcp.
    """
    from rsrag.agent.interfaces.mcp import build_mcp_server  # deferred: the MCP SDK is only needed here

    settings = state.settings(**{"vlm.spec": vlm, "encoder.spec": encoder, "store.path": store, "store.tiling": tiling})
    for folder in images:
        if not folder.is_dir():
            raise typer.BadParameter(f"{folder} is not a folder", param_hint="--images")
    with settings.analyst() as analyst:
        server = build_mcp_server(analyst, settings, image_roots=images or None, url_prefixes=allow_url)
        if http:
            err_console.print(f"rsrag MCP server on http://{host}:{port}{path} (Ctrl-C stops it)", highlight=False)
            server.run("streamable-http", host=host, port=port, streamable_http_path=path)
        else:
            server.run("stdio")
