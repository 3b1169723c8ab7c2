"""Hub-corrected window vectors: a window close to every caption stops crowding the top of unrelated queries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rsrag.tools.encoders.hubness import (
    QUERY_COORD, HubCorrection, as_queries, fit_hub_correction, hub_of, index_dim, index_keys, plain,
)
from rsrag.tools.errors import CheckpointMismatchError, EncoderError


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture()
def space() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bank of captions around 4 topics, windows on those topics, and one "hub" window near all of them."""
    rng = np.random.default_rng(0)
    topics = np.eye(16, dtype=np.float32)[:4]  # four orthogonal topics
    bank = _unit(np.repeat(topics, 50, axis=0) + 0.1 * rng.normal(size=(200, 16)))
    rest = _unit(np.hstack([np.zeros((20, 4)), rng.normal(size=(20, 12))]))  # each window's own detail
    windows = _unit(0.45 * np.repeat(topics, 5, axis=0) + np.sqrt(1 - 0.45 ** 2) * rest)  # cosine 0.45 with its topic
    hub = _unit(topics.sum(axis=0))  # cosine 0.5 with every topic: near each caption
    return bank, np.vstack([windows, hub[None]]), topics


def test_keys_and_queries_are_unit_and_keys_give_back_the_plain_vectors(space: tuple) -> None:
    bank, windows, topics = space
    hub = fit_hub_correction(windows, bank)
    keys, queries = hub.keys(windows), as_queries(topics, 17)
    assert keys.shape == (21, 17) and queries.shape == (4, 17)
    np.testing.assert_allclose(np.linalg.norm(keys, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(plain(keys, 16), windows, atol=1e-6)
    assert plain(windows, 16) is not None and np.array_equal(plain(windows, 16), windows)  # plain rows pass through
    np.testing.assert_array_equal(as_queries(topics, 16), topics)  # a plain index gets plain queries
    with pytest.raises(EncoderError, match="dimensions"):
        as_queries(topics, 20)


def test_a_key_query_score_is_the_hub_corrected_score(space: tuple) -> None:
    bank, windows, topics = space
    hub = fit_hub_correction(windows, bank)
    keys = hub.keys(windows)
    stored = keys @ as_queries(topics, 17).T
    a = np.sqrt(1.0 - keys[:, 16] ** 2)[:, None]  # the key's scale: within a few per cent of 1
    floored = np.maximum(hub.hub_terms(windows) - hub.centre, hub.floor)[:, None]
    corrected = a * (windows @ topics.T) - floored
    np.testing.assert_allclose(stored, np.sqrt(1 - QUERY_COORD ** 2) * corrected, atol=1e-5)

    # an image query is scored by the windows' plain cosine (the hub terms concern captions)
    img = as_queries(windows[:1], 17, correct=False) @ hub.keys(windows).T
    assert list(np.argsort(-img[0])) == list(np.argsort(-(windows[:1] @ windows.T)[0]))


def test_the_hub_window_no_longer_tops_every_query(space: tuple) -> None:
    bank, windows, topics = space
    hub = fit_hub_correction(windows, bank)
    cosine_top = np.argmax(windows @ topics.T, axis=0)
    corrected_top = np.argmax(hub.keys(windows) @ as_queries(topics, 17).T, axis=0)
    assert (cosine_top == 20).sum() >= 3  # by cosine the hub window is the best match of most topics
    assert (corrected_top == 20).sum() == 0  # corrected, each topic's own windows come first
    assert all(corrected_top[j] // 5 == j for j in range(4))


def test_a_window_far_from_every_caption_is_raised_no_more_than_the_floor(space: tuple) -> None:
    bank, windows, topics = space
    hub = fit_hub_correction(windows, bank)
    assert hub.floor is not None and hub.floor < 0
    blank = _unit(np.eye(16, dtype=np.float32)[15:16] + 0.01)  # a direction no caption comes near
    assert hub.hub_terms(blank)[0] - hub.centre < hub.floor  # unfloored, it would be raised the most
    keys = hub.keys(np.vstack([windows, blank]))
    assert keys[-1, 16] == pytest.approx(keys[:, 16].max())  # raised exactly as much as the floor allows
    lowest = windows[np.argmin(hub.hub_terms(windows))]
    assert keys[-1, 16] == pytest.approx(hub.keys(lowest[None])[0, 16])  # as the least hub-like window


def test_encoders_without_a_bank_store_plain_vectors(space: tuple) -> None:
    _, windows, _ = space

    class Plain:
        dim = 16

    class WithHub:
        dim = 16
        hub = fit_hub_correction(windows, windows)

    assert hub_of(Plain()) is None and index_dim(Plain()) == 16
    np.testing.assert_array_equal(index_keys(Plain(), windows), windows)
    assert index_dim(WithHub()) == 17 and index_keys(WithHub(), windows).shape == (21, 17)


def test_a_heads_file_carries_its_bank_and_a_bad_one_names_the_fix(tmp_path: Path, space: tuple) -> None:
    from rsrag.tools.encoders import lazy_encoder
    from rsrag.tools.encoders.lit import LitConfig, build_lit_model, save_heads

    bank, windows, _ = space
    cfg = LitConfig(embed_dim=16)
    hub = fit_hub_correction(windows, bank, beta=8.0)
    path = save_heads(tmp_path / "heads.safetensors", build_lit_model(cfg), cfg, hub=hub)
    enc = lazy_encoder(f"rsrag-lit:{path}")
    got = enc.hub
    assert not enc.loaded  # read from the file, no model built
    assert isinstance(got, HubCorrection) and got.beta == 8.0 and abs(got.centre - hub.centre) < 1e-9
    np.testing.assert_allclose(got.bank, bank, atol=2e-3)  # stored as float16
    assert index_dim(enc) == 17
    assert enc.load().hub is not None and index_dim(enc.load()) == 17  # the loaded encoder has the same bank
    with pytest.raises(CheckpointMismatchError, match="rsrag encoder train"):
        HubCorrection.from_heads(bank, {"hub": '{"beta": 10, "centre": 0, "weight": 1, "query_coord": 0.3, "bank": 200}'}, "x")
    with pytest.raises(CheckpointMismatchError, match="rsrag encoder train"):
        HubCorrection.from_heads(bank, {"hub": '{"beta": 10}'}, "x")
    assert HubCorrection.from_heads(None, {}, "x") is None and QUERY_COORD == 0.5


def test_evaluation_scores_text_to_image_as_the_index_ranks(space: tuple) -> None:
    from rsrag.tools.captioned import Chip
    from rsrag.tools.training.evaluate import evaluate_embeddings

    bank, windows, topics = space
    hub = fit_hub_correction(windows, bank)
    chips = [Chip(image=Path(f"{i}.png"), captions=("c",), label=None) for i in range(len(windows))]
    texts = _unit(windows + 0.05)  # one caption per image, near it
    plain_rep = evaluate_embeddings(windows, chips, texts, None, "e")
    hub_rep = evaluate_embeddings(windows, chips, texts, None, "e", hub=hub)
    assert {k: v for k, v in hub_rep.metrics.items() if k.startswith("i2t")} == \
        {k: v for k, v in plain_rep.metrics.items() if k.startswith("i2t")}
    keys = [k for k in hub_rep.metrics if k.startswith("t2i")]
    assert len(keys) == 3
    assert hub_rep.as_dict()["t2i_scores"] == "hub-corrected" and plain_rep.as_dict()["t2i_scores"] == "cosine"
