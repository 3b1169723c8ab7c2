"""Tiny captioned image folders in the shared ``captions.jsonl`` format, for tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def make_folder(root: Path, classes: dict[str, tuple[int, int, int]], n: int = 3) -> Path:
    """A tiny captioned data folder: ``n`` flat-colour images per class, two captions each."""
    lines = []
    for cls, colour in classes.items():
        (root / "images" / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            rel = f"images/{cls}/{cls.lower()}_{i}.png"
            shade = np.clip(np.array(colour) + 10 * i, 0, 255).astype(np.uint8)
            Image.fromarray(np.tile(shade, (40, 40, 1))).save(root / rel)
            lines.append({"image": rel, "class": cls, "captions": [f"a {cls.lower()} from above", f"{cls.lower()} {i}"]})
    (root / "captions.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return root
