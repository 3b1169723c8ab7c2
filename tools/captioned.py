"""Captioned or class-labelled image chips in the shared format, and the fixed validation split.

A data folder holds ``captions.jsonl``; each line is ``{"image": <path relative to the folder>, "class":
<label or null>, "captions": [<text>, ...]}``. Either ``class`` or ``captions`` may be missing, not both.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from rsrag.tools.errors import DataError

CAPTIONS_FILE = "captions.jsonl"
CLASS_TEMPLATES: tuple[str, ...] = (
    "an aerial image of {}.",
    "a satellite image of {}.",
    "a remote sensing image of {}.",
)


@dataclass(frozen=True)
class Chip:
    """One image of a data folder with its labels."""

    image: Path
    label: str | None
    captions: tuple[str, ...]


def class_phrase(label: str) -> str:
    """Turn a class label such as ``"DenseResidential"`` or ``"storage_tanks"`` into ``"dense residential"``."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", label.replace("_", " ").replace("-", " "))
    return " ".join(spaced.lower().split())


def class_prompts(label: str) -> list[str]:
    """The prompt texts that stand for a class (one per template)."""
    phrase = class_phrase(label)
    return [t.format(phrase) for t in CLASS_TEMPLATES]


def read_chips(folder: Path) -> list[Chip]:
    """Read a data folder's ``captions.jsonl``.

    Raises:
        DataError: the file is missing, a line is malformed, or an image it names does not exist.
    """
    folder = Path(folder)
    path = folder / CAPTIONS_FILE
    if not path.is_file():
        raise DataError(f"{folder} has no {CAPTIONS_FILE}; expected lines {{\"image\", \"class\", \"captions\"}}")
    chips: list[Chip] = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                image = folder / row["image"]
                label = row.get("class") or None
                captions = tuple(str(c).strip() for c in row.get("captions") or [] if str(c).strip())
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DataError(f"{path}:{n}: malformed line ({exc})") from exc
            if label is None and not captions:
                raise DataError(f"{path}:{n}: neither a class nor captions for {row['image']!r}")
            if not image.is_file():
                raise DataError(f"{path}:{n}: image not found: {image}")
            chips.append(Chip(image=image, label=str(label) if label else None, captions=captions))
    if not chips:
        raise DataError(f"{path} lists no images")
    return chips


def split_chips(chips: list[Chip], val_fraction: float = 0.1) -> tuple[list[Chip], list[Chip]]:
    """Fixed, class-stratified train/validation split.

    Within each class (unlabelled chips form one group) chips are ordered by a hash of their file name and
    the first ``round(val_fraction * n)`` go to validation. The split depends only on the file names, not on
    a seed or on line order, so training never sees a validation chip however it is run.

    Returns:
        (train, val), each in the input order.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    groups: dict[str | None, list[Chip]] = defaultdict(list)
    for chip in chips:
        groups[chip.label].append(chip)
    val_ids: set[Path] = set()
    for members in groups.values():
        ordered = sorted(members, key=lambda c: hashlib.sha1(c.image.name.encode()).hexdigest())
        val_ids.update(c.image for c in ordered[: round(val_fraction * len(members))])
    return [c for c in chips if c.image not in val_ids], [c for c in chips if c.image in val_ids]


def select_split(chips: list[Chip], split: str, val_fraction: float = 0.1) -> list[Chip]:
    """Return ``"train"``, ``"val"`` or ``"all"`` chips.

    Raises:
        DataError: unknown split name or an empty selection.
    """
    if split == "all":
        return chips
    if split not in ("train", "val"):
        raise DataError(f"unknown split {split!r}; use train, val or all")
    train, val = split_chips(chips, val_fraction)
    chosen = train if split == "train" else val
    if not chosen:
        raise DataError(f"the {split} split is empty ({len(chips)} chips, val_fraction={val_fraction})")
    return chosen

