"""The rule policy's decisions, from typed tool results directly (no graph, no encoder, no text parsing):
searches per target, every site in the answer, an honest "not found", counts of sites, follow-ups."""

from __future__ import annotations

import uuid
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from rsrag.agent.evidence import Evidence, evidence_id
from rsrag.agent.models.policy import RETRIEVAL_ONLY, RulePolicy
from rsrag.agent.results import ToolResult, render
from rsrag.tools.region import PixelBox, Region

SCENE = (3000, 3000)


def region_ev(x: int, y: int, confidence: float, path: str = "fast", query: str = "storage tanks", side: int = 150,
              presence: float | None = None, windows: int = 1) -> Evidence:
    """A place: one window, or a site of ``windows`` overlapping windows (its union box, best window first)."""
    box = PixelBox.from_xywh(x, y, side + 75 * (windows - 1), side)
    members = tuple(PixelBox.from_xywh(x + 75 * i, y, side, side) for i in range(windows)) if windows > 1 else ()
    return Evidence(id=evidence_id("scene", box.as_tuple(), path, query), kind="region", path=path,  # type: ignore[arg-type]
                    region=Region(scene="scene", box=box), members=members, score=0.3, confidence=confidence,
                    presence=presence, query=query)


def view_of(ev: Evidence, box: PixelBox | None = None) -> Evidence:
    assert ev.region is not None
    region = ev.region.model_copy(update={"box": box or ev.region.box})
    return Evidence(id=evidence_id("scene", region.box.as_tuple(), "zoom"), kind="region", path="zoom", region=region,
                    crop="/tmp/crop.png")


def zoom_result(view: Evidence, source: str | None = None) -> ToolResult:
    return ToolResult(tool="zoom", views=[view], crop=view.crop, extras={"out_size": [100, 100], "source": source})


def search_result(target: str, sites: list[Evidence] = (), candidates: list[Evidence] = (),  # type: ignore[assignment]
                  finding: str | None = "found", threshold: float = 0.5) -> ToolResult:
    return ToolResult(tool="search_patches", sites=list(sites), candidates=list(candidates), threshold=threshold,
                      path="fast", finding=finding, phrases=[target], shown=5,  # type: ignore[arg-type]
                      extras={"scene_size": list(SCENE)})


Step = tuple[str, dict[str, Any], ToolResult]


def conversation(question: str, *steps: Step, answer: dict[str, Any] | None = None) -> list[BaseMessage]:
    """A question, its tool calls with their typed results (the text is rendered, never read), and the
    answer call the policy made (for earlier turns)."""
    messages: list[BaseMessage] = [HumanMessage(content=question)]
    for name, args, result in steps:
        call_id = f"call_{uuid.uuid4().hex[:8]}"
        messages.append(AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": call_id, "type": "tool_call"}]))
        messages.append(ToolMessage(content=render(result), name=name, tool_call_id=call_id, artifact=result,
                                    status="error" if result.status == "error" else "success"))
    if answer is not None:
        call_id = f"call_{uuid.uuid4().hex[:8]}"
        messages.append(AIMessage(content="", tool_calls=[{"name": "answer", "args": answer, "id": call_id, "type": "tool_call"}]))
        messages.append(ToolMessage(content="answer recorded", name="answer", tool_call_id=call_id,
                                    artifact=ToolResult(tool="answer", cited=answer["evidence_ids"])))
    return messages


def decide(messages: list[BaseMessage]) -> list[tuple[str, dict[str, Any]]]:
    step = RulePolicy().decide(messages)
    return [(c["name"], c["args"]) for c in step.tool_calls]


def answer_of(messages: list[BaseMessage]) -> dict[str, Any]:
    ((name, args),) = decide(messages)
    assert name == "answer", (name, args)
    return args


TANKS = [region_ev(300, 300, 0.9, presence=0.95, windows=3), region_ev(2400, 300, 0.8, presence=0.9),
         region_ev(300, 2400, 0.7, presence=0.85), region_ev(2400, 2400, 0.6, presence=0.8, windows=2)]


def tanks_turn(question: str = "where are the storage tanks?") -> list[BaseMessage]:
    """A finished earlier turn: four tank sites found, the best two zoomed, all four cited."""
    result = search_result("storage tanks", TANKS)
    v1, v2 = view_of(TANKS[0]), view_of(TANKS[1])
    return conversation(question, ("search_patches", {"phrases": ["storage tanks"]}, result),
                        ("zoom", {"evidence_id": TANKS[0].id}, zoom_result(v1, TANKS[0].id)),
                        ("zoom", {"evidence_id": TANKS[1].id}, zoom_result(v2, TANKS[1].id)),
                        answer={"text": "...", "evidence_ids": [e.id for e in TANKS] + [v1.id, v2.id], "confidence": 0.95})


# --- searches ------------------------------------------------------------------------------------------


def test_each_target_is_searched_for_its_object_words_only() -> None:
    assert decide([HumanMessage(content="Where are the storage tanks?")]) == [("search_patches", {"phrases": ["storage tanks"]})]
    assert decide([HumanMessage(content="is there an airport, and how big is it?")]) == [
        ("search_patches", {"phrases": ["airport"]})]
    assert decide([HumanMessage(content="where are the storage tanks and the stadiums?")]) == [
        ("search_patches", {"phrases": ["storage tanks"]}), ("search_patches", {"phrases": ["stadiums"]})]


def test_where_lists_and_cites_every_site_found() -> None:
    result = search_result("storage tanks", TANKS)
    messages = conversation("where are the storage tanks?", ("search_patches", {"phrases": ["storage tanks"]}, result))
    assert decide(messages) == [("zoom", {"evidence_id": TANKS[0].id}), ("zoom", {"evidence_id": TANKS[1].id})]
    view = view_of(TANKS[0])
    messages += conversation("", ("zoom", {"evidence_id": TANKS[0].id}, zoom_result(view, TANKS[0].id)))[1:]
    args = answer_of(messages)
    assert args["text"].startswith("Storage tanks at 4 sites: ") and args["finding"] == "found"
    assert all(e.id in args["text"] and e.id in args["evidence_ids"] for e in TANKS)  # the second site too
    assert f"the strongest at {TANKS[0].id} (presence 0.95" in args["text"] and view.id in args["evidence_ids"]
    assert args["text"].count("Retrieval-only") == 1 and args["text"].endswith(RETRIEVAL_ONLY)


def test_count_is_a_count_of_sites() -> None:
    result = search_result("storage tanks", TANKS)
    args = answer_of(conversation("how many storage tanks are there?",
                                  ("search_patches", {"phrases": ["storage tanks"]}, result),
                                  ("zoom", {"evidence_id": TANKS[0].id}, zoom_result(view_of(TANKS[0]), TANKS[0].id))))
    assert args["text"].startswith("Storage tanks: 4 sites found by retrieval (a count of places, not of individual objects)")


def test_an_absent_class_is_not_found_first_with_candidates_unconfirmed() -> None:
    near = [region_ev(900, 900, 0.55, query="golf course", presence=0.06), region_ev(100, 1900, 0.4, query="golf course", presence=0.03)]
    result = search_result("golf course", candidates=near, finding="not_found")
    args = answer_of(conversation("is there a golf course?", ("search_patches", {"phrases": ["golf course"]}, result),
                                  ("zoom", {"evidence_id": near[0].id}, zoom_result(view_of(near[0]), near[0].id))))
    assert args["text"].startswith("Not found: no golf course in this scene") and args["finding"] == "not_found"
    assert "Closest candidates, unconfirmed: " in args["text"] and near[0].id in args["evidence_ids"]
    assert args["confidence"] >= 0.9  # confident that it is absent (best presence 0.06)


def test_without_a_presence_verdict_sites_are_uncertain() -> None:
    result = search_result("storage tanks", TANKS[:2], finding="uncertain")
    args = answer_of(conversation("where are the storage tanks?", ("search_patches", {"phrases": ["storage tanks"]}, result),
                                  ("zoom", {"evidence_id": TANKS[0].id}, zoom_result(view_of(TANKS[0]), TANKS[0].id))))
    assert args["text"].startswith("Uncertain: storage tanks possibly at 2 sites") and args["finding"] == "uncertain"
    assert args["confidence"] <= 0.3


def test_two_targets_one_found_one_not() -> None:
    stadium = region_ev(1500, 1500, 0.4, query="airports", presence=0.1)
    messages = conversation(
        "where are the storage tanks and the airports?",
        ("search_patches", {"phrases": ["storage tanks"]}, search_result("storage tanks", TANKS)),
        ("search_patches", {"phrases": ["airports"]}, search_result("airports", candidates=[stadium], finding="not_found")),
        ("zoom", {"evidence_id": TANKS[0].id}, zoom_result(view_of(TANKS[0]), TANKS[0].id)),
    )
    args = answer_of(messages)
    assert args["text"].startswith("Storage tanks at 4 sites") and "Not found: no airports in this scene" in args["text"]
    assert args["finding"] == "uncertain"  # mixed: the per-target findings say which


def test_confidence_is_judged_against_each_results_own_threshold() -> None:
    """The visible bug of issue 11: slow-path rows were judged against 0.5 whatever the setting said."""
    strong, weak = region_ev(0, 0, 0.4, path="slow"), region_ev(500, 0, 0.2, path="slow")
    lookup = ToolResult(tool="search_patches", hits=[strong, weak], threshold=0.3, path="slow", phrases=["storage tanks"])
    assert lookup.found == [strong] and lookup.unconfirmed == [weak]
    messages = conversation("where are the storage tanks?", ("search_patches", {"phrases": ["storage tanks"]}, lookup))
    assert decide(messages) == [("zoom", {"evidence_id": strong.id})]  # only the hit above 0.3, not the default 0.5
    strict = lookup.model_copy(update={"threshold": 0.5})
    assert strict.found == []


def test_failed_tools_are_not_read_as_findings() -> None:
    failed = ToolResult(tool="search_patches", status="error", message="Error: the index is busy")
    args = answer_of(conversation("where is the airport?", ("search_patches", {"phrases": ["airport"]}, failed)))
    assert args["evidence_ids"] == [] and "Could not search for airport: Error: the index is busy" in args["text"]


# --- follow-ups ----------------------------------------------------------------------------------------


def test_the_second_one_zooms_the_second_site() -> None:
    # the last turn's last zoom was on the second site, so "closer" zooms into its central half
    messages = tanks_turn() + [HumanMessage(content="zoom closer on the second one")]
    assert decide(messages) == [("zoom", {"bbox": [2438, 338, 2512, 412]})]
    messages = tanks_turn() + [HumanMessage(content="show me the second one")]
    assert decide(messages) == [("zoom", {"evidence_id": TANKS[1].id})]
    view = view_of(TANKS[1])
    messages += conversation("", ("zoom", {"evidence_id": TANKS[1].id}, zoom_result(view, TANKS[1].id)))[1:]
    args = answer_of(messages)
    assert args["evidence_ids"] == [TANKS[1].id, view.id] and "second site" in args["text"]
    assert decide(tanks_turn() + [HumanMessage(content="and the fifth one?")])[0][0] == "answer"  # only four


def test_zoom_closer_goes_finer_on_the_same_place() -> None:
    first = tanks_turn()
    view = view_of(TANKS[0])
    follow = first + conversation("zoom on the first one", ("zoom", {"evidence_id": TANKS[0].id}, zoom_result(view, TANKS[0].id)),
                                  answer={"text": "...", "evidence_ids": [TANKS[0].id, view.id], "confidence": 0.9})
    ((name, args),) = decide(follow + [HumanMessage(content="zoom closer")])
    assert name == "zoom" and args == {"bbox": list(TANKS[0].members[0].as_tuple())}  # its best window, inside the site


def test_others_elsewhere_searches_again_without_the_reported_sites() -> None:
    messages = tanks_turn() + [HumanMessage(content="Are there any other storage tanks elsewhere?")]
    assert decide(messages) == [("search_patches", {"phrases": ["storage tanks"], "exclude": [e.id for e in TANKS]})]
    messages = tanks_turn() + [HumanMessage(content="show me more")]
    assert decide(messages) == [("search_patches", {"phrases": ["storage tanks"], "exclude": [e.id for e in TANKS]})]
    none_left = search_result("storage tanks", candidates=[region_ev(1500, 100, 0.3, presence=0.2)], finding="not_found")
    messages += conversation("", ("search_patches", {"phrases": ["storage tanks"], "exclude": [e.id for e in TANKS]}, none_left))[1:]
    messages += conversation("", ("zoom", {"evidence_id": none_left.candidates[0].id},
                                  zoom_result(view_of(none_left.candidates[0]))))[1:]
    args = answer_of(messages)
    assert args["text"].startswith("Not found: no other storage tanks in this scene by retrieval beyond the places already reported")


def test_the_one_in_the_north_west() -> None:
    messages = tanks_turn() + [HumanMessage(content="the one in the south-east")]
    assert decide(messages) == [("zoom", {"evidence_id": TANKS[3].id})]
    messages = tanks_turn() + [HumanMessage(content="what about the one in the north-east?")]
    assert decide(messages) == [("zoom", {"evidence_id": TANKS[1].id})]


def test_how_big_is_it_reports_extents() -> None:
    args = answer_of(tanks_turn() + [HumanMessage(content="how big is it?")])
    assert args["evidence_ids"][0] == TANKS[0].id and f"{TANKS[0].id} spans 300 x 150 px" in args["text"]


def test_a_reference_without_earlier_evidence_says_so() -> None:
    args = answer_of([HumanMessage(content="zoom closer on the second one")])
    assert args["evidence_ids"] == [] and "no earlier place" in args["text"]


def test_an_explicit_zoom_request_zooms_then_cites_the_crop() -> None:
    assert decide([HumanMessage(content="Zoom on evidence E1a2b3c and describe it")]) == [("zoom", {"evidence_id": "E1a2b3c"})]
    view = view_of(TANKS[0])
    args = answer_of(conversation("Zoom on evidence E1a2b3c", ("zoom", {"evidence_id": "E1a2b3c"}, zoom_result(view))))
    assert args["evidence_ids"] == [view.id]


def test_results_revived_from_a_checkpoint_as_dicts_read_the_same() -> None:
    result = search_result("storage tanks", TANKS)
    message = ToolMessage(content="whatever the text says", name="search_patches", tool_call_id="c1",
                          artifact=result.model_dump())
    revived = ToolResult.of(message)
    assert revived == result and revived.found == TANKS
    error = ToolResult.of(ToolMessage(content="Error: bad box", name="zoom", tool_call_id="c2", status="error"))
    assert error.status == "error" and error.message == "Error: bad box" and error.evidence == []
