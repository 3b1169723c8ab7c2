"""What the rule policy understands of a question: the targets (object words only), the kind, references."""

from __future__ import annotations

import pytest
from rsrag.agent.models.turns import read_turn
from rsrag.tools.errors import QueryError
from rsrag.tools.fastpath import extract_key_phrases


@pytest.mark.parametrize(("question", "targets"), [
    ("Where are the storage tanks?", ["storage tanks"]),
    ("Are there any other storage tanks elsewhere?", ["storage tanks"]),  # not "other storage tanks elsewhere"
    ("is there an airport, and how big is it?", ["airport"]),             # not "big"
    ("where are the storage tanks and the stadiums?", ["storage tanks", "stadiums"]),
    ("Can you see any ships or planes?", ["ships", "planes"]),
    ("How many airplanes are parked next to the terminal building?", ["airplanes"]),  # the context is not a target
    ("what about the baseball fields?", ["baseball fields"]),
])
def test_targets_keep_the_object_and_drop_request_words(question: str, targets: list[str]) -> None:
    assert read_turn(question).targets == targets


def test_kinds() -> None:
    assert read_turn("Is there a golf course?").kind == "presence"
    assert read_turn("are there any oil tanks?").kind == "presence"
    assert read_turn("How many storage tanks are there?").kind == "count"
    assert read_turn("where is the airport?").kind == "where"
    assert read_turn("is there an airport, and how big is it?").size


@pytest.mark.parametrize(("question", "expected"), [
    ("zoom closer on the second one", {"ordinal": 2, "closer": True}),
    ("show me the 3rd site", {"ordinal": 3}),
    ("and the last one?", {"ordinal": -1}),
    ("that one", {"this": True}),
    ("zoom closer", {"closer": True}),
    ("show me more", {"more": True}),
    ("others?", {"more": True}),
    ("the one in the north-west", {"direction": "north-west"}),
    ("the one at the bottom right", {"direction": "bottom-right"}),
    ("how big is it?", {"size": True}),
    ("how far apart are they?", {"distance": True}),
    ("what is the distance between them?", {"distance": True}),
    ("are they near each other?", {"distance": True, "more": False}),
    ("how far is it from the first one?", {"distance": True, "ordinal": 1}),
    ("which one is the biggest?", {"extreme": "largest"}),
    ("list them from north to south", {"order": "north", "direction": None}),
    ("sort them by size", {"order": "largest"}),
    ("order them from biggest to smallest", {"order": "largest"}),
    ("smallest first", {"order": "smallest"}),
    ("rank them by confidence", {"order": "strongest"}),
    ("show me the top 2", {"top": 2, "direction": None}),
    ("the 3 strongest ones", {"top": 3, "ordinal": None}),
])
def test_references_to_earlier_evidence(question: str, expected: dict[str, object]) -> None:
    turn = read_turn(question)
    assert turn.targets == [] and turn.refers_back
    assert {k: getattr(turn, k) for k in expected} == expected


def test_other_objects_of_a_clause_are_context_not_targets() -> None:
    turn = read_turn("are there ponds with boats on them?")
    assert turn.targets == ["ponds"] and turn.context == ["boats"] and turn.kind == "presence"
    assert turn.relation is None  # "with" is no place relation: retrieval cannot check it
    assert read_turn("where are the storage tanks and the airports?").context == []


@pytest.mark.parametrize(("question", "target", "kind", "anchor", "extra"), [
    ("where is the pond nearest to the bridge?", "pond", "nearest", "bridge", {}),
    ("the nearest pond to the bridge", "pond", "nearest", "bridge", {}),
    ("which pond is closest to the bridges?", "pond", "nearest", "bridges", {}),
    ("which storage tank is furthest from the port?", "storage tank", "farthest", "port", {}),
    ("are there ponds near the river?", "ponds", "near", "river", {}),
    ("how many ponds are next to the river?", "ponds", "near", "river", {}),
    ("airplanes parked beside the terminal building", "airplanes", "near", "terminal building", {}),
    ("storage tanks within 500 m of the port", "storage tanks", "within", "port", {"limit": 500.0, "unit": "m"}),
    ("ponds within 2 km of the bridges", "ponds", "within", "bridges", {"limit": 2000.0, "unit": "m"}),
    ("ponds within 300 px of the bridge", "ponds", "within", "bridge", {"limit": 300.0, "unit": "px"}),
    ("where are the ponds north of the river?", "ponds", "side", "river", {"side": "north"}),
    ("the churches south-west of the stadium", "churches", "side", "stadium", {"side": "south-west"}),
    ("how far is the pond from the bridge?", "pond", "distance", "bridge", {}),
    ("how close is the pond to the bridge?", "pond", "distance", "bridge", {}),
    ("what is the distance between the pond and the bridge?", "pond", "distance", "bridge", {}),
    ("find storage tanks less than 2 km from the port", "storage tanks", "within", "port", {"limit": 2000.0}),
    ("ponds at most 300 m away from the river", "ponds", "within", "river", {"limit": 300.0}),
])
def test_a_relation_to_another_object_names_the_target_and_the_anchor(question: str, target: str, kind: str,
                                                                       anchor: str, extra: dict) -> None:  # type: ignore[type-arg]
    turn = read_turn(question)
    assert turn.targets == [target] and turn.context == [] and turn.relation is not None
    assert (turn.relation.kind, turn.relation.anchor) == (kind, anchor)
    assert all(getattr(turn.relation, k) == v for k, v in extra.items())
    assert turn.direction is None and not turn.refers_back  # "north of the river" is not "the one in the north"


def test_what_is_no_relation_between_two_objects() -> None:
    assert read_turn("are they near each other?").relation is None and read_turn("are they near each other?").distance
    assert read_turn("the nearest one").relation is None
    assert read_turn("the ponds in the north of the scene").relation is None
    assert read_turn("the ponds in the north of the scene").direction == "north"
    assert read_turn("is the pond near?").relation is None
    assert read_turn("how many ponds are near the river?").kind == "count"
    assert read_turn("are there ponds near the river?").kind == "presence"
    assert read_turn("within 500 m of the port, where are the tanks?").relation is None  # no object before it


def test_a_compared_count_asks_about_the_object() -> None:
    turn = read_turn("are there more than 3 ponds?")
    assert turn.targets == ["ponds"] and turn.kind == "count" and turn.compare == ("more", 3) and not turn.more
    assert read_turn("at least 2 bridges?").compare == ("at least", 2)
    assert read_turn("give me their coordinates").refers_back


def test_places_given_by_coordinates_are_places_not_objects() -> None:
    assert read_turn("zoom on 1000 500 1300 800").place == {"bbox": (1000.0, 500.0, 1300.0, 800.0)}
    assert read_turn("what is at pixel 1200, 600?").place == {"point": (1200.0, 600.0)}
    assert read_turn("zoom to lon 16.656 lat 46.857").place == {"lonlat": (16.656, 46.857)}
    assert read_turn("go to latitude 46.8, longitude 16.6").place == {"lonlat": (16.6, 46.8)}
    assert read_turn("zoom on the 2nd and 3rd").place is None  # ordinals are not coordinates
    assert read_turn("are there more than 3 ponds?").place is None  # no verb asking to look
    out = read_turn("zoom out")
    assert out.wider and out.targets == [] and out.refers_back
    assert read_turn("show me the whole scene").overview


def test_chatty_and_informal_words_are_not_objects() -> None:
    assert read_turn("list all the ponds").targets == ["ponds"]
    assert read_turn("identify the storage tanks").targets == ["storage tanks"]
    strongest = read_turn("Which is the strongest?")
    assert strongest.targets == [] and strongest.ordinal == 1 and read_turn("the weakest one").ordinal == -1
    area = read_turn("what's the area of the first one?")
    assert area.targets == [] and area.size and area.ordinal == 1
    assert read_turn("I'm looking for water bodies").targets == ["water bodies"]
    assert read_turn("where r the ponds").targets == ["ponds"]
    each = read_turn("show me each of them")
    assert each.each and each.targets == [] and each.refers_back


def test_look_harder_asks_again_about_the_last_target() -> None:
    for q in ("no? look harder", "search the whole image"):
        turn = read_turn(q)
        assert turn.thorough and turn.targets == [] and not turn.refers_back, q


def test_this_image_is_the_scene_not_an_earlier_place() -> None:
    assert not read_turn("what is in this image?").this and not read_turn("what is in this image?").refers_back
    assert read_turn("zoom on this").this


def test_a_target_with_a_reference_is_a_new_search_that_picks() -> None:
    turn = read_turn("Where is the church in the top left?")
    assert turn.targets == ["church"] and turn.direction == "top-left" and not turn.refers_back


def test_key_phrases_drop_request_words_and_empty_questions_fail() -> None:
    assert extract_key_phrases("Are there any other storage tanks elsewhere?") == ["storage tanks"]
    assert extract_key_phrases("zoom closer on the big harbour") == ["harbour"]
    with pytest.raises(QueryError, match="empty"):
        read_turn("  ?  ")


def test_an_order_or_a_top_n_with_a_target_searches_it() -> None:
    side = read_turn("list the ponds from west to east")
    assert side.targets == ["ponds"] and side.order == "west" and side.direction is None and not side.refers_back
    top = read_turn("show me the top three ponds")
    assert top.targets == ["ponds"] and top.top == 3 and top.direction is None
    by = read_turn("sort the storage tanks by confidence")
    assert by.targets == ["storage tanks"] and by.order == "strongest"
    biggest = read_turn("where are the biggest ponds?")
    assert biggest.targets == ["ponds"] and biggest.extreme == "largest" and biggest.order is None
    assert read_turn("what is at the top of the image?").direction == "top"  # "top" alone is still a side


def test_a_part_of_the_scene_keeps_sites_where_a_singular_target_picks_one() -> None:
    assert read_turn("how many ponds are in the north?").part == "north"
    assert read_turn("are there any ponds in the south-west?").part == "south-west"
    assert read_turn("where are the ponds in the east?").part == "east"
    assert read_turn("is there a church in the top left?").part == "top-left"  # presence: any site there
    single = read_turn("where is the pond in the north-west?")
    assert single.part is None and single.direction == "north-west"  # the one furthest that way
    most = read_turn("the northernmost pond")
    assert most.targets == ["pond"] and most.direction == "north" and most.part is None


def test_a_relation_of_the_last_target() -> None:
    turn = read_turn("which of them is nearest to the bridge?")
    assert turn.targets == [] and turn.relation is not None and turn.relation.anchor == "bridge"
    assert read_turn("how many of them are north of the river?").relation is not None
    assert read_turn("what is nearest?").relation is None
