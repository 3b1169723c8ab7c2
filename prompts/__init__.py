"""rsrag.prompts: prompt templates as versioned files.

Every template file is named ``<name>.v<N>.<ext>``; :func:`load_prompt` returns its text together with
``<name>.v<N>``, the version string that answers and traces record.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

__all__ = ["Prompt", "load_prompt"]


@dataclass(frozen=True)
class Prompt:
    """A prompt template and its version (``agent_system.v1``)."""

    version: str
    text: str

    def format(self, **values: object) -> str:
        return self.text.format(**values)


@lru_cache(maxsize=32)
def load_prompt(name: str, version: int = 1) -> Prompt:
    """Load ``<name>.v<version>.*`` from this package.

    Raises:
        FileNotFoundError: no such template.
    """
    folder = resources.files(__name__)
    stem = f"{name}.v{version}"
    for entry in folder.iterdir():
        if entry.name.startswith(stem + "."):
            return Prompt(version=stem, text=entry.read_text(encoding="utf-8"))
    raise FileNotFoundError(f"no prompt template {stem}.* in rsrag.prompts")
