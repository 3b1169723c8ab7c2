"""``rsrag settings``: the effective settings (after the file, ``RSRAG_*`` variables and options) and their keys."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import typer

from rsrag.agent.interfaces.cli.app import app, console, state

if TYPE_CHECKING:
    from rsrag.agent.settings import Settings


def flatten(settings: Settings) -> dict[str, object]:
    """The settings as ``{dotted key: value}`` (every section, trace included), secrets masked."""
    from rsrag.agent.settings import flatten as flat_items

    flat = flat_items(settings.model_dump(mode="json"))
    return {k: ("**********" if "api_key" in k and v else v) for k, v in flat.items()}


@app.command("settings")
def settings_command(
    as_json: bool = typer.Option(False, "--json", help="Print the settings as one JSON object (secrets masked)."),
) -> None:
    """Show the effective settings: each key, its value, and the environment variable that sets it."""
    from rich.table import Table

    from rsrag.agent.settings import default_settings_file, env_name

    settings = state.settings()
    flat = flatten(settings)
    file = state.settings_file or default_settings_file()
    if as_json:
        print(json.dumps({"settings_file": str(file) if file else None, "settings": flat}))
        return
    console.print(f"settings file: {file or '(none)'}; precedence: options > environment > file > defaults",
                  highlight=False)
    table = Table("key", "value", "environment variable", "set in env")
    for key, value in flat.items():
        env = env_name(key)
        table.add_row(key, "" if value is None else str(value), env, "yes" if env in os.environ else "")
    console.print(table)
