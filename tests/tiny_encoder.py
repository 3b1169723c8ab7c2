"""A tiny random-weight open_clip architecture for plumbing tests (no weights, builds in milliseconds)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

TINY_MODEL = "rsrag-tiny-test"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
_registered: Path | None = None


def register_tiny_model_config() -> str:
    """Register :data:`TINY_MODEL` with open_clip (idempotent) and return its name.

    Use the spec ``f"{TINY_MODEL}:random"`` to load it: a 32-d ViT with 32 px inputs and a one-layer text
    transformer, random weights (seed 0).
    """
    global _registered
    import open_clip

    if _registered is None or TINY_MODEL not in open_clip.list_models():
        folder = Path(tempfile.mkdtemp(prefix="rsrag-openclip-cfg-"))
        path = folder / f"{TINY_MODEL}.json"
        path.write_text(json.dumps(TINY_CONFIG))
        open_clip.add_model_config(path)
        _registered = path
    return TINY_MODEL
