"""A thing asked for by another name is searched as the labelled class it names (bundled encoder and its
shipped calibration): "oil tanks" are storage tanks; a class's own name, or a thing no class names, is not
expanded."""

from __future__ import annotations

import pytest

from rsrag.tools.calibration import PresenceModel, load_presence, names_class
from rsrag.tools.retrieval import with_related_concepts


@pytest.fixture(scope="module")
def model() -> PresenceModel:
    from rsrag.tools.encoders import load_encoder

    presence = load_presence(load_encoder(None))
    assert presence.calibrated
    return presence


def test_synonyms_name_their_class(model: PresenceModel) -> None:
    assert model.related_concept("oil tanks", 0.7) == "storage tanks"
    assert model.related_concept("airfields with runways", 0.7) == "airport"
    assert with_related_concepts(model, ["oil tanks", "oil tanks"], 0.7) == ["oil tanks", "storage tanks"]


def test_own_names_unknown_things_and_a_strict_threshold_are_left_alone(model: PresenceModel) -> None:
    assert model.related_concept("storage tanks", 0.7) is None  # already the class's name
    assert model.related_concept("resorts", 0.7) is None and model.related_concept("parking lots", 0.7) is None
    assert model.related_concept("golf course", 0.7) is None  # no labelled class is that close
    assert model.related_concept("oil tanks", 1.1) is None  # above 1: expansion off
    assert with_related_concepts(model, ["golf course"], 0.7) == ["golf course"]
    assert PresenceModel(None, None, "x").related_concept("oil tanks", 0.7) is None


def test_a_phrase_names_a_class_word_for_word_with_plurals_folded() -> None:
    assert names_class("dense residential areas", "dense residential") and names_class("churches", "church")
    assert names_class("bridges", "bridge") and names_class("factories", "factory")
    assert not names_class("oil tanks", "storage tanks") and not names_class("train stations", "railway station")


def test_a_phrase_plainly_nearer_one_class_is_expanded_but_an_ambiguous_one_is_not(model: PresenceModel) -> None:
    # below the similarity floor, but far nearer one class than any other
    assert model.related_concept("small lakes", 0.7) == "pond"
    assert model.related_concept("harbours with docked ships", 0.7) == "port"
    assert model.related_concept("small lakes", 0.7, distinct=1.0) is None  # the rule off: below the floor
    # as near dense as medium residential: searching either would cite the other's blocks
    assert model.related_concept("tightly packed houses", 0.7) is None
