"""The shared typer application and global options.

Global options (before the command: ``rsrag --vlm rule ask ...``) set settings for every command; a
command's own option wins over the global one, and both win over ``RSRAG_*`` environment variables and
the settings file (see :mod:`rsrag.agent.settings`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from rsrag.agent.settings import Settings

app = typer.Typer(
    name="rsrag",
    help="Ask questions of ultra-high-resolution remote-sensing imagery.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=False)
err_console = Console(stderr=True)


@dataclass
class GlobalState:
    """The global options of the current invocation."""

    debug: bool = False
    settings_file: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def settings(self, **overrides: Any) -> Settings:
        """The settings of this invocation; ``overrides`` (dotted keys, ``None`` = not given) win over the
        global options, which win over the environment and the settings file."""
        from rsrag.agent.settings import load_settings

        merged = {**self.overrides, **{k: v for k, v in overrides.items() if v is not None}}
        return load_settings(self.settings_file, merged)


state = GlobalState()


@app.callback()
def _global_options(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    settings_file: Path | None = typer.Option(
        None, "--settings", help="TOML settings file (default: $RSRAG_SETTINGS, else $RSRAG_HOME/settings.toml)."),
    encoder: str | None = typer.Option(None, "--encoder", help="Encoder spec for every command (settings: encoder.spec)."),
    vlm: str | None = typer.Option(None, "--vlm", help="Chat model: rule | openai:MODEL@URL | transformers:PATH (vlm.spec)."),
    store: Path | None = typer.Option(None, "--store", help="Store folder for every command (settings: store.path)."),
) -> None:
    state.debug = debug
    state.settings_file = settings_file
    state.overrides = {k: v for k, v in {"encoder.spec": encoder, "vlm.spec": vlm, "store.path": store}.items()
                       if v is not None}
