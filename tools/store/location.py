"""Where the embedded store lives on disk.

Precedence: an explicit path (argument, ``--store``, settings) > the ``RSRAG_HOME`` environment variable
(``$RSRAG_HOME/store``) > the user's data directory (``platformdirs.user_data_dir("rsrag")/store``).
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

ENV_HOME = "RSRAG_HOME"
"""Environment variable naming rsrag's home folder (stores, caches)."""


def rsrag_home() -> Path:
    """rsrag's home folder: ``$RSRAG_HOME`` when set, else the user's data directory for rsrag."""
    env = os.environ.get(ENV_HOME, "").strip()
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("rsrag", appauthor=False))


def resolve_store_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The embedded store's folder.

    Args:
        path: Explicit folder; wins over the environment and the default.

    Returns:
        An absolute path (it may not exist yet; it is created on the first write).
    """
    if path is not None and str(path).strip():
        return Path(path).expanduser().absolute()
    return (rsrag_home() / "store").absolute()
