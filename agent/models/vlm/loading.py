"""Find and load a local transformers VLM (processor + model), once per process.

Weights are never searched for by retrying the network: a local folder is used as is; a Hugging Face id is
looked up in the local Hugging Face cache first; when it is not there and ``HF_HUB_OFFLINE`` (or
``TRANSFORMERS_OFFLINE``) is set, :class:`WeightsUnavailableError` is raised at once, naming the id, the
cache folder and how to supply the weights. Only when online is a download tried (short timeouts).
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rsrag.agent.models.vlm.family import VLMLoadError
from rsrag.tools.errors import ConfigError, WeightsUnavailableError

_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass
class LoadedVLM:
    """A loaded processor and model; ``lock`` serialises generation on the shared model."""

    processor: Any
    model: Any
    source: Path
    device: str
    lock: threading.Lock = field(default_factory=threading.Lock)


_CACHE: dict[tuple[Any, ...], LoadedVLM] = {}
_CACHE_LOCK = threading.Lock()


def hf_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` asks for no network."""
    flags = (os.environ.get(v, "").strip().lower() for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(f in ("1", "true", "yes", "on") for f in flags)


def _how_to_supply(model_id: str, cache: str) -> str:
    return (
        f"to supply the weights, on a connected machine run `hf download {model_id}` and copy the Hugging Face cache "
        f"({cache}) here, or download the checkpoint folder and use the spec transformers:/path/to/folder"
    )


def resolve_source(model: str, *, revision: str | None = None) -> Path:
    """The local folder holding ``model`` (a folder path or a Hugging Face id).

    Raises:
        WeightsUnavailableError: the folder does not exist or lacks a config, or the id is not cached and
            the hub is offline (or the download failed).
        ConfigError: ``model`` is empty.
    """
    if not model or not model.strip():
        raise ConfigError("no model given: use a local checkpoint folder or a Hugging Face id")
    path = Path(model).expanduser()
    looks_local = path.is_absolute() or model.startswith((".", "~")) or not _HF_ID.match(model)
    if path.exists() or looks_local:
        if not (path / "config.json").is_file():
            what = "does not exist" if not path.exists() else "has no config.json"
            raise WeightsUnavailableError(
                f"VLM {model!r}: local checkpoint folder {path.resolve()} {what}; point the spec at a folder saved with "
                f"save_pretrained (config.json, weights, processor and tokenizer files)"
            )
        return path
    from huggingface_hub import constants, try_to_load_from_cache

    cache = str(constants.HF_HUB_CACHE)
    hit = try_to_load_from_cache(model, "config.json", revision=revision)
    if isinstance(hit, str):
        folder = Path(hit).parent
        if any((folder / name).is_file() for name in _WEIGHT_FILES):
            return folder
    if hf_offline():
        raise WeightsUnavailableError(
            f"VLM {model!r}: weights not in the local Hugging Face cache ({cache}; looked for config.json and "
            f"{' / '.join(_WEIGHT_FILES)}) and HF_HUB_OFFLINE is set; {_how_to_supply(model, cache)}"
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model, revision=revision, etag_timeout=10))
    except Exception as exc:  # network, 404, gated repo: all mean "not available here"
        raise WeightsUnavailableError(
            f"VLM {model!r}: could not download ({type(exc).__name__}: {exc}); looked in {cache}; "
            f"{_how_to_supply(model, cache)}"
        ) from exc


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when available, else ``"cpu"``; anything else unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str) -> Any:
    """A torch dtype, or ``"auto"`` (the checkpoint's) on accelerators; float32 for ``"auto"`` on CPU.

    Raises:
        ConfigError: an unknown dtype name.
    """
    import torch

    if dtype not in _DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)}")
    if dtype == "auto":
        return torch.float32 if device == "cpu" else "auto"
    return getattr(torch, dtype)


def load_vlm(
    model: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    revision: str | None = None,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
) -> LoadedVLM:
    """Load (or fetch from the per-process cache) the processor and model for ``model``.

    The model is in eval mode on ``device``. Loading never touches the network once the folder is
    resolved (``local_files_only``).

    Raises:
        WeightsUnavailableError: see :func:`resolve_source`.
        VLMLoadError: the folder's files do not build a processor or an image-text-to-text model.
        ConfigError: an unknown dtype.
    """
    source = resolve_source(model, revision=revision)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    key = (str(source.resolve()), dev, str(torch_dtype), attn_implementation, trust_remote_code)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        from transformers import AutoModelForImageTextToText, AutoProcessor

        common: dict[str, Any] = {"local_files_only": True, "trust_remote_code": trust_remote_code}
        try:
            processor = AutoProcessor.from_pretrained(source, **common)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise VLMLoadError(f"VLM {model!r}: could not build the processor from {source}: {exc}") from exc
        if not hasattr(processor, "tokenizer") or not hasattr(processor, "image_processor"):
            kind = type(processor).__name__
            raise VLMLoadError(f"VLM {model!r}: {source} holds a {kind}, not a vision-language processor")
        extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
        try:
            net = AutoModelForImageTextToText.from_pretrained(source, dtype=torch_dtype, **common, **extra)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise VLMLoadError(f"VLM {model!r}: could not build an image-text-to-text model from {source}: {exc}") from exc
        net.to(dev).eval()
        loaded = LoadedVLM(processor=processor, model=net, source=source, device=dev)
        _CACHE[key] = loaded
        return loaded


def clear_cache() -> None:
    """Forget every loaded model (frees memory once no chat model holds a reference)."""
    with _CACHE_LOCK:
        _CACHE.clear()
