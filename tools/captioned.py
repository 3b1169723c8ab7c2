"""Captioned or class-labelled image chips in the shared format, the fixed validation split, k-fold splits
for cross-validation, and a content fingerprint of a folder's images.

A data folder holds ``captions.jsonl``; each line is ``{"image": <path relative to the folder>, "class":
<label or null>, "captions": [<text>, ...]}``. Either ``class`` or ``captions`` may be missing, not both.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from collections.abc import Sequence

import numpy as np

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



def normalise_caption(text: str) -> str:
    """Lower-case words only: captions that differ only in case, punctuation or spacing are one template."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def caption_groups(chips: Sequence[Chip]) -> list[int]:
    """Group id per chip: chips connected through a shared (normalised) caption are one group.

    RSICD-style captions repeat across images ("many planes are parked in an airport"); a fold built from
    whole groups holds out every caption template it tests on. Chips without captions are their own group.
    """
    parent = list(range(len(chips)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for i, chip in enumerate(chips):
        for cap in {normalise_caption(c) for c in chip.captions}:
            if cap in owner:
                parent[find(i)] = find(owner[cap])
            else:
                owner[cap] = i
    roots: dict[int, int] = {}
    return [roots.setdefault(find(i), len(roots)) for i in range(len(chips))]


def kfold(chips: Sequence[Chip], k: int, by: str = "images", seed: int = 0) -> list[list[int]]:
    """Split chip indices into ``k`` disjoint test folds (their union is every chip).

    Args:
        chips: the chips.
        k: number of folds (>= 2).
        by: ``"images"``: every image is its own group (stratified by class: each fold gets about 1/k of
            every class); ``"templates"``: whole :func:`caption_groups` (no caption of a test fold appears in
            its training folds), largest groups first into the fold with the fewest chips.
        seed: order of the chips within a class (``images``) or of equal-sized groups (``templates``).

    Returns:
        ``k`` lists of chip indices, each sorted.

    Raises:
        DataError: ``k`` out of range or an unknown ``by``.
    """
    if not 2 <= k <= len(chips):
        raise DataError(f"k must be between 2 and the number of chips ({len(chips)}), got {k}")
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    if by == "images":
        by_class: dict[str | None, list[int]] = defaultdict(list)
        for i, chip in enumerate(chips):
            by_class[chip.label].append(i)
        offset = 0
        for label in sorted(by_class, key=str):
            members = [by_class[label][j] for j in rng.permutation(len(by_class[label]))]
            for j, i in enumerate(members):
                folds[(j + offset) % k].append(i)
            offset += len(members)
    elif by == "templates":
        groups: dict[int, list[int]] = defaultdict(list)
        for i, g in enumerate(caption_groups(chips)):
            groups[g].append(i)
        order = sorted(groups.values(), key=lambda m: (-len(m), float(rng.random())))
        for members in order:
            min(folds, key=len).extend(members)
    else:
        raise DataError(f"unknown fold grouping {by!r}; use images or templates")
    return [sorted(f) for f in folds]


def file_sha1(path: str | os.PathLike[str]) -> str:
    """SHA-1 of a file's bytes (what identifies an image wherever its folder is copied)."""
    with open(path, "rb") as fh:
        return hashlib.sha1(fh.read()).hexdigest()


def image_fingerprints(chips: Sequence[Chip]) -> list[str]:
    """:func:`file_sha1` of each chip's image."""
    return [file_sha1(chip.image) for chip in chips]


def folder_fingerprint(chips: Sequence[Chip]) -> str:
    """Content fingerprint of a data folder: a hash of its images' hashes, independent of order and location."""
    h = hashlib.sha256()
    for digest in sorted(image_fingerprints(chips)):
        h.update(digest.encode())
    return h.hexdigest()[:16]
