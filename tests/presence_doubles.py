"""Presence calibrations for tests that need a calibrated model with a known verdict."""

from __future__ import annotations

import numpy as np

from rsrag.tools.calibration import (
    FEATURES,
    PresenceCalibration,
    Reference,
    clear_presence_cache,
    home_file,
    save_calibration,
)
from rsrag.tools.encoders.base import Encoder
from rsrag.tools.fastpath import PROMPT_VERSION


def save_undecided_calibration(encoder: Encoder) -> PresenceCalibration:
    """Save, for ``encoder``, into the user's calibration file (the test's ``RSRAG_HOME``) a calibration under
    which every search is ``uncertain``: presence 0.5 in every window, found from 0.9, not found below 0.1.
    A calibrated model that cannot decide (unlike an uncalibrated one, which says so)."""
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(64, encoder.dim))
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    n = len(FEATURES)
    cal = PresenceCalibration(
        encoder=encoder.id, prompt_version=PROMPT_VERSION, vocabulary=("roofs", "grass", "water", "trees", "roads"),
        same_concept=0.6, temperature=0.03, features=FEATURES, mean=(0.0,) * n, scale=(1.0,) * n, coef=(0.0,) * n,
        intercept=0.0, found_at=0.9, site_at=0.9, not_found_below=0.1, reference=Reference.from_vectors(ref, rank=8),
        data={"classes": 2}, metrics={}, created=0.0)
    clear_presence_cache()
    save_calibration(cal, home_file())
    return cal
