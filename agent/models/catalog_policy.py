"""The rule policy's questions across a catalog of scenes ("which scenes show X?", "where are the X?").

With a catalog and no open scene (or a question that asks about scenes), :func:`catalog_turn` decides the
steps: ``find_scenes`` first when the question names a place (a lon/lat box, a point and a radius) or a time
(dates, a year), then one ``search_catalog`` per target (on the scenes found), a zoom on the best site (which
opens its scene), then an answer that names the scene of every site it reports.

It reads the question's place and time with :func:`place_and_time` and the rest with the policy's turn reader;
everything it knows about the tools' outcomes comes from their typed results.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, BaseMessage, SystemMessage

from rsrag.agent.evidence import Evidence
from rsrag.agent.models.policy import (
    MAX_CITED,
    MAX_LISTED,
    RETRIEVAL_ONLY,
    _answer,
    _calls,
    _lonlat,
    _sites,
    _strength,
    _strength_note,
)
from rsrag.agent.models.turns import Turn

if TYPE_CHECKING:
    from rsrag.agent.models.policy import RulePolicy, _Step, _Turn

__all__ = ["asks_across", "catalog_turn", "place_and_time", "scope_of"]

_NUM = r"-?\d+(?:\.\d+)?"
_BOX = re.compile(rf"\[\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*\]")
_POINT = re.compile(
    rf"\b(?:within\s+({_NUM})\s*km\s+(?:of|from|around)|near|around|close\s+to|at)\s+(?:the\s+point\s+)?"
    rf"(?:lon(?:gitude)?\s*)?\(?\s*({_NUM})\s*,?\s*(?:lat(?:itude)?\s*)?({_NUM})\s*\)?", re.IGNORECASE)
_DATE = r"\d{4}-\d{2}-\d{2}(?:T[\d:]+Z?)?"
_BETWEEN = re.compile(rf"\b(?:between|from)\s+({_DATE})\s+(?:and|to|until)\s+({_DATE})", re.IGNORECASE)
_AFTER = re.compile(rf"\b(?:after|since|from)\s+({_DATE})", re.IGNORECASE)
_BEFORE = re.compile(rf"\b(?:before|until|up\s+to)\s+({_DATE})", re.IGNORECASE)
_YEAR = re.compile(r"\b(?:in|during|of|from)\s+((?:19|20)\d{2})\b", re.IGNORECASE)
_ACQUIRED = re.compile(r"\b(?:acquired|taken|captured|imaged|recorded)\b", re.IGNORECASE)
_SCENE_WORDS = re.compile(
    r"\b(?:in\s+)?(?:which|what|any|all|the|these|those|other)?\s*(?:of\s+the\s+)?(?:scenes?|images?|catalog|archive)"
    r"(?:\s+(?:of|in)\s+the\s+(?:catalog|archive))?\s*(?:do\s+|does\s+)?"
    r"(?:show|shows|contain|contains|have|has|hold|holds|include|includes|with|depict|depicts)?\b", re.IGNORECASE)
_ACROSS = re.compile(r"\b(?:scenes?|catalog|archive|images)\b|\bwhere\s+else\b|\bany\s+other\s+scene", re.IGNORECASE)
_NEAR_KM = 10.0
"""Radius of "near" / "around" a point when the question gives none."""


def scope_of(messages: list[BaseMessage]) -> dict[str, Any]:
    """What the thread works on (``scene``, ``catalog``), as the graph's system message declares it."""
    for m in messages:
        if isinstance(m, SystemMessage):
            return dict(m.additional_kwargs.get("rsrag_scope") or {})
    return {}


def asks_across(question: str) -> bool:
    """Whether a question asks about the catalog's scenes rather than the open one ("which scenes...")."""
    return bool(_ACROSS.search(question))


def place_and_time(question: str) -> tuple[dict[str, Any], str]:
    """``find_scenes`` arguments for the place and time a question names (empty when it names none), and the
    question with them taken out."""
    args: dict[str, Any] = {}
    rest = question
    box = _BOX.search(rest)
    if box:
        args["lonlat_bbox"] = [float(v) for v in box.groups()]
        rest = rest[: box.start()] + rest[box.end():]
    point = _POINT.search(rest)
    if point and "lonlat_bbox" not in args:
        radius, lon, lat = point.groups()
        if -180 <= float(lon) <= 180 and -90 <= float(lat) <= 90:
            args["point"] = [float(lon), float(lat)]
            args["radius_km"] = float(radius) if radius else _NEAR_KM
            rest = rest[: point.start()] + rest[point.end():]
    between = _BETWEEN.search(rest)
    if between:
        args["start"], args["end"] = between.group(1), _end_of(between.group(2))
        rest = rest[: between.start()] + rest[between.end():]
    else:
        for pattern, key in ((_AFTER, "start"), (_BEFORE, "end")):
            found = pattern.search(rest)
            if found:
                args[key] = found.group(1) if key == "start" else _end_of(found.group(1))
                rest = rest[: found.start()] + rest[found.end():]
        year = _YEAR.search(rest) if "start" not in args and "end" not in args else None
        if year:
            args["start"], args["end"] = f"{year.group(1)}-01-01", f"{year.group(1)}-12-31T23:59:59"
            rest = rest[: year.start()] + rest[year.end():]
    if args:
        rest = _ACQUIRED.sub(" ", rest)
    return args, " ".join(rest.split())


def _end_of(day: str) -> str:
    return f"{day}T23:59:59" if "T" not in day else day


def _targets(reader: Any, question: str) -> tuple[Turn, list[str]]:
    """The question's turn and its targets, scene words left out ("which scenes show tanks" -> tanks)."""
    text = _SCENE_WORDS.sub(" ", question)
    text = " ".join(text.split()) or question
    turn = reader(text if text.strip(" ?!.,;:") else question)
    targets = [t for t in turn.targets if not re.fullmatch(r"(?:scenes?|images?|catalog|archive|\d+)", t.strip())]
    return turn, targets


def catalog_turn(policy: RulePolicy, question: str, now: _Turn) -> AIMessage:
    """The next step of a question across the catalog (see the module docstring)."""
    where, rest = place_and_time(question)
    turn, targets = _targets(policy.turn_reader, rest)
    finds = [s for s in now.steps if s.name == "find_scenes"]
    if where and not finds:
        return _calls([("find_scenes", where)])
    chosen: list[dict[str, Any]] | None = None
    if finds:
        last = finds[-1].result
        if not last.ok:
            return _answer(f"Could not search the catalog's scenes: {last.message}.", [], 0.0)
        chosen = list(last.extras.get("scenes") or [])
        if not chosen:
            return _answer(f"No scene of catalog {last.extras.get('catalog')!r} matches {_conditions(where)}: "
                           "nothing was searched.", [], 0.0, "not_found" if targets else None)
    if not targets:
        listing = chosen if chosen is not None else []
        if not listing:
            return _calls([("find_scenes", {})])
        names = ", ".join(f"{s['id']} ({s['source']})" for s in listing[:MAX_LISTED])
        more = f" and {len(listing) - MAX_LISTED} more" if len(listing) > MAX_LISTED else ""
        return _answer(f"{len(listing)} scene(s) of the catalog match {_conditions(where)}: {names}{more}. "
                       "Name something to look for in them, e.g. 'which of these scenes show storage tanks?'.", [], 0.5)
    searched = {_target(s): s for s in now.steps if s.name == "search_catalog"}
    todo = [t for t in targets if t not in searched]
    if todo:
        calls = []
        for t in todo:
            args: dict[str, Any] = {"phrases": [t]}
            if chosen is not None:
                args["scenes"] = [s["id"] for s in chosen]
            calls.append(("search_catalog", args))
        return _calls(calls)
    zooms = [s for s in now.steps if s.name == "zoom"]
    if not zooms:
        best = [searched[t].result.found[0] for t in targets if searched[t].result.ok and searched[t].result.found]
        if best:  # one zoom per step: a zoom opens its scene, and each step has one open scene
            return _calls([("zoom", {"evidence_id": best[0].id})])
    views = {s.args.get("evidence_id"): s.result.views[0] for s in zooms if s.result.ok and s.result.views}
    return _compose(turn, targets, searched, views, where)


def _target(step: _Step) -> str:
    phrases = step.args.get("phrases") or step.result.phrases
    return str(phrases[0]) if phrases else ""


def _conditions(where: dict[str, Any]) -> str:
    parts = []
    if "lonlat_bbox" in where:
        parts.append(f"the box {where['lonlat_bbox']}")
    if "point" in where:
        parts.append(f"within {where.get('radius_km', 0):g} km of lon {where['point'][0]} lat {where['point'][1]}")
    if "start" in where or "end" in where:
        parts.append(f"acquired {where.get('start', '...')} to {where.get('end', '...')}")
    return " and ".join(parts) or "the question"


def _scene_of(ev: Evidence) -> str:
    return f"scene {ev.scene_name}" + (f" ({ev.scene_source})" if ev.scene_source and ev.scene_id else "")


def _compose(turn: Turn, targets: list[str], searched: dict[str, _Step], views: dict[Any, Evidence],
             where: dict[str, Any]) -> AIMessage:
    sentences: list[str] = []
    cited: list[str] = []
    strengths: list[float] = []
    findings = []
    for name in targets:
        r = searched[name].result
        if not r.ok:
            sentences.append(f"Could not search the catalog for {name}: {r.message}.")
            continue
        scenes = list(r.extras.get("scenes") or [])
        matching = [s for s in scenes if s.get("found")]
        by_id = {e.id: e for e in r.evidence}
        within = f" (scenes {_conditions(where)})" if where else ""
        skipped = r.extras.get("skipped") or []
        skip_note = f" {len(skipped)} scene(s) not indexed, not searched: {', '.join(skipped[:MAX_LISTED])}." if skipped else ""
        findings.append(r.finding)
        if matching:
            parts = []
            for s in matching:
                sites = [by_id[i] for i in s.get("ids") or [] if i in by_id]
                listing = ", ".join(f"{e.id} {e.bbox}{_lonlat(e)}" for e in sites[:MAX_LISTED])
                rest = len(sites) - MAX_LISTED
                parts.append(f"scene {s['id']} ({s['source']}): {_sites(len(sites))}: {listing}"
                             + (f" and {rest} more" if rest > 0 else ""))
                cited += [e.id for e in sites[: max(1, MAX_CITED // max(1, len(matching)))] if e.id not in cited]
            best = r.found[0]
            absent = [s["id"] for s in scenes if not s.get("found")]
            lead = (f"{name[:1].upper()}{name[1:]} found in {len(matching)} of {len(scenes)} scenes searched{within}: "
                    + "; ".join(parts) + f". The strongest is {best.id} in {_scene_of(best)} ({_strength_note(best)}).")
            if absent:
                lead += f" Not found in: {', '.join(absent[:MAX_LISTED])}" + (" and others." if len(absent) > MAX_LISTED else ".")
            sentences.append(lead + skip_note)
            strengths.append(_strength(best))
        else:
            close = r.unconfirmed[:3]
            text = f"Not found: no {name} in any of the {len(scenes)} scenes searched{within} by retrieval"
            if r.finding == "uncertain" or r.finding is None:
                text = f"Uncertain: no {name} confirmed in the {len(scenes)} scenes searched{within}"
            if close:
                text += ". Closest candidates, unconfirmed: " + ", ".join(f"{e.id} in {_scene_of(e)} {e.bbox}" for e in close)
                cited += [e.id for e in close if e.id not in cited]
            sentences.append(text + "." + skip_note)
            top = max((e.presence for e in close if e.presence is not None), default=None)
            strengths.append(round(1.0 - top, 3) if top is not None else 0.3)
    crops = [(source, v) for source, v in views.items() if source in cited]
    if crops:
        sentences.append("Crops: " + ", ".join(f"{v.id} of {source} (scene {v.scene_name})" for source, v in crops) + ".")
        cited += [v.id for _, v in crops]
    values = {f for f in findings if f is not None}
    finding = None if not values else "found" if values == {"found"} else "not_found" if values == {"not_found"} else "uncertain"
    confidence = min(strengths) if strengths else 0.0
    return _answer(" ".join(sentences) + f" {RETRIEVAL_ONLY}", cited, confidence, finding)  # type: ignore[arg-type]
