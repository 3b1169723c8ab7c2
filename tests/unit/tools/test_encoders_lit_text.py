"""The numpy text tower of the bundled encoder gives the torch tower's vectors, and a text query through the
lazy encoder imports no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from rsrag.tools.encoders.identity import DEFAULT_HEADS
from rsrag.tools.encoders.lit_text import LitTextEncoder, TextTokenizer, lit_text_encoder
from rsrag.tools.encoders.towers import text_tower_dir
from rsrag.tools.errors import CheckpointMismatchError, WeightsUnavailableError

PHRASES = [
    "storage tanks", "airport", "clouds", "where are the clouds?", "  two   spaces ", "a", "",
    "a dense residential area with many houses, roads and a few green trees along the river",
    "baseball field next to a parking lot with many cars", "ships in a harbour", "a red kayak on a pond", "a runway",
    "many white storage tanks of an oil refinery " * 8,  # longer than the 64-token context: truncated
]


@pytest.fixture(scope="module")
def torch_vectors() -> np.ndarray:
    from rsrag.tools.encoders import load_encoder

    return load_encoder(None).encode_texts(PHRASES)


def test_same_vectors_as_the_torch_text_tower(torch_vectors: np.ndarray) -> None:
    ours = LitTextEncoder(DEFAULT_HEADS).encode_texts(PHRASES)
    assert ours.shape == torch_vectors.shape == (len(PHRASES), 256) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cosine = (ours * torch_vectors).sum(axis=1)
    assert cosine.min() >= 0.9999, dict(zip(PHRASES, cosine.round(6)))


def test_batches_give_the_vectors_of_one_text_at_a_time() -> None:
    """Padding to the longest text of a batch changes nothing (padding is masked)."""
    enc = lit_text_encoder(DEFAULT_HEADS)
    together = enc.encode_texts(PHRASES, batch_size=5, use_table=False)  # computed, not looked up
    alone = np.concatenate([enc.encode_texts([p], use_table=False) for p in PHRASES])
    np.testing.assert_allclose(together, alone, atol=2e-6)
    assert enc.encode_texts([]).shape == (0, 256)


def test_texts_embedded_before_are_looked_up() -> None:
    """A question's phrases are embedded by several steps; the second time they come from the memo, equal to
    what was computed."""
    enc = LitTextEncoder(DEFAULT_HEADS)
    first = enc.encode_texts(["ships in a harbour", "a red kayak on a pond"])
    assert set(enc._memo) == {("search", "ships in a harbour"), ("search", "a red kayak on a pond")}
    again = enc.encode_texts(["a red kayak on a pond", "a runway", "ships in a harbour"])
    assert np.array_equal(again[[0, 2]], first[[1, 0]])
    np.testing.assert_allclose(again, enc.encode_texts(["a red kayak on a pond", "a runway", "ships in a harbour"], use_table=False),
                               atol=2e-6)


def test_tokenizer_matches_the_torch_tokenizer() -> None:
    from rsrag.tools.encoders.lit import LitTokenizer

    ids = TextTokenizer(text_tower_dir(), 64).ids(PHRASES)
    assert ids.shape[1] == 64 and ids.dtype == np.int64  # the long phrase is truncated to the context
    assert np.array_equal(LitTokenizer(text_tower_dir(), 64)(PHRASES).numpy(), ids)


def test_bad_heads_files_fail_with_the_file_named(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="not found"):
        LitTextEncoder(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(CheckpointMismatchError, match="junk.safetensors"):
        LitTextEncoder(junk)


def test_a_text_query_imports_no_torch(torch_vectors: np.ndarray) -> None:
    """``lazy_encoder(None).encode_texts`` (what a search does) runs without torch, and gives the torch
    tower's vectors."""
    code = textwrap.dedent(f"""
        import json, sys
        from rsrag.tools.encoders import lazy_encoder
        enc = lazy_encoder(None)
        vecs = enc.encode_texts({PHRASES[:4]!r})
        heavy = [m for m in ("torch", "open_clip", "transformers", "timm", "torchvision") if m in sys.modules]
        print(json.dumps({{"heavy": heavy, "loaded": enc.loaded, "vecs": vecs.tolist()}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [] and report["loaded"] is False
    cosine = (np.asarray(report["vecs"]) * torch_vectors[:4]).sum(axis=1)
    assert cosine.min() >= 0.9999


def test_shipped_text_table_is_current_and_gives_the_live_vectors() -> None:
    """The bundled heads' text table covers every text a question's presence model embeds, for these heads;
    its vectors are what the text tower computes now (rebuild: python -m rsrag.tools.encoders.text_table)."""
    from rsrag.tools.encoders.text_table import bundled_texts, read_text_table

    table = read_text_table(DEFAULT_HEADS)
    texts = bundled_texts()
    assert texts and not set(texts) - set(table), "stale text table: run python -m rsrag.tools.encoders.text_table"
    sample = texts[::29]
    live = LitTextEncoder(DEFAULT_HEADS).encode_texts(sample, use_table=False, head="presence")  # what presence embeds
    np.testing.assert_allclose(np.stack([table[t] for t in sample]), live, atol=1e-5)


def test_text_table_for_other_heads_is_ignored(tmp_path: Path) -> None:
    import shutil

    from rsrag.tools.encoders.text_table import read_text_table, table_path, write_text_table

    heads = tmp_path / "heads.safetensors"
    shutil.copy(DEFAULT_HEADS, heads)
    path = write_text_table(heads, ["airport", "clouds", "airport"])
    assert path == table_path(heads) and set(read_text_table(heads)) == {"airport", "clouds"}
    enc = LitTextEncoder(heads)
    mixed = enc.encode_texts(["clouds", "ships in a harbour"])
    np.testing.assert_allclose(mixed, enc.encode_texts(["clouds", "ships in a harbour"], use_table=False), atol=1e-5)
    with heads.open("ab") as fh:  # other weights (the fingerprint changes): the table no longer applies
        fh.write(b" ")
    assert read_text_table(heads) == {}
