"""CLIP-family encoders behind one interface, chosen by one spec string.

>>> enc = load_encoder()                       # the bundled offline encoder (no network)
>>> enc = load_encoder("georsclip:ViT-B-32")   # a remote-sensing CLIP from the local Hugging Face cache

See :mod:`rsrag.tools.encoders.spec` for the spec grammar. Models load lazily (on the first
``load_encoder`` call for a spec, never at import time) and are cached per process; ``lazy_encoder(spec)``
defers even that to the first use, and knows the bundled encoder's id without loading it. Importing this
package imports neither torch nor open_clip.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rsrag.tools.encoders.base import Encoder, ImageLike
    from rsrag.tools.encoders.identity import known_encoder_id
    from rsrag.tools.encoders.loader import LazyEncoder, clear_encoder_cache, hf_offline, lazy_encoder, load_encoder
    from rsrag.tools.encoders.spec import DEFAULT_SPEC, EncoderSpec, check_spec, parse_spec

_LAZY = {
    "Encoder": "base", "ImageLike": "base", "known_encoder_id": "identity", "LazyEncoder": "loader",
    "clear_encoder_cache": "loader", "hf_offline": "loader", "lazy_encoder": "loader", "load_encoder": "loader",
    "DEFAULT_SPEC": "spec", "EncoderSpec": "spec", "check_spec": "spec", "parse_spec": "spec",
}

__all__ = [
    "DEFAULT_SPEC",
    "Encoder",
    "EncoderSpec",
    "ImageLike",
    "LazyEncoder",
    "check_spec",
    "clear_encoder_cache",
    "hf_offline",
    "known_encoder_id",
    "lazy_encoder",
    "load_encoder",
    "parse_spec",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rsrag.tools.encoders' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"rsrag.tools.encoders.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
