"""The slow path's visual concept library: one ``concept`` entry per class of a labelled image set.

Sources: a folder in the shared captions format (``captions.jsonl`` lines ``{"image", "class",
"captions"}``, e.g. ``../shared/data/aid-rsicd``), the captions file itself, or a plain class-labelled
folder (``<folder>/<Class>/<image>``). Each class becomes an entry ``concept:<Class>`` whose name is the
readable class phrase, whose text is a prompt plus sample captions, and whose images are the class's chips
(every chip gets its own image vector in the knowledge base, for the slow path's proxies).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

from rsrag.tools.captioned import CAPTIONS_FILE, Chip, class_phrase, read_chips
from rsrag.tools.errors import DataError
from rsrag.tools.knowledge.entry import ImageRef, KnowledgeEntry

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"}


def _folder_chips(folder: Path) -> list[Chip]:
    chips = [Chip(image=p, label=sub.name, captions=())
             for sub in sorted(folder.iterdir()) if sub.is_dir()
             for p in sorted(sub.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not chips:
        raise DataError(f"{folder} has neither {CAPTIONS_FILE} nor class sub-folders with images "
                        f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    return chips


def read_labelled(source: str | Path) -> list[Chip]:
    """Chips of a captions folder, a captions file, or a class-labelled folder.

    Raises:
        DataError: the source does not exist, or holds no labelled images.
    """
    src = Path(source)
    if src.is_file() and src.name.endswith(".jsonl"):
        if src.name != CAPTIONS_FILE:
            raise DataError(f"{src}: a captions file must be named {CAPTIONS_FILE} (images are resolved from its folder)")
        src = src.parent
    if not src.is_dir():
        raise DataError(f"concept source not found: {src}; give a folder with {CAPTIONS_FILE} or class sub-folders")
    chips = read_chips(src) if (src / CAPTIONS_FILE).is_file() else _folder_chips(src)
    labelled = [c for c in chips if c.label]
    if not labelled:
        raise DataError(f"{src}: no image has a class label; a concept library needs classes")
    return labelled


def _order(chip: Chip) -> str:
    return hashlib.sha1(chip.image.name.encode()).hexdigest()


def _stamp(path: Path) -> str:
    """A cheap change stamp of an image file (name, size, mtime): re-builds skip unchanged concepts."""
    st = path.stat()
    return hashlib.sha1(f"{path.name}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()


def build_concepts(source: str | Path, *, per_class: int | None = None, captions_per_concept: int = 12,
                   exclude: set[Path] | None = None, licence: str = "") -> list[KnowledgeEntry]:
    """One concept entry per class.

    Args:
        source: captions folder or file, or class-labelled folder.
        per_class: keep at most this many chips per class (a fixed, name-hashed choice; ``None``: all).
        captions_per_concept: distinct captions kept in the entry's text.
        exclude: image paths never to use (e.g. a benchmark's held-out images).
        licence: licence recorded on every entry.
    """
    groups: dict[str, list[Chip]] = defaultdict(list)
    folder = Path(source).parent if Path(source).is_file() else Path(source)
    for chip in read_labelled(source):
        if exclude and chip.image.resolve() in exclude:
            continue
        groups[str(chip.label)].append(chip)
    entries = []
    for label in sorted(groups):
        chips = sorted(groups[label], key=_order)[: per_class or None]
        captions = list(dict.fromkeys(c for chip in chips for c in chip.captions))[:captions_per_concept]
        phrase = class_phrase(label)
        fields: dict = {"captions": captions} if captions else {}
        entries.append(KnowledgeEntry(
            id=f"concept:{label}", name=phrase, category=label, kind="concept",
            description=f"an aerial image of {phrase}.", fields=fields,
            images=tuple(ImageRef(path=str(c.image.resolve()), sha1=_stamp(c.image)) for c in chips),
            source=str(folder), licence=licence,
        ))
    return entries
