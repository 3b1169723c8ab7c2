"""``rsrag settings``: the effective settings (after the file, ``RSRAG_*`` variables and options) and their keys."""

from __future__ import annotations

import json
import os

import typer
from rich.table import Table

from rsrag.agent.interfaces.cli.app import app, console, state
from rsrag.agent.settings import ENV_PREFIX, Settings, default_settings_file


def flatten(settings: Settings) -> dict[str, object]:
    """The settings as ``{dotted key: value}``, secrets masked."""
    flat: dict[str, object] = {}
    for key, value in settings.model_dump(mode="json").items():
        if isinstance(value, dict):
            flat.update({f"{key}.{sub}": v for sub, v in value.items()})
        else:
            flat[key] = value
    return {k: ("**********" if "api_key" in k and v else v) for k, v in flat.items()}


def env_name(key: str) -> str:
    """The environment variable of a dotted settings key (``retrieval.top_k`` -> ``RSRAG_RETRIEVAL__TOP_K``)."""
    return ENV_PREFIX + key.replace(".", "__").upper()


@app.command("settings")
def settings_command(
    as_json: bool = typer.Option(False, "--json", help="Print the settings as one JSON object (secrets masked)."),
) -> None:
    """Show the effective settings: each key, its value, and the environment variable that sets it."""
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
