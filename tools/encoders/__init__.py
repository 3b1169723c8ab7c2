"""CLIP-family encoders behind one interface, chosen by one spec string.

>>> enc = load_encoder()                       # the bundled offline encoder (no network)
>>> enc = load_encoder("georsclip:ViT-B-32")   # a remote-sensing CLIP from the local Hugging Face cache

See :mod:`rsrag.tools.encoders.spec` for the spec grammar. Models load lazily (on the first
``load_encoder`` call for a spec, never at import time) and are cached per process.
"""

from __future__ import annotations

from rsrag.tools.encoders.base import Encoder, ImageLike
from rsrag.tools.encoders.loader import clear_encoder_cache, hf_offline, load_encoder
from rsrag.tools.encoders.spec import DEFAULT_SPEC, EncoderSpec, parse_spec

__all__ = [
    "DEFAULT_SPEC",
    "Encoder",
    "EncoderSpec",
    "ImageLike",
    "clear_encoder_cache",
    "hf_offline",
    "load_encoder",
    "parse_spec",
]
