"""Encoder spec strings: one string picks the model and its weights.

Grammar (first match wins):

=====================================  =============================================================
``None``, ``""``, ``default``          the bundled offline LiT encoder (``rsrag-lit``)
``rsrag-lit``                          same
``rsrag-lit:random``                   LiT towers with untrained (random, seed 0) heads: a floor
``rsrag-lit:PATH.safetensors``         LiT towers with heads from ``rsrag encoder train``
``PATH.safetensors``                   same, when the file is an rsrag LiT heads checkpoint
``remoteclip:ARCH``                    RemoteCLIP (hf ``chendelong/RemoteCLIP``), ARCH in RN50, ViT-B-32, ViT-L-14
``georsclip:ARCH``                     GeoRSCLIP RS5M (hf ``Zilun/GeoRSCLIP``), ARCH in ViT-B-32, ViT-L-14,
                                       ViT-L-14-336, ViT-H-14
``hf-hub:ORG/REPO``                    an open_clip model published on the Hugging Face hub
``local-dir:DIR``                      an open_clip folder (``open_clip_config.json`` + weights)
``ARCH:TAG``                           an open_clip architecture with a pretrained tag (``ViT-B-32:openai``)
``ARCH:random``                        the architecture with random weights (seed 0), for plumbing/benchmarks
``ARCH:PATH``                          a local checkpoint file loaded into the architecture
=====================================  =============================================================

Parsing never imports open_clip for the bundled encoder and the ``remoteclip:``/``georsclip:``/``hf-hub:``/
``local-dir:`` prefixes; architecture names are checked against open_clip's model config files without
importing it (:func:`check_spec`, what settings validation calls). Only :func:`parse_spec` of an
``ARCH:TAG`` spec imports open_clip, to check the tag.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from rsrag.tools.errors import UnknownEncoderError

__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_PRECISION", "DEFAULT_SPEC", "PRECISIONS", "GEORSCLIP", "REMOTECLIP", "EncoderSpec", "check_spec", "openclip_models", "parse_spec"]

DEFAULT_SPEC = "rsrag-lit"
DEFAULT_BATCH_SIZE = 8
"""Windows (images) per encoder forward pass unless a caller says otherwise (``encoder.batch_size`` in the
settings): on 2 CPU cores as fast as 32 for the bundled encoder and ~320 MiB lower at the peak (BENCHMARKS.md,
"Pyramid index"); a GPU wants more."""

PRECISIONS = ("auto", "float32", "bfloat16")
"""What image forward passes compute in (``encoder.precision``): ``auto`` is half precision on CUDA and float32
elsewhere; ``bfloat16`` is faster on CPUs with AVX512-BF16 or AMX, at a small cost in answer quality; see
:mod:`rsrag.tools.encoders.runtime`."""
DEFAULT_PRECISION = "auto"

#: RemoteCLIP checkpoints: architecture -> (repo, file names, open_clip architecture)
REMOTECLIP: dict[str, tuple[str, tuple[str, ...], str]] = {
    arch: ("chendelong/RemoteCLIP", (f"RemoteCLIP-{arch}.pt",), arch) for arch in ("RN50", "ViT-B-32", "ViT-L-14")
}
#: GeoRSCLIP checkpoints: architecture -> (repo, candidate file names, open_clip architecture)
GEORSCLIP: dict[str, tuple[str, tuple[str, ...], str]] = {
    arch: ("Zilun/GeoRSCLIP", (f"ckpt/RS5M_{arch}.pt", f"RS5M_{arch}.pt"), target)
    for arch, target in (
        ("ViT-B-32", "ViT-B-32"),
        ("ViT-L-14", "ViT-L-14"),
        ("ViT-L-14-336", "ViT-L-14-336-quickgelu"),
        ("ViT-H-14", "ViT-H-14"),
    )
}


@dataclass(frozen=True)
class EncoderSpec:
    """A parsed spec.

    Attributes:
        text: the spec as given (normalised: the default is ``rsrag-lit``).
        kind: ``lit``, ``openclip`` (architecture + tag/random/file), ``hf-hub``, ``local-dir`` or ``hf-file``
            (a RemoteCLIP/GeoRSCLIP file on the hub loaded into an architecture).
        arch: open_clip architecture (``openclip`` and ``hf-file`` kinds).
        weights: tag, ``random``, a file path, a heads path, or None for the bundled heads.
        repo: Hugging Face repo (``hf-hub`` and ``hf-file`` kinds).
        filenames: candidate file names inside ``repo`` (``hf-file`` kind).
    """

    text: str
    kind: str
    arch: str | None = None
    weights: str | None = None
    repo: str | None = None
    filenames: tuple[str, ...] = ()


def _looks_like_path(value: str) -> bool:
    return "/" in value or "\\" in value or value.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))


def openclip_models() -> list[str]:
    """open_clip's architecture names, without importing open_clip unless it is imported already.

    Once open_clip is imported its own registry is asked (it includes configs added at run time with
    ``open_clip.add_model_config``); before that, the names are those of its bundled model config files.
    """
    module = sys.modules.get("open_clip")
    if module is not None:
        return list(module.list_models())
    found = importlib.util.find_spec("open_clip")
    if found is None or not found.submodule_search_locations:
        return []
    names: set[str] = set()
    for folder in found.submodule_search_locations:
        names |= {p.stem for p in (Path(folder) / "model_configs").glob("*.json")}
    return sorted(names)


def check_spec(spec: str | None) -> EncoderSpec:
    """Parse an encoder spec string without importing open_clip (pretrained tags are checked by :func:`parse_spec`).

    Raises:
        UnknownEncoderError: the spec names no known model, or an architecture without weights.
    """
    text = (spec or "").strip()
    if text in ("", "default", DEFAULT_SPEC):
        return EncoderSpec(DEFAULT_SPEC, "lit")
    if text.startswith("rsrag-lit:"):
        rest = text.split(":", 1)[1]
        if not rest:
            raise UnknownEncoderError(f"encoder spec {text!r}: give `rsrag-lit`, `rsrag-lit:random` or `rsrag-lit:PATH`")
        return EncoderSpec(text, "lit", weights=rest)
    for prefix, table in (("remoteclip:", REMOTECLIP), ("georsclip:", GEORSCLIP)):
        if text.lower().startswith(prefix):
            arch = text[len(prefix) :]
            if arch not in table:
                raise UnknownEncoderError(
                    f"encoder spec {text!r}: unknown {prefix[:-1]} architecture {arch!r}; known: {', '.join(table)}"
                )
            repo, files, target = table[arch]
            return EncoderSpec(text, "hf-file", arch=target, repo=repo, filenames=files)
    if text.startswith("hf-hub:"):
        repo = text[len("hf-hub:") :].strip("/")
        if repo.count("/") != 1:
            raise UnknownEncoderError(f"encoder spec {text!r}: expected hf-hub:ORG/REPO")
        return EncoderSpec(text, "hf-hub", repo=repo)
    if text.startswith("local-dir:"):
        return EncoderSpec(text, "local-dir", weights=text[len("local-dir:") :])
    arch, sep, weights = text.partition(":")
    known = openclip_models()
    if text.endswith(".safetensors") and not (sep and arch in known):
        return EncoderSpec(f"rsrag-lit:{text}", "lit", weights=text)
    if arch not in known:
        hint = ", ".join(a for a in known if a.lower().startswith(arch.lower()[:5]))[:200] or ", ".join(known[:8]) + ", ..."
        raise UnknownEncoderError(
            f"unknown encoder spec {text!r}: {arch!r} is not an open_clip architecture nor a known prefix "
            f"(rsrag-lit, remoteclip:, georsclip:, hf-hub:, local-dir:). see `open_clip.list_models()` (e.g. {hint})"
        )
    if not sep or not weights:
        raise UnknownEncoderError(
            f"encoder spec {text!r} names an architecture but no weights; use {arch}:TAG "
            f"(`open_clip.list_pretrained_tags_by_model({arch!r})`), {arch}:random, or {arch}:/path/to/checkpoint.pt"
        )
    return EncoderSpec(text, "openclip", arch=arch, weights=weights)


def parse_spec(spec: str | None) -> EncoderSpec:
    """Parse an encoder spec string (see the module docstring for the grammar), pretrained tags included.

    Raises:
        UnknownEncoderError: the spec names no known model, or an architecture without weights.
    """
    parsed = check_spec(spec)
    if parsed.kind != "openclip" or parsed.weights == "random" or _looks_like_path(parsed.weights or ""):
        return parsed
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(parsed.arch)
    if parsed.weights not in tags and not Path(parsed.weights or "").exists():
        raise UnknownEncoderError(
            f"encoder spec {parsed.text!r}: {parsed.weights!r} is neither a pretrained tag of {parsed.arch} "
            f"({', '.join(tags) or 'none'}), `random`, nor an existing file"
        )
    return parsed
