"""The offline rule policy: a chat model with no VLM that answers an analyst's turns through the tools.

It is a LangChain chat model, so it drives the same graph, tools, budgets and sufficiency check as a real
VLM. At each step it reads what the analyst asked (:func:`rsrag.agent.models.turns.read_turn`) and the typed
results of the tool calls so far (:class:`~rsrag.agent.results.ToolResult`, never their text), and decides:

* **where / presence / count** ("where are the X?", "is there an X?", "how many X?", several targets in one
  question; "how many are there?" or "are there any?" without an object asks about the last one): one ``search_patches`` per target (the one retrieval cascade: fast path, slow path when nothing
  is confident, sites, presence finding), a zoom on the best site(s), then an answer that lists every site
  found, says ``found`` / ``not_found`` / ``uncertain`` first, and counts *sites found by retrieval*, not
  objects;
* **references to earlier evidence** ("the second one", "that one", "zoom closer", "the one in the
  north-west", "how big is it?"): the place is taken from the last answer's sites (or the last zoom) and
  zoomed on, closer when asked;
* **more** ("show me more", "others", "any other X elsewhere?"): the same target searched again with the
  sites already reported excluded.
An answer from a search that saw only part of the scene at full detail (a pyramid descent on an index not yet
filled) says how much it saw and that ``rsrag index`` fills the rest.

* **distance** ("how far apart are they?"): centre-to-centre distances between the last answer's places,
  on the ground where the scene is georeferenced.
* **place relations** ("the pond nearest to the bridge", "ponds within 500 m of the river", "north of",
  "near", "how far is the pond from the bridge?"): the target and the anchor are both searched, and the
  relation is geometry on their sites (:mod:`rsrag.agent.models.relations`); the answer gives the distances
  and cites both.
* **places by coordinates** ("zoom on 1000 500 1300 800", "what is at pixel 1200, 600?", "zoom to lon 16.66
  lat 46.86") and **zoom out** (the last view at twice its size): a zoom there, the crop cited.
* **overview** ("what is in this image?", "describe the scene"): the scene's facts (``scene_info``: size,
  bands, CRS, ground sample distance, the overview image) and what it can be asked.

It cannot *see*: its answers read like an analyst's note built from retrieval alone, and say once, briefly,
that no vision-language model looked at the places.
"""

from __future__ import annotations

import functools
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from pydantic import Field
from rsrag.agent.answering import overall_finding
from rsrag.agent.evidence import Evidence, find_evidence_ids, lonlat_box
from rsrag.agent.models.relations import Placement, ground_size, holding, place
from rsrag.agent.models.turns import Turn, direction_vector, read_turn
from rsrag.agent.results import ToolResult
from rsrag.agent.state import is_question
from rsrag.tools.calibration import Finding
from rsrag.tools.georef import great_circle_km
from rsrag.tools.region import PixelBox

RETRIEVAL_ONLY = "Retrieval-only: no vision-language model looked at these places."
ASK_FIRST = "ask where something is first (e.g. 'where are the bridges?')."
WHAT_IT_ANSWERS = ("This offline policy answers where, whether and how many of things you name; describing a "
                   "whole scene needs a vision-language model (--vlm).")
MAX_LISTED = 8
"""Sites named one by one in an answer's text (the rest are counted, and cited up to :data:`MAX_CITED`)."""
MAX_CITED = 24
ORDINAL_WORDS = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth", 6: "sixth", 7: "seventh",
                 8: "eighth", 9: "ninth", 10: "tenth", -1: "last"}


class RulePolicy(BaseChatModel):
    """Deterministic retrieval-only policy (see the module docstring).

    Attributes:
        max_zooms: places to zoom on before answering a search question.
        turn_reader: question -> :class:`~rsrag.agent.models.turns.Turn` (default :func:`read_turn`).
    """

    max_zooms: int = 2
    turn_reader: Callable[[str], Turn] = Field(default=read_turn, exclude=True)
    tool_names: tuple[str, ...] = ()

    @property
    def _llm_type(self) -> str:
        return "rsrag-rule-policy"

    @property
    def model_name(self) -> str:
        return "rule"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable:
        names = tuple(getattr(t, "name", None) or t.get("name") for t in tools)  # type: ignore[union-attr]
        return self.model_copy(update={"tool_names": names})

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        message = self.decide(messages)
        return ChatResult(generations=[ChatGeneration(message=message)])

    # --- the policy ---------------------------------------------------------------------------------

    def decide(self, messages: list[BaseMessage]) -> AIMessage:
        """The next step for the conversation ``messages``."""
        turns = _turns(messages)
        now, past = turns[-1], turns[:-1]
        if not now.question.strip():
            return _answer("There is no question to answer.", [], 0.0)
        target = _zoom_request(now.question)
        if target:
            return _zoom_on_request(target, now)
        turn = self.turn_reader(now.question)
        if self._across_catalog(messages, turn):
            from rsrag.agent.models.catalog_policy import catalog_turn

            return catalog_turn(self, now.question, now)
        if turn.place is not None or (turn.wider and not turn.targets):
            return self._place_turn(turn, now, past)
        if turn.refers_back:
            return self._refer_back(turn, now, past)
        return self._search_turn(turn, now, past)

    @staticmethod
    def _across_catalog(messages: list[BaseMessage], turn: Turn) -> bool:
        """Whether a question goes to the catalog (see :mod:`rsrag.agent.models.catalog_policy`): the thread has
        a catalog and either no open scene, or the question asks about scenes; references to earlier places
        stay with them."""
        from rsrag.agent.models.catalog_policy import asks_across, scope_of

        scope = scope_of(messages)
        if not scope.get("catalog") or (turn.refers_back and not (turn.more and turn.ordinal is None
                                                                  and turn.direction is None)):
            return False
        return not scope.get("scene") or asks_across(turn.question)

    # --- questions that name what to look for ---------------------------------------------------------

    def _search_turn(self, turn: Turn, now: _Turn, past: list[_Turn]) -> AIMessage:
        # "show me more", "how many are there?", "are there any?": the thing asked about last
        follows_up = turn.more or turn.thorough or turn.kind in ("count", "presence") or turn.relation is not None
        targets = turn.targets or (_last_targets(past) if follows_up else [])
        if not targets and turn.overview:
            info = next((step for step in now.steps if step.name == "scene_info"), None)
            return _call("scene_info", {}) if info is None else _overview_answer(info.result)
        if not targets:
            return _answer(f"I found nothing to look for in {turn.question!r}: name an object, e.g. "
                           f"'where are the storage tanks?'. {WHAT_IT_ANSWERS}", [], 0.0)
        searched = {_target_of(step): step for step in now.steps if step.name == "search_patches"}
        anchor = turn.relation.anchor if turn.relation is not None else None  # "the pond nearest to the bridge"
        wanted = [*targets, *([anchor] if anchor is not None and anchor not in targets else [])]
        todo = [t for t in wanted if t not in searched]
        if todo:
            calls = []
            for t in todo:
                args: dict[str, Any] = {"phrases": [t]}
                exclude = _reported_for(t, past) if turn.more and t in targets else []  # never the anchor's sites
                if exclude:
                    args["exclude"] = exclude
                calls.append(("search_patches", args))
            return _calls(calls)
        part = turn.part if turn.ordinal is None else None  # "how many ponds are in the north?"
        reports = [_Report(t, searched[t].result, _pick(turn, searched[t].result), part) for t in targets]
        related = None if anchor is None else _Related(turn, reports[0], _Report(anchor, searched[anchor].result))
        if "zoom" not in {s.name for s in now.steps}:
            zooms = related.zooms(self.max_zooms) if related is not None else _zoom_targets(reports, self.max_zooms)
            if zooms:
                return _calls([("zoom", {"evidence_id": e.id}) for e in zooms])
        views = {s.args.get("evidence_id"): s.result.views[0] for s in now.steps
                 if s.name == "zoom" and s.result.ok and s.result.views}
        return _compose(turn, reports, views, excluded=turn.more, related=related)

    def _each_answer(self, reported: list[Evidence], now: _Turn, top: int | None = None) -> AIMessage:
        """Zoom on every place of the last search (up to the zoom limit; the first ``top`` when asked for the
        top N), then cite the crops."""
        places = reported[: min(MAX_EACH, top or MAX_EACH)]
        if not places:
            return _answer(f"There are no earlier places to show: {ASK_FIRST}", [], 0.0)
        zooms = [s for s in now.steps if s.name == "zoom"]
        if not zooms:
            return _calls([("zoom", {"evidence_id": e.id}) for e in places])
        shown = [(e, z.result.views[0]) for e, z in zip(places, zooms) if z.result.ok and z.result.views]
        text = "; ".join(f"{e.id} at {e.bbox}: crop {v.id}" for e, v in shown)
        more = f" ({len(reported) - len(places)} more not shown; ask for them by number)" if len(reported) > len(places) else ""
        if top is not None:
            text = f"The top {len(places)} of the {_sites(len(reported))} the last search reported: {text}"
        return _answer(f"{text}{more}. {RETRIEVAL_ONLY}", [i for e, v in shown for i in (e.id, v.id)],
                       min(_strength(e) for e, _ in shown) if shown else 0.0)

    # --- places given by coordinates, and zooming out ------------------------------------------------------

    def _place_turn(self, turn: Turn, now: _Turn, past: list[_Turn]) -> AIMessage:
        """Look at a place the question gives by coordinates ("zoom on 1000 500 1300 800", "what is at lon 16.6
        lat 46.8"), or around the last view at twice its size ("zoom out"); the answer cites the crop and says
        that naming an object is what retrieval can answer about it."""
        zooms = [s for s in now.steps if s.name == "zoom"]
        if not zooms:
            args = _place_args(turn, past)
            if args is None:
                return _answer("There is no earlier view to zoom out from: ask where something is first, or give a "
                               "place (e.g. 'zoom on 1000 500 1300 800').", [], 0.0)
            return _call("zoom", args)
        last = zooms[-1].result
        if not last.ok or not last.views:
            return _answer(f"Could not zoom there: {_reason(last)}.", [], 0.0)
        view = last.views[0]
        where = _lonlat(view)
        return _answer(f"Zoomed to {view.bbox}{' (' + where[2:] + ')' if where else ''}: crop {view.id}. To know what is "
                       f"there, ask for it by name (e.g. 'where are the ponds?'); "
                       f"{WHAT_IT_ANSWERS[0].lower()}{WHAT_IT_ANSWERS[1:]}",
                       [view.id], 0.5)

    # --- questions that point at earlier evidence -------------------------------------------------------

    def _refer_back(self, turn: Turn, now: _Turn, past: list[_Turn]) -> AIMessage:
        if turn.more and turn.ordinal is None and turn.direction is None:
            return self._search_turn(turn, now, past)
        reported = _reported_sites(past)
        named = [e for e in (_seen(past).get(i) for i in find_evidence_ids(now.question)) if e is not None]
        picks_one = turn.ordinal is not None or turn.direction is not None  # "the second one", "the one in the north"
        if turn.distance and len(named) >= 2:  # "how far is Ea8d6cb from E04089e?"
            return _distance_answer(named, "the places named")
        if turn.distance and not picks_one:
            return _distance_answer(reported)
        if turn.coordinates and turn.plural and not picks_one:
            return _coordinates_answer(reported)
        if turn.each and not picks_one:
            return self._each_answer(reported, now)
        if turn.top is not None and not picks_one:  # "show me the top 2"
            return self._each_answer(reported, now, top=turn.top)
        if turn.order is not None and not picks_one:  # "list them from north to south", "sort them by size"
            return _ordered_answer(reported, turn.order, _scene_size(past))
        if turn.direction is not None and turn.plural and turn.ordinal is None:  # "are any of them in the north?"
            return _in_part_answer(turn.direction, reported, _scene_size(past))
        if turn.distance:  # "how far is it from the first one?": the place shown last and the one named
            shown = _reported_sites(past, listed=False)[:1]
            other, _ = _referent(replace(turn, distance=False), reported, None, None, past)
            pair = [*shown, *([other] if other is not None and other not in shown else [])]
            return _distance_answer(pair)
        view, source = _last_view(past)
        site, why = _referent(turn, reported, view, source, past)
        if site is None:
            return _answer(why, [], 0.0)
        if turn.size and not turn.closer and turn.ordinal is None and turn.direction is None:
            sites = [site] if turn.this else reported[:3] or [site]
            text = " ".join(_size_sentence(e) for e in sites)
            return _answer(f"{text} {RETRIEVAL_ONLY}", [e.id for e in sites], _strength(sites[0]))
        zooms = [s for s in now.steps if s.name == "zoom"]
        if not zooms:
            box = _closer_box(site, view) if turn.closer and view is not None and _same_place(site, view) else None
            return _call("zoom", {"bbox": list(box.as_tuple())} if box is not None else {"evidence_id": site.id})
        last = zooms[-1].result
        if not last.ok or not last.views:
            return _answer(f"Could not zoom on {site.id}: {_reason(last)}. {RETRIEVAL_ONLY}", [site.id], 0.0)
        crop = last.views[0]
        text = (f"{why[:1].upper()}{why[1:]}: {site.id} at {site.bbox}{_query_note(site)}, {_strength_note(site)}; "
                f"zoomed to {crop.bbox}, crop {crop.id}.")
        if turn.size:
            text += " " + _size_sentence(site)
        return _answer(f"{text} {RETRIEVAL_ONLY}", [site.id, crop.id], _strength(site))


# --- the conversation, as typed steps ---------------------------------------------------------------


@dataclass
class _Step:
    name: str
    args: dict[str, Any]
    result: ToolResult


@dataclass
class _Turn:
    question: str
    steps: list[_Step] = field(default_factory=list)
    answer: dict[str, Any] | None = None


def _turns(messages: list[BaseMessage]) -> list[_Turn]:
    """The conversation cut into turns (question, tool calls with their typed results, the answer given);
    the last turn is the current one."""
    turns = [_Turn("")]
    calls: dict[str, dict[str, Any]] = {}
    for m in messages:
        if is_question(m):
            turns.append(_Turn(m.text))
        elif isinstance(m, AIMessage):
            for c in m.tool_calls:
                calls[c["id"] or ""] = c
                if c["name"] == "answer":
                    turns[-1].answer = dict(c["args"])
        elif isinstance(m, ToolMessage):
            call = calls.get(m.tool_call_id) or {}
            result = ToolResult.of(m)
            if result.tool != "answer":
                turns[-1].steps.append(_Step(call.get("name") or result.tool, dict(call.get("args") or {}), result))
    return turns if len(turns) == 1 else turns[1:] if not turns[0].steps else turns


def _target_of(step: _Step) -> str:
    phrases = step.args.get("phrases") or step.result.phrases
    return str(phrases[0]) if phrases else ""


def _last_targets(past: list[_Turn]) -> list[str]:
    for turn in reversed(past):
        targets = list(dict.fromkeys(_target_of(s) for s in turn.steps if s.name == "search_patches"))
        if targets:
            return targets
    return []


def _seen(past: list[_Turn]) -> dict[str, Evidence]:
    out: dict[str, Evidence] = {}
    for turn in past:
        for step in turn.steps:
            out.update({e.id: e for e in step.result.evidence})
    return out


def _reported_sites(past: list[_Turn], *, listed: bool = True) -> list[Evidence]:
    """The places an earlier answer cited, in its order (zoom crops left out). ``listed``: the most recent
    answer to a search (what "the second one", "the biggest", "how far apart are they" count from: an answer
    that only pointed back at one of them does not replace the list), else the most recent answer that cited
    places (what "that one" and "zoom closer" mean)."""
    seen = _seen(past)
    for searched_only in ((True, False) if listed else (False,)):
        for turn in reversed(past):
            if searched_only and not any(s.name in SEARCH_TOOLS for s in turn.steps):
                continue
            ids = list((turn.answer or {}).get("evidence_ids") or [])
            places = [seen[i] for i in ids if i in seen and seen[i].path in ("fast", "slow", "similar")]
            if places:
                return places
    return []


SEARCH_TOOLS = frozenset({"search_patches", "search_catalog", "search_similar"})
"""Tools whose answers list places a later reference ("the second one") counts from."""


def _reported_for(target: str, past: list[_Turn]) -> list[str]:
    """Ids of the places of ``target`` that earlier answers cited (what "others" must leave out)."""
    cited = {i for turn in past for i in (turn.answer or {}).get("evidence_ids") or []}
    out: list[str] = []
    for turn in past:
        for step in turn.steps:
            if step.name == "search_patches" and _target_of(step) == target:
                out += [e.id for e in step.result.regions if e.id in cited and e.id not in out]
    return out


def _last_view(past: list[_Turn]) -> tuple[Evidence | None, str | None]:
    """The most recent zoom crop and the evidence id it zoomed on (if it was given one)."""
    for turn in reversed(past):
        for step in reversed(turn.steps):
            if step.name == "zoom" and step.result.ok and step.result.views:
                return step.result.views[0], step.args.get("evidence_id") or step.result.extras.get("source")
    return None, None


# --- references --------------------------------------------------------------------------------------


def _referent(turn: Turn, reported: list[Evidence], view: Evidence | None, source: str | None,
              past: list[_Turn]) -> tuple[Evidence | None, str]:
    """The earlier place a question points at, and how to name it (or ``None`` and why not)."""
    if not reported and view is None:
        return None, ("There is no earlier place in this conversation to refer to: ask where something is first "
                      "(e.g. 'where are the storage tanks?').")
    if turn.ordinal is not None:
        if not reported:
            return None, "The last answer reported no places to count from; ask where something is first."
        n = turn.ordinal
        if n == -1 or 1 <= n <= len(reported):
            word = ORDINAL_WORDS.get(n, f"#{n}")
            return reported[n - 1 if n > 0 else -1], f"the {word} site of the last answer"
        listing = ", ".join(e.id for e in reported)
        return None, f"The last answer reported {len(reported)} site(s) ({listing}); there is no site #{n}."
    if turn.extreme is not None and turn.ordinal is None and turn.direction is None:
        if not reported:
            return None, "The last answer reported no places to compare; ask where something is first."
        pick = (max if turn.extreme == "largest" else min)(reported, key=_area)
        return pick, f"the {turn.extreme} site of the last answer (by the extent of its matching windows)"
    if turn.direction is not None:
        pool = reported or [e for e in _seen(past).values() if e.path in ("fast", "slow")]
        size = _scene_size(past)
        best = max(pool, key=lambda e: _toward(e, turn.direction or "", size), default=None)
        if best is None:
            return None, "There is no earlier place to choose from; ask where something is first."
        return best, f"the site furthest {turn.direction} among those reported"
    seen = _seen(past)
    searched_last = bool(past) and any(s.name == "search_patches" for s in past[-1].steps)
    if source and source in seen and seen[source].path != "zoom" and (not searched_last or not reported):
        return seen[source], "the place zoomed on last"
    last = _reported_sites(past, listed=False)
    if len(last) == 1:
        return last[0], "the site of the last answer"
    if last:
        return last[0], "the strongest site of the last answer"
    assert view is not None
    return view, "the last zoom"


def _scene_size(past: list[_Turn]) -> tuple[float, float] | None:
    for turn in reversed(past):
        for step in reversed(turn.steps):
            size = step.result.extras.get("scene_size")
            if size:
                return float(size[0]), float(size[1])
    return None


def _position(ev: Evidence, size: tuple[float, float] | None) -> tuple[float, float]:
    """A place's centre in scene coordinates from -1 to 1 (x east, y south; 0, 0 the scene's centre)."""
    assert ev.region is not None
    cx, cy = ev.region.box.center
    w, h = size or (max(1.0, 2 * cx), max(1.0, 2 * cy))
    return 2 * cx / w - 1, 2 * cy / h - 1


def _toward(ev: Evidence, direction: str, size: tuple[float, float] | None) -> float:
    """How far ``ev`` lies toward ``direction`` (x east, y south) from the scene's centre."""
    x, y = _position(ev, size)
    dx, dy = direction_vector(direction)
    if dx == 0 and dy == 0:
        return -math.hypot(x, y)
    return x * dx + y * dy


def _same_place(site: Evidence, view: Evidence) -> bool:
    return site.region is not None and view.region is not None and site.region.box.intersection(view.region.box) > 0


def _closer_box(site: Evidence, view: Evidence) -> PixelBox:
    """A finer box than the last zoom on the same place: the site's best window when it is smaller, else the
    central half of the last zoom (at least 16 px a side)."""
    assert view.region is not None
    last = view.region.box
    if site.members and site.members[0].area < 0.8 * last.area and last.contains(site.members[0]):
        return site.members[0]
    cx, cy = last.center
    half_w, half_h = max(8, last.width // 4), max(8, last.height // 4)
    return PixelBox(x0=max(0, int(cx - half_w)), y0=max(0, int(cy - half_h)), x1=int(cx + half_w), y1=int(cy + half_h))


# --- zoom requests by id -------------------------------------------------------------------------------


def _zoom_request(question: str) -> str | None:
    """The evidence id an explicit zoom request names ("zoom on evidence E1a2b3c", as ``rsrag chat``'s /zoom
    sends), else ``None``."""
    ids = find_evidence_ids(question)
    return ids[0] if ids and "zoom" in question.lower() else None


def _zoom_on_request(target: str, now: _Turn) -> AIMessage:
    """Zoom on the requested evidence once, then answer citing the crop (or report the tool's error)."""
    zooms = [s for s in now.steps if s.name == "zoom"]
    if not zooms:
        return _call("zoom", {"evidence_id": target})
    last = zooms[-1].result
    if not last.ok or not last.views:
        return _answer(f"Could not zoom on {target}: {_reason(last)}.", [], 0.0)
    view = last.views[0]
    return _answer(f"Zoomed on {target}: crop {view.id} of {view.bbox}. {RETRIEVAL_ONLY}", [view.id], 0.5)


# --- answers -------------------------------------------------------------------------------------------


@dataclass
class _Report:
    """What one target's search found, for the answer."""

    target: str
    result: ToolResult
    picked: Evidence | None = None
    part: str | None = None
    """A part of the scene the question keeps the target's sites in (see :attr:`inside`)."""

    @functools.cached_property
    def inside(self) -> list[Evidence] | None:
        """The found sites that lie in :attr:`part` ("how many ponds are in the north?"), or ``None`` when the
        question names no part or the target is not found."""
        if self.part is None or self.finding != "found" or not self.result.found:
            return None
        return [e for e in self.result.found if _in_part(e, self.part, _result_size(self.result))]

    @property
    def finding(self) -> Finding | None:
        if not self.result.ok:
            return None
        if self.result.finding is not None:
            return self.result.finding
        return "found" if self.result.found else "uncertain"

    @property
    def places(self) -> list[Evidence]:
        if self.picked is not None:
            return [self.picked]
        return self.result.found or self.result.unconfirmed[: self.result.shown or 5]


def _pick(turn: Turn, result: ToolResult) -> Evidence | None:
    """The one site a question with a target and a reference asks for ("the second storage tank", "the
    church in the top left")."""
    places = result.found or result.unconfirmed
    if not places or (turn.part is not None and turn.ordinal is None):  # "ponds in the north": a part, not one site
        return None
    if turn.ordinal is not None:
        n = turn.ordinal
        return places[n - 1] if 1 <= n <= len(places) else places[-1] if n == -1 else None
    if turn.direction is not None:
        return max(places, key=lambda e: _toward(e, turn.direction or "", _result_size(result)))
    return None


def _result_size(result: ToolResult) -> tuple[float, float] | None:
    size = result.extras.get("scene_size")
    return (float(size[0]), float(size[1])) if size else None


_OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}


def _order_of(turn: Turn) -> str | None:
    """How a question with a target orders the sites found: as asked ("from north to south"), or by an extreme
    ("where are the biggest ponds?": largest first) when it picks no single site."""
    if turn.order is not None:
        return turn.order
    return turn.extreme if turn.ordinal is None and turn.direction is None else None


def _ordered(places: list[Evidence], order: str, size: tuple[float, float] | None) -> list[Evidence]:
    """``places`` in ``order``: from a side of the scene (``north``...: the one furthest that way first), by the
    extent of their matching windows (``largest`` / ``smallest``) or by strength (``strongest`` / ``weakest``)."""
    if order in _OPPOSITE:
        return sorted(places, key=lambda e: -_toward(e, order, size))
    if order in ("largest", "smallest"):
        return sorted(places, key=lambda e: -_area(e) if order == "largest" else _area(e))
    return sorted(places, key=lambda e: -_strength(e) if order == "strongest" else _strength(e))


def _area(ev: Evidence) -> int:
    """The pixel area of a place's box (the extent of its matching windows; 0 without a region)."""
    return ev.region.box.area if ev.region is not None else 0


def _order_note(order: str, places: Sequence[Evidence]) -> str:
    if order in _OPPOSITE:
        return f"from {order} to {_OPPOSITE[order]}"
    if order in ("largest", "smallest") and len(places) > 1 and not _sizes_differ(places):
        return "all of one extent (their matching windows), so size cannot order them; strongest first"
    return f"{order} first"


def _sizes_differ(places: Sequence[Evidence]) -> bool:
    return len({e.region.box.area for e in places if e.region is not None}) > 1


def _first_size(order: str, places: Sequence[Evidence]) -> str:
    """The size of the first place of a list ordered by size (nothing when size does not order it)."""
    return f" {_size_sentence(places[0])}" if order in ("largest", "smallest") and _sizes_differ(places) else ""


def _ordered_answer(reported: list[Evidence], order: str, size: tuple[float, float] | None) -> AIMessage:
    """The places of the last search, listed in the order asked (sizes are those of the matching windows)."""
    if not reported:
        return _answer(f"There are no earlier places to order: {ASK_FIRST}", [], 0.0)
    places = _ordered(reported, order, size)
    text = f"The {_sites(len(places))} of the last answer, {_order_note(order, places)}: {_listing(places)}."
    text += _first_size(order, places)
    return _answer(f"{text} {RETRIEVAL_ONLY}", [e.id for e in places[:MAX_CITED]], min(_strength(e) for e in places))


def _zoom_targets(reports: list[_Report], max_zooms: int) -> list[Evidence]:
    """The places to look at before answering: the best of each target first, then the next best."""
    ranked = [r.places for r in reports if r.places]
    out: list[Evidence] = []
    depth = 0
    while len(out) < max_zooms and any(depth < len(p) for p in ranked):
        out += [p[depth] for p in ranked if depth < len(p)][: max_zooms - len(out)]
        depth += 1
    return out


def _strength(ev: Evidence) -> float:
    value = ev.presence if ev.presence is not None else ev.confidence
    return round(float(value or 0.0), 3)


def _strength_note(ev: Evidence) -> str:
    if ev.presence is not None:
        return f"presence {ev.presence:.2f}"
    return f"confidence {(ev.confidence or 0.0):.2f}"


def _query_note(ev: Evidence) -> str:
    return f" ({ev.query})" if ev.query else ""


def _lonlat(ev: Evidence) -> str:
    centre = _centre(ev)
    return "" if centre is None else f", lon {centre[0]:.5f} lat {centre[1]:.5f}"


def _reason(result: ToolResult) -> str:
    """Why a tool call failed, as one clause (its one-line reason, without a closing full stop)."""
    return (result.message or result.error_kind or "the tool failed").rstrip(". ")


def _listing(places: list[Evidence]) -> str:
    named = ", ".join(f"{e.id} {e.bbox}" for e in places[:MAX_LISTED])
    rest = len(places) - MAX_LISTED
    return named + (f" and {rest} more" if rest > 0 else "")


def _sites(n: int) -> str:
    return f"{n} site{'s' if n != 1 else ''}"


def _size_sentence(ev: Evidence) -> str:
    """How big a place is: its box in pixels and, where georeferenced, in metres (approximately)."""
    assert ev.region is not None
    box = ev.region.box
    text = f"{ev.id} spans {box.width} x {box.height} px"
    ground = ground_size(ev)
    if ground is not None:
        text += f" (about {ground[0]:,.0f} x {ground[1]:,.0f} m)"
    elif ev.region.map_box is not None:  # map coordinates that do not convert: the pixel size alone
        return text + "."
    return text + " (the extent of the matching windows, not a measured outline)."


MAX_EACH = 6
"""Places "show me each of them" zooms on (the zoom budget still applies)."""
LOOK_SIDE = 448
"""Side in pixels of the box looked at around a point given in pixels ("what is at pixel 1200, 600")."""
LOOK_DEGREES = 0.001
"""Half-height in degrees of latitude of the box looked at around a point given as lon/lat (about 110 m)."""


def _place_args(turn: Turn, past: list[_Turn]) -> dict[str, Any] | None:
    """The zoom arguments for a place given by coordinates, or for zooming out of the last view."""
    place = turn.place or {}
    if "bbox" in place:
        x0, y0, x1, y1 = place["bbox"]
        return {"bbox": [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]}
    if "point" in place:
        x, y = place["point"]
        h = LOOK_SIDE / 2
        return {"bbox": [max(0.0, x - h), max(0.0, y - h), x + h, y + h]}
    if "lonlat" in place:
        lon, lat = place["lonlat"]
        dlon = LOOK_DEGREES / max(0.05, math.cos(math.radians(lat)))
        return {"lonlat_bbox": [lon - dlon, lat - LOOK_DEGREES, lon + dlon, lat + LOOK_DEGREES]}
    view, _ = _last_view(past)
    if view is None or view.region is None:
        return None
    box = view.region.box
    (cx, cy), w, h = box.center, box.width, box.height
    size = _scene_size(past)
    x0, y0 = max(0.0, cx - w), max(0.0, cy - h)
    x1, y1 = cx + w, cy + h
    if size is not None:
        x1, y1 = min(size[0], x1), min(size[1], y1)
    return {"bbox": [x0, y0, x1, y1]}


def _overview_answer(result: ToolResult) -> AIMessage:
    """What the scene is (its facts from ``scene_info``, the overview cited), and what to ask of it."""
    if not result.ok or not result.views:
        return _answer(f"Could not describe the scene: {_reason(result)}.", [], 0.0)
    f, view = result.extras, result.views[0]
    units = f.get("gsd_units") or "map units"
    where = (f"in {f['crs']} at {f['gsd'][0]:g} x {f['gsd'][1]:g} {units} per pixel" if f.get("crs") and f.get("gsd")
             else "not georeferenced")
    bands = f"{f.get('bands')} band{'s' if f.get('bands') != 1 else ''} of {f.get('dtype')}"
    text = (f"{f.get('name')} is {f.get('width'):,} x {f.get('height'):,} px, {bands}, {where}; overview {view.id}. "
            f"{WHAT_IT_ANSWERS} E.g. 'where are the storage tanks?'.")
    return _answer(text, [view.id], 0.0)


def _in_part(ev: Evidence, direction: str, size: tuple[float, float] | None) -> bool:
    """Whether a place's centre lies in the named part of the scene: the half ("north"), the quadrant
    ("south-west") or the middle third ("centre")."""
    x, y = _position(ev, size)
    dx, dy = direction_vector(direction)
    if dx == 0 and dy == 0:
        return abs(x) <= 1 / 3 and abs(y) <= 1 / 3
    return (dx == 0 or x * dx > 0) and (dy == 0 or y * dy > 0)


def _in_part_answer(direction: str, reported: list[Evidence], size: tuple[float, float] | None) -> AIMessage:
    """Which of the last search's places lie in a part of the scene ("are any of them in the south-west?")."""
    places = [e for e in reported if e.region is not None]
    if not places:
        return _answer(f"There are no earlier places to look among: {ASK_FIRST}", [], 0.0)
    inside = [e for e in places if _in_part(e, direction, size)]
    if inside:
        text = (f"Yes, {len(inside)} of the {len(places)} places the last search reported lie in the {direction}: "
                f"{_listing(inside)}.")
        return _answer(f"{text} {RETRIEVAL_ONLY}", [e.id for e in inside], min(_strength(e) for e in inside))
    nearest = max(places, key=lambda e: _toward(e, direction, size))
    return _answer(f"No: none of the {len(places)} places the last search reported lies in the {direction}; the "
                   f"nearest to it is {nearest.id} at {nearest.bbox}. {RETRIEVAL_ONLY}", [nearest.id], 0.0)


def _coordinates_answer(reported: list[Evidence]) -> AIMessage:
    """The centres of the last answer's places: lon/lat where georeferenced, with the map box, else pixels."""
    places = [e for e in reported if e.region is not None][:MAX_LISTED]
    if not places:
        return _answer(f"There are no earlier places in this conversation to give coordinates for: {ASK_FIRST}",
                       [], 0.0)
    parts = []
    for e in places:
        assert e.region is not None
        cx, cy = e.region.box.center
        c = _centre(e)
        parts.append(f"{e.id}: lon {c[0]:.5f} lat {c[1]:.5f} (pixel centre {cx:,.0f}, {cy:,.0f})" if c is not None
                     else f"{e.id}: pixel centre {cx:,.0f}, {cy:,.0f} (the scene has no map coordinates)")
    text = "; ".join(parts) + f". Centres of the matching windows of the places the last answer cited. {RETRIEVAL_ONLY}"
    return _answer(text, [e.id for e in places], min(_strength(e) for e in places))


def _centre(ev: Evidence) -> tuple[float, float] | None:
    """A place's centre as (lon, lat), or ``None`` when it is not georeferenced."""
    box = lonlat_box(ev)
    return None if box is None else ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def _distance_text(metres: float) -> str:
    return f"{metres / 1000:,.1f} km" if metres >= 1000 else f"{metres:,.0f} m"


MAX_DISTANCE_PLACES = 4
"""Places of the last answer whose pairwise distances a distance question lists (the strongest first)."""


def _distance_answer(reported: list[Evidence], of: str = "the places the last answer cited") -> AIMessage:
    """How far apart the places of the last answer are: centre to centre, on the ground where georeferenced
    (else in pixels), for every pair of its first :data:`MAX_DISTANCE_PLACES` places, nearest pair first."""
    places = [e for e in reported if e.region is not None][:MAX_DISTANCE_PLACES]
    if len(places) < 2:
        why = (f"The last answer reported one place; a distance needs two: {ASK_FIRST}" if places else
               f"There are no earlier places in this conversation to measure between: {ASK_FIRST}")
        return _answer(why, [e.id for e in places], 0.0)
    pairs = []
    for i, a in enumerate(places):
        for b in places[i + 1:]:
            assert a.region is not None and b.region is not None
            (ax, ay), (bx, by) = a.region.box.center, b.region.box.center
            pixels = math.hypot(bx - ax, by - ay)
            ca, cb = _centre(a), _centre(b)
            metres = 1000 * great_circle_km(*ca, *cb) if ca is not None and cb is not None else None
            if metres is None and a.region.scene != b.region.scene:
                continue  # pixels of two scenes without map coordinates do not measure anything
            pairs.append((metres if metres is not None else pixels, a, b, pixels, metres))
    if not pairs:
        return _answer("The places of the last answer lie in different scenes without map coordinates, so their "
                       "distance cannot be measured.", [e.id for e in places], 0.0)
    pairs.sort(key=lambda p: p[0])
    same = {e.region.scene for e in places if e.region is not None}
    parts = [f"{a.id} and {b.id} are about {_distance_text(m)} apart" + (f" ({px:,.0f} px)" if len(same) == 1 else "")
             if m is not None else f"{a.id} and {b.id} are {px:,.0f} px apart" for _, a, b, px, m in pairs]
    text = ("; ".join(parts) + f". Centre to centre of {of} (the extents of their "
            f"matching windows, not measured outlines). {RETRIEVAL_ONLY}")
    return _answer(text[:1].upper() + text[1:], [e.id for e in places], min(_strength(e) for e in places))


def _target_sentence(turn: Turn, report: _Report, excluded: bool) -> tuple[str, list[str], float]:
    """One target's part of the answer: the sentence, the ids it cites, the confidence it supports."""
    r, name = report.result, report.target
    cap = name[:1].upper() + name[1:]
    if not r.ok:
        return f"Could not search for {name}: {_reason(r)}.", [], 0.0
    found, places = r.found, report.places
    finding = report.finding
    other = "other " if excluded else ""
    if report.picked is not None and finding != "not_found":
        e = report.picked
        n = turn.ordinal
        which = f"the {ORDINAL_WORDS.get(n, f'#{n}')} one" if n is not None else f"the one furthest {turn.direction}"
        text = f"{cap}: {which} is {e.id} at {e.bbox} ({_strength_note(e)}{_lonlat(e)})."
        return text, [e.id], _strength(e)
    order = _order_of(turn)
    if report.inside is not None:
        return _part_sentence(turn, report, report.inside)
    if finding == "found" and found:
        best = found[0]
        listed = found if order is None else _ordered(found, order, _result_size(r))
        listed = listed if turn.top is None else listed[: turn.top]
        listing, strongest = _listing(listed), f"{best.id} ({_strength_note(best)}{_lonlat(best)})"
        if order is not None:
            listing = f"{_order_note(order, listed)}, {listing}"
        if turn.top is not None:
            listing = f"the top {len(listed)}, {listing}"
        if turn.kind == "count":
            text = (f"{cap}: {_sites(len(found))} found by retrieval (a count of places, not of individual "
                    f"objects): {listing}; the strongest at {strongest}.")
        elif turn.kind == "presence":
            text = f"Yes, {other}{name} at {_sites(len(found))}: {listing}; the strongest at {strongest}."
        else:
            text = f"{'Other ' + name if excluded else cap} at {_sites(len(found))}: {listing}; the strongest at {strongest}."
        if order is not None:
            text += _first_size(order, listed)
        return text, [e.id for e in listed[:MAX_CITED]], _strength(best)
    if finding == "not_found":
        already = " beyond the places already reported" if excluded else ""
        lead = f"Not found: no {other}{name} in this scene by retrieval{already}"
        if turn.kind == "count":
            lead = f"Not found: 0 sites of {other}{name} in this scene by retrieval{already}"
        if places:
            best = max((e.presence for e in places if e.presence is not None), default=None)
            lead += (f" (best presence {best:.2f})" if best is not None else "")
            lead += f". Closest candidates, unconfirmed: {_listing(places)}."
        else:
            lead += "."
        top = max((e.presence for e in places if e.presence is not None), default=None)
        return lead, [e.id for e in places[:MAX_CITED]], round(1.0 - top, 3) if top is not None else 0.3
    # uncertain: retrieval has candidates but no calibrated verdict, or a verdict in between
    if found:
        text = (f"Uncertain: {other}{name} possibly at {_sites(len(found))} (retrieval confidence at least "
                f"{(r.threshold or 0.0):.2f}; presence not confirmed): {_listing(found)}")
        text += " (a count of places, not of objects)." if turn.kind == "count" else "."
        return text, [e.id for e in found[:MAX_CITED]], min(0.3, _strength(found[0]))
    if places:
        text = f"Uncertain: no {other}{name} confirmed; closest candidates, unconfirmed: {_listing(places)}."
        return text, [e.id for e in places[:MAX_CITED]], min(0.3, _strength(places[0]))
    return f"Not found: no region of the scene matched {name}.", [], 0.0


class _Related:
    """A target's sites related to an anchor's ("the pond nearest to the bridge", "ponds within 500 m of the
    river"): both were searched; the relation is geometry on their sites (:mod:`rsrag.agent.models.relations`).

    ``finding`` is the answer's verdict on the target *as related*: ``found`` when sites hold the relation,
    ``not_found`` when the target or the anchor is not found or no site holds it, ``uncertain`` when either
    search is uncertain or the relation cannot be measured (metres on a scene without map coordinates).
    """

    def __init__(self, turn: Turn, report: _Report, anchor: _Report) -> None:
        assert turn.relation is not None
        self.turn, self.relation, self.report, self.anchor = turn, turn.relation, report, anchor
        self.sites = report.result.found if report.finding == "found" else []
        self.anchors = anchor.result.found if anchor.finding == "found" else []
        self.placements = place(self.sites, self.anchors)
        self.held = holding(self.relation, self.placements)
        self.unmeasured = (self.relation.kind == "within" and self.relation.unit == "m" and bool(self.placements)
                           and all(p.metres is None for p in self.placements))

    @property
    def finding(self) -> Finding | None:
        if self.report.finding is None or self.anchor.finding is None:
            return None
        if "not_found" in (self.report.finding, self.anchor.finding):
            return "not_found"
        if "uncertain" in (self.report.finding, self.anchor.finding) or self.unmeasured:
            return "uncertain"
        return "found" if self.held else "not_found"

    def zooms(self, n: int) -> list[Evidence]:
        """The places to look at: the target sites the relation holds for, else the target's best."""
        held = [p.site for p in self.held][:n]
        return held or _zoom_targets([self.report], n)

    def sentence(self) -> tuple[str, list[str], float]:
        """The target's part of the answer, as related to the anchor: the sentence, its ids, its confidence."""
        rel, name, anchor = self.relation, self.report.target, self.anchor.target
        cap, words = name[:1].upper() + name[1:], rel.words
        plain = replace(self.turn, relation=None, kind="where" if self.turn.kind == "presence" else self.turn.kind)
        if not self.report.result.ok or not self.anchor.result.ok:
            failed = self.report if not self.report.result.ok else self.anchor
            return f"Could not search for {failed.target}: {_reason(failed.result)}.", [], 0.0
        if not self.sites:  # the target itself is not found: its own answer, and where the anchor is
            text, ids, strength = _target_sentence(plain, self.report, False)
            if self.anchors:
                text += f" ({anchor[:1].upper() + anchor[1:]} at {_sites(len(self.anchors))}: {_listing(self.anchors)}.)"
            return text, ids + [e.id for e in self.anchors[:MAX_CITED] if e.id not in ids], min(strength, 0.3)
        if not self.anchors:
            text, ids, strength = _target_sentence(plain, self.report, False)
            lead = "Not found" if self.anchor.finding == "not_found" else "Uncertain"
            best = max((e.presence for e in self.anchor.places if e.presence is not None), default=None)
            why = f" (best presence {best:.2f})" if best is not None else ""
            return (f"{lead}: no {anchor} found by retrieval{why}, so '{name} {words}' cannot be judged. {text}", ids,
                    min(strength, 0.3))
        if self.unmeasured:
            return (f"Uncertain: the scene has no map coordinates, so '{words}' cannot be measured in metres; ask "
                    f"in pixels (e.g. 'within 300 px of the {anchor}'). {cap} at {_sites(len(self.sites))}: "
                    f"{_listing(self.sites)}.", [e.id for e in self.sites[:MAX_CITED]], 0.3)
        held, n = self.held, len(self.placements)
        ids = _related_ids(held)
        note = " (edge to edge of their matching windows, not measured outlines)"
        if rel.kind in ("nearest", "farthest"):
            p = held[0]
            text = (f"{cap} {words}: {p.site.id} at {p.site.bbox} ({_strength_note(p.site)}{_lonlat(p.site)}), "
                    f"{_gap(p)} the {anchor} at {p.anchor.id}{note}.")
            others = [q for q in self.placements if q is not p]
            if rel.kind == "farthest":
                others.reverse()
            if others:
                text += (f" The other {name} sites, {'nearest' if rel.kind == 'nearest' else 'farthest'} first: "
                         + ", ".join(f"{q.site.id} {_gap(q)} {q.anchor.id}" for q in others[:MAX_LISTED]) + ".")
            return text, _related_ids([p, *others]), _strength(p.site)
        if rel.kind == "distance":
            text = f"{cap} by distance to the nearest {anchor} site, nearest first: " + "; ".join(
                f"{p.site.id} at {p.site.bbox} is {_gap(p)} {p.anchor.id}" for p in held[:MAX_LISTED])
            return text + f"{note}.", ids, min(_strength(p.site) for p in held)
        meaning = " (near: at most the larger site's extent apart, edge to edge)" if rel.kind == "near" else ""
        if not held:
            p = self.placements[0]
            lead = "No" if self.turn.kind == "presence" else "Not found"
            text = (f"{lead}: none of the {_sites(n)} of {name} found lies {words}{meaning}; the nearest, {p.site.id} at "
                    f"{p.site.bbox}, is {_gap(p)} the {anchor} at {p.anchor.id}{note}.")
            if self.turn.kind == "count":
                text = f"{cap} {words}: 0 of the {_sites(n)} found by retrieval{meaning}. " + text
            return text, [p.site.id, p.anchor.id], 0.3
        listing = ", ".join(f"{p.site.id} {p.site.bbox} ({_gap(p)} {p.anchor.id})" for p in held[:MAX_LISTED])
        text = _subset_sentence(self.turn, name, f"{words}{meaning}", len(held), n, listing)
        return text + f"{note}.", ids, min(_strength(p.site) for p in held)


def _related_ids(placements: Sequence[Placement]) -> list[str]:
    """What a relation's answer cites: the target's sites in the order it lists them (what "the second one"
    counts from later), then the anchor sites they were measured to."""
    shown = placements[:MAX_CITED]
    return list(dict.fromkeys([*(p.site.id for p in shown), *(p.anchor.id for p in shown)]))


def _gap(p: Placement) -> str:
    """How far a site is from its anchor site, as a phrase followed by "from" ("about 120 m (240 px) from")."""
    if p.pixels <= 0:
        return "touching or overlapping"
    if p.metres is not None:
        return f"about {_distance_text(p.metres)} ({p.pixels:,.0f} px) from"
    return f"{p.pixels:,.0f} px from"


def _part_words(part: str) -> str:
    """The part of the scene a direction names, as :func:`_in_part` reads it."""
    dx, dy = direction_vector(part)
    if dx == 0 and dy == 0:
        return "the middle third of the scene"
    named = {"top": "north", "bottom": "south", "left": "west", "right": "east"}
    words = [named.get(w, w) for w in part.split("-")]
    if dx and dy:
        return f"the scene's {'-'.join(words)} quadrant"
    return f"the scene's {words[0]}ern half"


def _part_sentence(turn: Turn, report: _Report, inside: list[Evidence]) -> tuple[str, list[str], float]:
    """A target's part of the answer when the question keeps its sites in a part of the scene."""
    part, name, found = report.part or "", report.target, report.result.found
    cap, where = name[:1].upper() + name[1:], f"in the {part} ({_part_words(part)})"
    if not inside:
        nearest = max(found, key=lambda e: _toward(e, part, _result_size(report.result)))
        text = (f"{'No' if turn.kind == 'presence' else 'Not found'}: none of the {_sites(len(found))} of {name} found "
                f"lies {where}; the nearest to it is {nearest.id} at {nearest.bbox}.")
        if turn.kind == "count":
            text = f"{cap} {where}: 0 of the {_sites(len(found))} found by retrieval. {text}"
        return text, [nearest.id], 0.3
    text = _subset_sentence(turn, name, where, len(inside), len(found), _listing(inside))
    return f"{text}.", [e.id for e in inside[:MAX_CITED]], _strength(inside[0])


def _subset_sentence(turn: Turn, name: str, qualified: str, k: int, n: int, listing: str) -> str:
    """"Ponds in the north: 2 of the 4 sites found: ..." as the question's kind asks it (a count says it counts
    places; a presence question answers yes), without the closing full stop."""
    cap = name[:1].upper() + name[1:]
    if turn.kind == "count":
        return (f"{cap} {qualified}: {k} of the {_sites(n)} found by retrieval (a count of places, not of individual "
                f"objects): {listing}")
    if turn.kind == "presence":
        return f"Yes, {name} {qualified} at {k} of the {_sites(n)} found: {listing}"
    return f"{cap} {qualified}: {k} of the {_sites(n)} found: {listing}"


def _compare_sentence(compare: tuple[str, int], report: _Report) -> str:
    """The answer to "more than N X?" from the count of sites found."""
    how, n = compare
    count = len(report.result.found) if report.finding == "found" else 0
    holds = count > n if how == "more" else count < n if how == "fewer" else count >= n
    word = {"more": "more than", "fewer": "fewer than", "at least": "at least"}[how]
    verdict = "Yes" if holds else "No"
    if report.finding == "uncertain":
        verdict = "Uncertain"
    return (f"{verdict}: {count} site{'s' if count != 1 else ''} of {report.target} found, "
            f"{'' if holds else 'not '}{word} {n} (sites, not individual objects).")


WHOLE_SCENE = 0.995
"""Share of the finest level from which a search counts as having seen the whole scene at full detail."""


def _partial_note(reports: list[_Report]) -> str:
    """A sentence when a search saw only part of the scene at full detail (a pyramid descent on an index not yet
    filled): what was not reached can still hold the thing, so a "not found" there is not final."""
    shares = [float(r.result.extras["searched_share"]) for r in reports
              if r.result.ok and r.result.extras.get("searched_share") is not None]
    if not shares or min(shares) >= WHOLE_SCENE:
        return ""
    share = min(shares)
    pct = "under 1%" if share < 0.01 else f"{100 * share:.0f}%"
    return (f"The search looked at {pct} of the scene at full detail (coarse to fine, on an index not yet filled): "
            "places it did not reach may hold more, until `rsrag index` fills the index.")


def _compose(turn: Turn, reports: list[_Report], views: dict[str | None, Evidence], excluded: bool,
             related: _Related | None = None) -> AIMessage:
    sentences, cited, strengths = [], [], []
    for report in reports:
        if related is not None and report is related.report:
            text, ids, strength = related.sentence()
        else:
            text, ids, strength = _target_sentence(turn, report, excluded)
        sentences.append(text)
        cited += [i for i in ids if i not in cited]
        strengths.append(strength)
        if turn.size:
            sentences += [_size_sentence(e) for e in report.places[:3] if e.region is not None]
    if turn.compare is not None:
        sentences += [_compare_sentence(turn.compare, r) for r in reports if r.result.ok]
    partial = _partial_note(reports)
    if partial:
        sentences.append(partial)
    crops = [(source, v) for source, v in views.items() if source in cited]
    if crops:
        sentences.append("Crops: " + ", ".join(f"{v.id} of {source}" for source, v in crops) + ".")
        cited += [v.id for _, v in crops]
    findings = {r.target: r.finding for r in reports if r.finding is not None}
    if related is not None and related.finding is not None:  # the target as related to the anchor
        findings[related.report.target] = related.finding
    for report in reports:  # "are there ponds in the north?": found only where a site lies there
        if report.inside is not None:
            findings[report.target] = "found" if report.inside else "not_found"
    finding = overall_finding(findings)  # type: ignore[arg-type]
    confidence = min(strengths) if strengths else 0.0
    if turn.context and turn.targets:
        asked = " and ".join(turn.targets)
        sentences.append(f"Not checked against {' and '.join(turn.context)}: retrieval searched {asked} alone and "
                         "cannot test relations.")
    text = " ".join(sentences)
    if any(report.result.ok for report in reports):  # nothing was retrieved when every search failed
        text += f" {RETRIEVAL_ONLY}"
    return _answer(text, cited, confidence, finding)


def _answer(text: str, evidence_ids: list[str], confidence: float, finding: Finding | None = None) -> AIMessage:
    args: dict[str, Any] = {"text": text, "evidence_ids": evidence_ids, "confidence": round(float(confidence), 3)}
    if finding is not None:
        args["finding"] = finding
    return _call("answer", args)


def _call(name: str, args: dict[str, Any]) -> AIMessage:
    return _calls([(name, args)])


def _calls(calls: list[tuple[str, dict[str, Any]]]) -> AIMessage:
    return AIMessage(content="", tool_calls=[
        {"name": name, "args": args, "id": f"call_{uuid.uuid4().hex[:12]}", "type": "tool_call"} for name, args in calls
    ])
