"""Presence calibration: fitted on labelled chips, an absent thing is not found, a present one is; a missing
or stale calibration says so ("uncertain" + the fit command) instead of guessing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rsrag.tools.calibration import (
    FIT_COMMAND,
    FitConfig,
    PresenceModel,
    Reference,
    auroc,
    clear_presence_cache,
    compute_features,
    fit_calibration,
    fit_logistic,
    load_presence,
    read_calibrations,
    save_calibration,
)
from rsrag.tools.errors import ConfigError, QueryError
from rsrag.tools.hit import Hit
from rsrag.tools.region import PixelBox, Region
from rsrag.tools.sites import group_sites
from tests.captioned import make_folder
from tests.index_doubles import TinyEncoder

COLOURS = {"Red": (220, 30, 30), "Green": (30, 200, 40), "Blue": (30, 40, 220), "Yellow": (230, 220, 20),
           "White": (250, 250, 250), "Black": (5, 5, 5)}
SMALL = FitConfig(per_class=8, n_mosaics=40, val_per_class=2, val_mosaics=20, scenes=100, scene_windows=20)


class _Named(TinyEncoder):
    def __init__(self, ident: str) -> None:
        super().__init__()
        self.id = ident


def _solid(enc: TinyEncoder, colour: tuple[int, int, int]) -> np.ndarray:
    return enc.encode_images([np.full((40, 40, 3), colour, np.uint8)])[0]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    folder = make_folder(tmp_path_factory.mktemp("colours"), COLOURS, n=20)
    enc = TinyEncoder()
    return enc, fit_calibration(enc, folder, config=SMALL), folder


def test_present_colour_is_found_and_absent_colour_is_not(fitted) -> None:  # type: ignore[no-untyped-def]
    enc, cal, _ = fitted
    model = PresenceModel(cal, enc)
    red, blue, green = (_solid(enc, COLOURS[c]) for c in ("Red", "Blue", "Green"))
    assert model.presence_probability("red", red) > cal.found_at  # type: ignore[operator]
    assert model.presence_probability("red", blue) < cal.not_found_below  # type: ignore[operator]
    # a "scene" of blue and green windows: red is not found, blue is
    scene = np.stack([blue, green, blue, green])
    assert model.finding_for(model.presence("red", scene)) == "not_found"  # type: ignore[arg-type]
    assert model.finding_for(model.presence("blue", scene)) == "found"  # type: ignore[arg-type]
    assert model.finding_for([]) == "not_found"
    assert cal.metrics["val_window_auroc_single_chips"] > 0.8
    assert 0.0 < cal.not_found_below <= cal.found_at < 1.0


def test_uncertain_band_and_unknown_probabilities(fitted) -> None:  # type: ignore[no-untyped-def]
    enc, cal, _ = fitted
    model = PresenceModel(cal, enc)
    mid = (cal.found_at + cal.not_found_below) / 2
    if cal.found_at > cal.not_found_below:
        assert model.finding_for([mid]) == "uncertain"
    assert model.finding_for([cal.found_at]) == "found"
    assert model.finding_for([None, 0.0]) == "uncertain"
    assert model.finding_for([None, cal.found_at]) == "found"


def test_sites_get_presence_and_are_reranked(fitted) -> None:  # type: ignore[no-untyped-def]
    enc, cal, _ = fitted
    model = PresenceModel(cal, enc)
    red, blue = _solid(enc, COLOURS["Red"]), _solid(enc, COLOURS["Blue"])

    def hit(x: int, patch: int, conf: float) -> Hit:
        return Hit(region=Region(scene="s", box=PixelBox(x0=x, y0=0, x1=x + 10, y1=10)), score=0.1,
                   confidence=conf, path="fast", query="red", patch=patch)

    vectors = {0: blue, 1: red, 2: blue}
    # the blue window has the higher within-scene confidence; calibration ranks the red site first
    sites = group_sites([hit(0, 0, 0.9), hit(100, 1, 0.6), hit(105, 2, 0.5)])
    assert [s.best.patch for s in sites] == [0, 1]
    ranked = model.calibrate_sites(sites, "red", lambda h: vectors.get(h.patch))  # type: ignore[union-attr,arg-type]
    assert ranked[0].best.patch == 1 and model.site_found(ranked[0]) and not model.site_found(ranked[1])
    assert ranked[0].presence == pytest.approx(model.presence_probability("red", red))


def test_saved_calibration_is_keyed_by_encoder_id_and_stale_ones_are_reported(fitted, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    enc, cal, _ = fitted
    clear_presence_cache()
    user = tmp_path / "home" / "calibration" / "presence.json"
    bundled = tmp_path / "bundled.json"
    save_calibration(cal.model_copy(update={"encoder": "fam#weights-a"}), bundled)
    assert list(read_calibrations(bundled)) == ["fam#weights-a"]
    size = bundled.stat().st_size
    assert size < 200_000  # a small JSON
    # the right id: calibrated, from the bundled file
    ok = load_presence(_Named("fam#weights-a"), home=user, bundled=bundled)
    assert ok.calibrated and ok.found_at == cal.found_at
    # new weights of the same family: uncalibrated, stale, and the message names the fit command
    stale = load_presence(_Named("fam#weights-b"), home=user, bundled=bundled)
    assert not stale.calibrated and stale.finding_for([0.99]) == "uncertain"
    assert "stale" in stale.message and FIT_COMMAND in stale.message and "fam#weights-a" in stale.message  # type: ignore[operator]
    assert stale.presence("red", np.zeros((1, 16))) is None
    # an unrelated encoder: none fitted
    none = load_presence(_Named("other"), home=user, bundled=bundled)
    assert "none has been fitted" in none.message  # type: ignore[operator]
    # the user's own file wins over the bundled one
    save_calibration(cal.model_copy(update={"encoder": "fam#weights-a", "found_at": 0.77}), user)
    clear_presence_cache()
    assert load_presence(_Named("fam#weights-a"), home=user, bundled=bundled).found_at == 0.77


def test_first_use_fits_and_caches_under_the_home(fitted, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, _, folder = fitted
    clear_presence_cache()
    user = tmp_path / "presence.json"
    enc = _Named("first-use#x")
    model = load_presence(enc, home=user, bundled=tmp_path / "none.json", fit_data=folder, fit_config=SMALL)
    assert model.calibrated and list(read_calibrations(user)) == ["first-use#x"]


def test_corrupt_file_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "presence.json"
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ConfigError, match="not a presence calibration file"):
        read_calibrations(bad)


def test_dimension_mismatch_and_multiple_vectors_are_query_errors(fitted) -> None:  # type: ignore[no-untyped-def]
    enc, cal, _ = fitted
    model = PresenceModel(cal, enc)
    with pytest.raises(QueryError, match="different encoders"):
        model.presence("red", np.zeros((2, 8)))
    with pytest.raises(QueryError, match="one phrase"):
        model.presence(np.eye(16)[:2], np.zeros((2, 16)))


def test_reference_moments_match_the_empirical_distribution() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 12)) @ rng.standard_normal((12, 12))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ref = Reference.from_vectors(x, rank=12)
    q = rng.standard_normal((3, 12))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    mean, sd = ref.moments(q)
    s = q @ x.T
    assert np.allclose(mean, s.mean(axis=1), atol=1e-6)
    assert np.allclose(sd, s.std(axis=1, ddof=1), rtol=1e-4)
    low = Reference.from_vectors(x, rank=4)  # low rank + residual: close, not exact
    assert np.allclose(low.moments(q)[1], sd, rtol=0.35)


def test_features_exclude_the_phrases_own_concept() -> None:
    rng = np.random.default_rng(1)
    windows = rng.standard_normal((200, 8))
    windows /= np.linalg.norm(windows, axis=1, keepdims=True)
    ref = Reference.from_vectors(windows, rank=8)
    q = windows[:1] + 0.0
    synonym = q + 0.05 * rng.standard_normal((1, 8))
    synonym /= np.linalg.norm(synonym)
    other = rng.standard_normal((1, 8))
    other /= np.linalg.norm(other)
    vocab = np.vstack([synonym, other])
    f = compute_features(q, vocab, windows[:1], ref, same_concept=0.6, temperature=0.03)[0, 0]
    # the synonym does not compete: the margin is against `other` only
    assert f[1] == pytest.approx(float((q @ windows[0])[0] - (other @ windows[0])[0]))


def test_logistic_fit_and_auroc() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((400, 2))
    y = (x[:, 0] + 0.2 * rng.standard_normal(400) > 0).astype(float)
    coef, b = fit_logistic(x, y)
    assert coef[0] > 3 * abs(coef[1]) and abs(b) < 1.0
    assert auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert auroc(np.array([1.0, 1.0]), np.array([0, 1])) == pytest.approx(0.5)
    assert np.isnan(auroc(np.array([1.0]), np.array([1])))


def test_a_weaker_second_site_is_found_only_once_the_target_is(fitted) -> None:  # type: ignore[no-untyped-def]
    enc, cal, _ = fitted
    cal = cal.model_copy(update={"found_at": 0.8, "site_at": 0.5, "not_found_below": 0.3})
    model = PresenceModel(cal, enc)

    def site(x: int, presence: float):  # type: ignore[no-untyped-def]  # seen by three windows: not lone
        hits = [Hit(region=Region(scene="s", box=PixelBox(x0=x + i, y0=0, x1=x + 10 + i, y1=10)), score=0.1,
                    confidence=0.6, path="fast", query="red") for i in range(3)]
        return group_sites(hits)[0].with_presence(presence)

    strong, weak, faint = site(0, 0.9), site(100, 0.6), site(200, 0.2)
    assert [s.presence for s in model.found_sites([weak, strong, faint])] == [0.9, 0.6]
    assert model.found_sites([weak, faint]) == []  # no site strong enough: nothing is found
    assert model.finding_for([0.6, 0.2]) == "uncertain" and model.finding_for([0.2]) == "not_found"
    assert model.window_found(np.array([0.9, 0.6, 0.2])).tolist() == [True, True, False]
    assert model.window_found(np.array([0.6, 0.2])).tolist() == [False, False]
    assert PresenceModel(None, enc, "x").found_sites([strong]) == []


def test_a_lone_window_is_a_site_only_at_the_bar_for_a_window_seen_alone(fitted) -> None:  # type: ignore[no-untyped-def]
    enc, cal, _ = fitted
    cal = cal.model_copy(update={"found_at": 0.8, "site_at": 0.5, "not_found_below": 0.3, "refined_found_at": 0.9})
    model = PresenceModel(cal, enc)

    def site(x: int, presence: float, windows: int):  # type: ignore[no-untyped-def]
        hits = [Hit(region=Region(scene="s", box=PixelBox(x0=x + 4 * i, y0=0, x1=x + 10 + 4 * i, y1=10)), score=0.1,
                    confidence=0.6, path="fast", query="red") for i in range(windows)]
        return group_sites(hits)[0].with_presence(presence)

    seen_by_many, lone_strong, lone_weak = site(0, 0.85, 3), site(100, 0.95, 1), site(200, 0.7, 2)
    assert model.lone_found_at == 0.9
    assert [s.presence for s in model.found_sites([seen_by_many, lone_strong, lone_weak])] == [0.95, 0.85]
    # a target whose only strong evidence is two windows is not found, and a lone window at found_at does not do
    assert model.found_sites([lone_weak, site(300, 0.85, 1)]) == []
    assert model.found_sites([site(300, 0.6, 3), site(400, 0.92, 2)]) != []
    without_refinement = PresenceModel(cal.model_copy(update={"refined_found_at": None}), enc)
    assert without_refinement.lone_found_at == 0.8 and len(without_refinement.found_sites([site(300, 0.85, 1)])) == 1
