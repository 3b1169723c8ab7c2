"""``load_encoder``: resolve a spec to local weights, build the model once per process, wrap it.

Nothing here downloads silently for minutes: weights are looked up in the local Hugging Face cache first;
when they are absent and ``HF_HUB_OFFLINE`` is set, a :class:`WeightsUnavailableError` names the spec, the
files looked for and how to supply them, at once. Only when online is a download tried (short timeouts),
and any failure is reported the same way.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rsrag.tools.encoders.identity import DEFAULT_HEADS, fingerprint, known_encoder_facts, lit_encoder_id
from rsrag.tools.encoders.spec import DEFAULT_BATCH_SIZE, DEFAULT_PRECISION, EncoderSpec, check_spec, parse_spec
from rsrag.tools.errors import CheckpointMismatchError, EncoderError, WeightsUnavailableError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from rsrag.tools.encoders.hubness import HubCorrection

    from rsrag.tools.encoders.base import Encoder, ImageLike
    from rsrag.tools.encoders.openclip import OpenClipEncoder

__all__ = ["LazyEncoder", "clear_encoder_cache", "fingerprint", "hf_file", "hf_offline", "lazy_encoder", "load_encoder"]

_CACHE: dict[tuple[str, str, str], OpenClipEncoder] = {}
_LOCK = threading.Lock()


def hf_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) asks for no network."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hf_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def hf_file(spec: str, repo: str, filenames: tuple[str, ...]) -> Path:
    """Local path of the first of ``filenames`` in the Hugging Face repo ``repo``, downloading only if online.

    Raises:
        WeightsUnavailableError: not cached and offline, or the download failed.
    """
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    for name in filenames:
        hit = try_to_load_from_cache(repo, name)
        if isinstance(hit, str) and Path(hit).is_file():
            return Path(hit)
    looked = ", ".join(f"{repo}/{n}" for n in filenames)
    how = (
        f"to supply them, on a connected machine run `hf download {repo} {filenames[0]}` and copy the Hugging Face "
        f"cache ({_hf_cache_dir()}) here, or point the spec at a local file (ARCH:/path/to/{Path(filenames[0]).name})"
    )
    if hf_offline():
        raise WeightsUnavailableError(
            f"encoder spec {spec!r}: weights not available offline (HF_HUB_OFFLINE is set); looked for {looked} "
            f"in {_hf_cache_dir()}; {how}"
        )
    errors = []
    for name in filenames:
        try:
            return Path(hf_hub_download(repo, name, etag_timeout=10))
        except Exception as exc:  # network, 404, auth: all mean "not available here"
            errors.append(f"{name}: {type(exc).__name__}")
    raise WeightsUnavailableError(
        f"encoder spec {spec!r}: could not download weights ({'; '.join(errors)}); looked for {looked} in "
        f"{_hf_cache_dir()}; {how}"
    )


def _tag_file(spec: EncoderSpec) -> tuple[Path, dict]:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(spec.arch, spec.weights)
    if cfg.get("file"):
        return Path(cfg["file"]), cfg
    hub = cfg.get("hf_hub", "")
    if hub:
        names: tuple[str, ...]
        if hub.endswith("/"):  # open_clip's convention: repo only, default file names
            repo, names = hub.rstrip("/"), ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
        else:
            repo, name = os.path.split(hub)
            names = (name,)
        return hf_file(spec.text, repo, names), cfg
    url_file = Path.home() / ".cache" / "clip" / os.path.basename(cfg.get("url", ""))
    if url_file.is_file():
        return url_file, cfg
    raise WeightsUnavailableError(
        f"encoder spec {spec.text!r}: weights not found at {url_file}; download {cfg.get('url')} there on a "
        f"connected machine, or use {spec.arch}:/path/to/checkpoint.pt"
    )


def _build_openclip(spec: EncoderSpec, device: str, batch_size: int, precision: str) -> OpenClipEncoder:
    import open_clip
    import torch

    from rsrag.tools.encoders.openclip import OpenClipEncoder

    arch, weights = spec.arch, spec.weights
    kwargs: dict = {"pretrained_text": False, "pretrained_image": False}
    if spec.kind == "hf-hub":
        repo = spec.repo or ""
        config = hf_file(spec.text, repo, ("open_clip_config.json",))
        # the weights must sit next to the config in the same snapshot folder, where local-dir: finds them
        hf_file(spec.text, repo, ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"))
        arch, weights = f"local-dir:{config.parent}", None
        ident = f"{spec.text}#{fingerprint(config.parent / 'open_clip_config.json')}"
    elif spec.kind == "local-dir":
        arch, ident = spec.text, f"{spec.text}#{fingerprint(Path(spec.weights or '') / 'open_clip_config.json')}"
    elif spec.kind == "hf-file":
        path = hf_file(spec.text, spec.repo or "", spec.filenames)
        weights, ident = str(path), f"{spec.text}#{fingerprint(path)}"
    elif weights == "random":
        weights, ident = None, f"{spec.text}#seed0"
    elif weights is not None and Path(weights).is_file():
        ident = f"{spec.arch}:file#{fingerprint(Path(weights))}"
    else:
        path, tag_cfg = _tag_file(spec)
        kwargs["force_quick_gelu"] = bool(tag_cfg.get("quick_gelu", False))
        kwargs["force_preprocess_cfg"] = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg}
        weights, ident = str(path), f"{spec.text}#{fingerprint(path)}"
    if weights is not None and not Path(weights).is_file():
        raise WeightsUnavailableError(f"encoder spec {spec.text!r}: checkpoint file not found: {weights}")
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=weights, **kwargs)
        tokenizer = open_clip.get_tokenizer(arch)
    except RuntimeError as exc:
        if "state_dict" in str(exc) or "size mismatch" in str(exc) or "Missing key" in str(exc):
            raise CheckpointMismatchError(f"encoder spec {spec.text!r}: checkpoint does not fit {arch}: {str(exc)[:400]}") from exc
        raise EncoderError(f"encoder spec {spec.text!r}: could not build the model: {str(exc)[:400]}") from exc
    except (OSError, ValueError) as exc:
        if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
            raise WeightsUnavailableError(f"encoder spec {spec.text!r}: {exc}") from exc
        raise CheckpointMismatchError(f"encoder spec {spec.text!r}: unreadable checkpoint {weights}: {exc}") from exc
    except Exception as exc:  # unpickling errors and the like from a file that is no checkpoint
        if weights is not None:
            raise CheckpointMismatchError(f"encoder spec {spec.text!r}: {weights} is not a checkpoint for {arch}: {exc}") from exc
        raise
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    return OpenClipEncoder(model, preprocess, tokenizer, encoder_id=ident, image_size=size, device=device, batch_size=batch_size,
                           precision=precision)


def _build_lit(spec: EncoderSpec, device: str, batch_size: int, precision: str) -> OpenClipEncoder:
    from rsrag.tools.encoders.features import lit_transform
    from rsrag.tools.encoders.lit import PRESENCE_PREFIX, LitConfig, LitTokenizer, build_lit_model, load_heads_into, read_heads
    from rsrag.tools.encoders.openclip import OpenClipEncoder
    from rsrag.tools.encoders.towers import text_tower_dir

    hub = None
    if spec.weights == "random":
        cfg = LitConfig()
        model = build_lit_model(cfg, seed=0)
    else:
        path = Path(spec.weights) if spec.weights else DEFAULT_HEADS
        cfg, tensors, _ = read_heads(path)
        model = build_lit_model(cfg)
        load_heads_into(model, tensors, str(path))
        hub = _heads_hub(path)
    ident = lit_encoder_id(spec, cfg.image_tower)
    tokenizer = LitTokenizer(text_tower_dir(), cfg.context_length)
    presence = None
    if spec.weights != "random" and any(k.startswith(PRESENCE_PREFIX) for k in tensors):
        from rsrag.tools.encoders.lit_text import lit_text_encoder

        text = lit_text_encoder(path, batch_size=batch_size)
        presence = functools.partial(text.encode_texts, head="presence")
    return OpenClipEncoder(
        model, lit_transform(cfg), tokenizer, encoder_id=ident, image_size=cfg.size, device=device,
        batch_size=batch_size, dim=cfg.embed_dim, hub=hub, presence_texts=presence, precision=precision,
    )


def load_encoder(spec: str | None = None, *, device: str = "cpu", batch_size: int = DEFAULT_BATCH_SIZE,
                 precision: str = DEFAULT_PRECISION) -> Encoder:
    """Load (once per process, device and precision) the encoder a spec names.

    Args:
        spec: an encoder spec (see :mod:`rsrag.tools.encoders.spec`); None means the bundled offline encoder.
        device: torch device, e.g. ``"cpu"`` or ``"cuda:0"``.
        batch_size: images or texts per forward pass.
        precision: what image forward passes compute in (:data:`rsrag.tools.encoders.spec.PRECISIONS`; ``auto``:
            half precision on CUDA, else float32; ``bfloat16``: faster on CPUs with AVX512-BF16 or AMX).

    Returns:
        An :class:`~rsrag.tools.encoders.base.Encoder`. The model is built once per (spec, device, precision); a
        call with another batch size gets a view sharing that model. On CPU the process's runtime is tuned first
        (:func:`rsrag.tools.encoders.runtime.tune_cpu_runtime`).

    Raises:
        UnknownEncoderError: the spec names no known model.
        WeightsUnavailableError: the weights are not available locally and cannot be downloaded.
        CheckpointMismatchError: a checkpoint does not fit its architecture.
        EncoderError: an unknown precision.
    """
    parsed = parse_spec(spec)
    if device.strip().lower() == "cpu":
        from rsrag.tools.encoders.runtime import tune_cpu_runtime

        tune_cpu_runtime()  # before torch's first CPU allocation: huge pages for the activation buffers
    import torch

    from rsrag.tools.encoders.runtime import image_dtype

    key = (parsed.text, str(torch.device(device)), str(image_dtype(precision, device)))
    with _LOCK:
        if key not in _CACHE:
            build = _build_lit if parsed.kind == "lit" else _build_openclip
            _CACHE[key] = build(parsed, device, batch_size, precision)
        return _CACHE[key].with_batch_size(batch_size)


class LazyEncoder:
    """An :class:`~rsrag.tools.encoders.base.Encoder` that loads its model on first use.

    Its :attr:`id` (and for the bundled encoder its ``dim`` and ``image_size``) is known before loading when
    the spec allows it (see :mod:`rsrag.tools.encoders.identity`), so finding a scene's index, or laying out
    its windows, costs no model load; encoding loads the model once, through :func:`load_encoder`.

    Args:
        spec / device / batch_size / precision: as for :func:`load_encoder`.
    """

    def __init__(self, spec: str | None = None, *, device: str = "cpu", batch_size: int = DEFAULT_BATCH_SIZE,
                 precision: str = DEFAULT_PRECISION) -> None:
        self.spec, self.device, self.batch_size, self.precision = spec, device, batch_size, precision
        self._facts = known_encoder_facts(spec)
        self._id = self._facts.id if self._facts is not None else None
        self._encoder: Encoder | None = None
        self._lock = threading.Lock()
        parsed = check_spec(spec)
        self._heads: Path | None = None
        """The LiT heads file of the spec (``None`` for other encoders and random heads)."""
        if parsed.kind == "lit" and parsed.weights != "random":
            self._heads = Path(parsed.weights) if parsed.weights else DEFAULT_HEADS
        self._text_heads = self._heads if device.strip().lower() == "cpu" else None
        """A LiT heads file whose texts are encoded by the numpy text tower (:mod:`.lit_text`), on CPU."""

    @functools.cached_property
    def hub(self) -> HubCorrection | None:
        """The hub correction of its window vectors (read once from the heads file; no model is loaded)."""
        return _heads_hub(self._heads) if self._heads is not None else None

    @property
    def loaded(self) -> bool:
        """Whether the model has been loaded."""
        return self._encoder is not None

    def load(self) -> Encoder:
        """The loaded encoder (loaded now if needed)."""
        with self._lock:
            if self._encoder is None:
                encoder = load_encoder(self.spec, device=self.device, batch_size=self.batch_size, precision=self.precision)
                facts = self._facts
                if facts is not None and (encoder.id, facts.dim or encoder.dim, facts.image_size or encoder.image_size) != (
                        facts.id, encoder.dim, encoder.image_size):
                    raise EncoderError(f"encoder spec {self.spec!r}: the loaded encoder ({encoder.id}, {encoder.dim}-d, "
                                       f"{encoder.image_size} px) differs from what was known before loading ({facts})")
                self._encoder = encoder
            return self._encoder

    @property
    def id(self) -> str:
        """The encoder's id (part of index keys)."""
        return self._id if self._id is not None else self.load().id

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        known = self._facts.dim if self._facts is not None else None
        return known if known is not None else self.load().dim

    @property
    def image_size(self) -> int:
        """Model input side in pixels."""
        known = self._facts.image_size if self._facts is not None else None
        return known if known is not None else self.load().image_size

    def preprocess(self, image: ImageLike) -> torch.Tensor:
        """See :meth:`rsrag.tools.encoders.base.Encoder.preprocess`."""
        return self.load().preprocess(image)

    def encode_image_tensors(self, batch: torch.Tensor) -> np.ndarray:
        """See :meth:`rsrag.tools.encoders.base.Encoder.encode_image_tensors`."""
        return self.load().encode_image_tensors(batch)

    def encode_images(self, images: Sequence[ImageLike]) -> np.ndarray:
        """See :meth:`rsrag.tools.encoders.base.Encoder.encode_images`."""
        return self.load().encode_images(images)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """See :meth:`rsrag.tools.encoders.base.Encoder.encode_texts`.

        A LiT heads file on CPU (the bundled encoder) encodes texts with its numpy text tower
        (:func:`rsrag.tools.encoders.lit_text.lit_text_encoder`): no torch is imported and no model is loaded
        for a text query; the vectors are the torch tower's to a cosine above 0.99999."""
        if self._text_heads is not None:
            from rsrag.tools.encoders.lit_text import lit_text_encoder

            return lit_text_encoder(self._text_heads, batch_size=self.batch_size).encode_texts(texts, self.batch_size)
        return self.load().encode_texts(texts)

    def encode_presence_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts as presence verdicts embed them: a LiT heads file's presence text head (when it has one, see
        :data:`rsrag.tools.encoders.lit.PRESENCE_PREFIX`; numpy text tower on any device), else :meth:`encode_texts`."""
        if self._heads is not None and (self._text_heads is not None or self._has_presence_head):
            from rsrag.tools.encoders.lit_text import lit_text_encoder

            text = lit_text_encoder(self._heads, batch_size=self.batch_size)
            return text.encode_texts(texts, self.batch_size, head="presence")
        return self.encode_texts(texts)

    @functools.cached_property
    def _has_presence_head(self) -> bool:
        """Whether the heads file holds a presence text head (its tensor names only; nothing is loaded)."""
        from safetensors import SafetensorError, safe_open

        from rsrag.tools.encoders.lit import PRESENCE_PREFIX

        assert self._heads is not None
        try:
            with safe_open(str(self._heads), framework="np") as f:
                return any(k.startswith(PRESENCE_PREFIX) for k in f.keys())
        except (OSError, SafetensorError):
            return False  # loading the encoder says what is wrong with the file

    def with_batch_size(self, batch_size: int) -> Any:
        """The loaded encoder with another batch size (see ``OpenClipEncoder.with_batch_size``)."""
        return self.load().with_batch_size(batch_size)  # type: ignore[attr-defined]  # every loaded encoder has it

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.load(), name)

    def __repr__(self) -> str:
        state = repr(self._encoder) if self._encoder is not None else "not loaded"
        return f"LazyEncoder(spec={self.spec!r}, id={self._id!r}, {state})"


_HUBS: dict[tuple[str, str], HubCorrection | None] = {}


def _heads_hub(path: Path) -> HubCorrection | None:
    """The hub correction a LiT heads file holds, read with numpy (cached per file content)."""
    from safetensors import SafetensorError, safe_open

    from rsrag.tools.encoders.hubness import BANK_TENSOR, HubCorrection
    from rsrag.tools.encoders.identity import read_safetensors_metadata

    key = (str(Path(path).resolve()), fingerprint(Path(path)))
    if key not in _HUBS:
        meta = read_safetensors_metadata(path)
        bank = None
        try:
            with safe_open(str(path), framework="np") as f:
                if BANK_TENSOR in f.keys():
                    bank = f.get_tensor(BANK_TENSOR)
        except (SafetensorError, OSError) as exc:
            raise CheckpointMismatchError(f"{path} is not a readable safetensors file: {exc}") from exc
        _HUBS[key] = HubCorrection.from_heads(bank, meta, str(path))
    return _HUBS[key]


def lazy_encoder(spec: str | None = None, *, device: str = "cpu", batch_size: int = DEFAULT_BATCH_SIZE,
                 precision: str = DEFAULT_PRECISION) -> LazyEncoder:
    """An encoder for ``spec`` that loads its model only when something needs it (see :class:`LazyEncoder`).

    Raises:
        UnknownEncoderError: the spec names no known model (checked now, without loading anything).
    """
    return LazyEncoder(spec, device=device, batch_size=batch_size, precision=precision)


def clear_encoder_cache() -> None:
    """Forget every loaded encoder (tests; freeing memory)."""
    with _LOCK:
        _CACHE.clear()
