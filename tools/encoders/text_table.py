"""Precomputed text vectors shipped beside a LiT heads file: texts every run embeds, embedded once.

Each question's presence model compares windows against a fixed vocabulary of competing concepts, each
phrase under every prompt template: about 300 texts, several seconds of MiniLM on two CPU cores, the same
vectors every run. :func:`write_text_table` embeds such texts once (at build time, with the numpy text
tower) into ``<heads>.texts.npz`` beside the heads file; :class:`~rsrag.tools.encoders.lit_text.LitTextEncoder`
looks texts up there and embeds only the others.

The table names the heads file's fingerprint and the text tower's package version; a table for other heads
(``rsrag encoder train`` wrote new ones) or another tower is ignored, so it can only be missing, never wrong.
Rebuild the bundled encoder's table after changing its heads, templates or presence calibration::

    .venv/bin/python -m rsrag.tools.encoders.text_table
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["read_text_table", "table_key", "table_path", "write_text_table"]


def table_path(heads: Path) -> Path:
    """Where the text table of a heads file lives: ``<heads stem>.texts.npz`` beside it."""
    heads = Path(heads)
    return heads.with_name(heads.stem + ".texts.npz")


def table_key(heads: Path) -> str:
    """What a table must name to be used with ``heads``: the file's fingerprint and the text tower's version."""
    from rsrag.tools.encoders.identity import fingerprint
    from rsrag.tools.encoders.towers import TEXT_PACKAGE, package_version

    return f"{fingerprint(Path(heads))}+{TEXT_PACKAGE}-{package_version(TEXT_PACKAGE)}"


def read_text_table(heads: Path) -> dict[str, np.ndarray]:
    """Text -> unit vector from the table of ``heads`` (empty when there is none or it is for other weights)."""
    path = table_path(heads)
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != table_key(heads):
                return {}
            texts, vectors = data["texts"], np.asarray(data["vectors"], dtype=np.float32)
    except (OSError, KeyError, ValueError):
        return {}
    if vectors.ndim != 2 or len(texts) != len(vectors):
        return {}
    return {str(t): v for t, v in zip(texts, vectors)}


def write_text_table(heads: Path, texts: list[str], *, batch_size: int = 32) -> Path:
    """Embed ``texts`` with the numpy text tower of ``heads`` (its presence head, which the vocabulary is embedded
    with) and write its table (atomically).

    Returns:
        The table's path.
    """
    import os

    from rsrag.tools.encoders.lit_text import LitTextEncoder

    unique = list(dict.fromkeys(texts))
    encoder = LitTextEncoder(Path(heads), batch_size=batch_size)
    vectors = encoder.encode_texts(unique, use_table=False, head="presence")  # the texts presence verdicts embed
    path = table_path(heads)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, key=np.asarray(table_key(heads)), texts=np.asarray(unique), vectors=vectors)
    os.replace(tmp, path)
    return path


def bundled_texts() -> list[str]:
    """The texts every question embeds with the bundled encoder: its presence vocabulary under every prompt
    template (what :meth:`rsrag.tools.calibration.PresenceModel.embed` embeds)."""
    from rsrag.tools.calibration import load_presence
    from rsrag.tools.encoders import lazy_encoder
    from rsrag.tools.fastpath import load_templates

    presence = load_presence(lazy_encoder(None))
    if presence.calibration is None:
        return []
    templates = list(load_templates())
    return [t.replace("{}", p) for p in presence.calibration.vocabulary for t in templates]


def main() -> None:
    """Rebuild the bundled encoder's table."""
    from rsrag.tools.encoders.identity import DEFAULT_HEADS

    texts = bundled_texts()
    path = write_text_table(DEFAULT_HEADS, texts)
    print(f"{path}: {len(set(texts))} texts")


if __name__ == "__main__":
    main()
