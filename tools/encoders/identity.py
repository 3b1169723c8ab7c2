"""Encoder ids known without building the model (the bundled encoder, ``ARCH:random``, local files).

An encoder's id is part of every patch index key. For the bundled encoder it follows from the heads
file (its config, in the safetensors header, and a hash of the file) and the towers' package versions, so
``rsrag index`` of an indexed image, or the first search of an indexed scene, can find the index without
loading any model. Nothing here imports torch or open_clip; the loader builds ids with these same
functions, so a known id always equals the loaded encoder's.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rsrag.tools.encoders.spec import EncoderSpec, check_spec
from rsrag.tools.encoders.towers import IMAGE_TOWERS, TEXT_PACKAGE, package_version
from rsrag.tools.errors import CheckpointMismatchError, WeightsUnavailableError

__all__ = [
    "DEFAULT_HEADS", "EncoderFacts", "fingerprint", "known_encoder_facts", "known_encoder_id", "lit_encoder_id",
    "read_safetensors_metadata",
]

DEFAULT_HEADS = Path(__file__).resolve().parent / "weights" / "rsrag-lit-effnet-lite0-minilm.safetensors"
"""The bundled encoder's trained heads."""
_LIT_DEFAULT_TOWER = "effnet-lite0"
_LIT_DEFAULT_DIM = 256


@dataclass(frozen=True)
class EncoderFacts:
    """What is known of an encoder before its model is built: its id, and where known its dimension and input side."""

    id: str
    dim: int | None = None
    image_size: int | None = None
_FINGERPRINTS: dict[tuple[str, int, int], str] = {}


def fingerprint(path: Path) -> str:
    """Short content hash of a weights file (whole file up to 64 MiB; size + first/last 8 MiB beyond)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FINGERPRINTS:
        h = hashlib.sha256(str(st.st_size).encode())
        with path.open("rb") as fh:
            if st.st_size <= 64 << 20:
                h.update(fh.read())
            else:
                h.update(fh.read(8 << 20))
                fh.seek(-(8 << 20), os.SEEK_END)
                h.update(fh.read())
        _FINGERPRINTS[key] = h.hexdigest()[:12]
    return _FINGERPRINTS[key]


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file, read from its header (no tensor is loaded).

    Raises:
        WeightsUnavailableError: the file does not exist.
        CheckpointMismatchError: the file is not a safetensors file.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailableError(
            f"LiT heads checkpoint not found: {path}; train one with `rsrag encoder train DATA --out {path}`"
        )
    try:
        with path.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            if size > 100 << 20:
                raise ValueError(f"header of {size} bytes")
            header = json.loads(fh.read(size))
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointMismatchError(f"{path} is not a readable safetensors file: {exc}") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return dict(meta) if isinstance(meta, dict) else {}


def lit_encoder_id(spec: EncoderSpec, image_tower: str | None = None) -> str:
    """The id of a LiT encoder spec (``rsrag-lit``, ``rsrag-lit:random``, ``rsrag-lit:PATH``).

    Args:
        spec: a parsed ``lit`` spec.
        image_tower: the heads' image tower when already known (read from the heads file otherwise).

    Raises:
        WeightsUnavailableError / CheckpointMismatchError: the heads file is missing or unreadable.
    """
    if spec.weights == "random":
        # "-lm": heads drawn by lit_model's initialisation order (open_clip's gave other random heads)
        return f"rsrag-lit:random#{image_tower or _LIT_DEFAULT_TOWER}-seed0-lm"
    path = Path(spec.weights) if spec.weights else DEFAULT_HEADS
    if image_tower is None:
        config = read_safetensors_metadata(path).get("config")
        try:
            image_tower = str(json.loads(config).get("image_tower", _LIT_DEFAULT_TOWER)) if config else None
        except (ValueError, AttributeError):
            image_tower = None
        if image_tower is None:
            raise CheckpointMismatchError(f"{path} is not an rsrag LiT heads checkpoint (no config in its metadata)")
    tower = IMAGE_TOWERS.get(image_tower)
    package = tower.package if tower is not None else "?"
    name = "rsrag-lit" if spec.weights is None else "rsrag-lit:file"
    text = f"{TEXT_PACKAGE}-{package_version(TEXT_PACKAGE)}"
    return f"{name}#{image_tower}-{package_version(package)}+{text}+{fingerprint(path)}"


def _lit_facts(spec: EncoderSpec) -> EncoderFacts:
    config: dict[str, Any] = {}
    if spec.weights != "random":
        path = Path(spec.weights) if spec.weights else DEFAULT_HEADS
        raw = read_safetensors_metadata(path).get("config")
        try:
            config = dict(json.loads(raw)) if raw else {}
        except (ValueError, TypeError):
            config = {}
    tower = str(config.get("image_tower", _LIT_DEFAULT_TOWER))
    known = IMAGE_TOWERS.get(tower)
    size = int(config.get("image_size", 0) or 0) or (known.image_size if known is not None else 0)
    dim = int(config.get("embed_dim", _LIT_DEFAULT_DIM))
    return EncoderFacts(id=lit_encoder_id(spec, tower if config or spec.weights == "random" else None), dim=dim,
                        image_size=size or None)


def known_encoder_facts(spec: str | None) -> EncoderFacts | None:
    """What the encoder ``spec`` names is known to be before loading (see :func:`known_encoder_id`); else ``None``."""
    parsed = check_spec(spec)
    if parsed.kind == "lit":
        return _lit_facts(parsed)
    ident = known_encoder_id(spec)
    return EncoderFacts(id=ident) if ident is not None else None


def known_encoder_id(spec: str | None) -> str | None:
    """The id the encoder ``spec`` names will have, when it is known without building the model; else ``None``.

    Known: the bundled encoder and any ``rsrag-lit`` heads file, ``ARCH:random``, and ``ARCH:PATH`` files.
    Pretrained tags and hub models need open_clip or the hub cache: ``None``.

    Raises:
        UnknownEncoderError: the spec names no known model.
        WeightsUnavailableError / CheckpointMismatchError: a LiT heads file is missing or unreadable.
    """
    parsed = check_spec(spec)
    if parsed.kind == "lit":
        return lit_encoder_id(parsed)
    if parsed.kind == "openclip" and parsed.weights == "random":
        return f"{parsed.text}#seed0"
    if parsed.kind == "openclip" and parsed.weights and Path(parsed.weights).is_file():
        return f"{parsed.arch}:file#{fingerprint(Path(parsed.weights))}"
    return None
