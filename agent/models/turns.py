"""What an analyst's question asks, for the rule policy: the targets, the kind of answer, references.

:func:`read_turn` turns a question into a :class:`Turn`:

* ``kind``: ``presence`` ("is there an X?", "are there any X?", "does the scene contain X?"), ``count`` ("how
  many X?", "count the X", "number of X"), else ``where`` ("where are the X?", "find X", "X").
* ``targets``: the things asked about, one per object named ("storage tanks and airports" is two), each the
  object's words only: request words ("big", "other", "elsewhere", "closer"...) and function words are
  dropped (:func:`rsrag.tools.fastpath.extract_key_phrases`); a clause's other objects are its ``context``
  ("next to the terminal building"), not targets.
* references to earlier evidence: an ``ordinal`` ("the second one", "the 3rd site", "number 2", "the last
  one"), ``this`` ("that one", "this one", "it" when nothing else is named), a ``direction`` ("the one in
  the north-west", "top left"), ``closer`` ("zoom closer", "zoom in"), ``more`` ("show me more", "others",
  "any other X", "elsewhere"), ``size`` ("how big is it?"), ``distance`` ("how far apart are they?", "the
  distance between them").
* ``compare``: "are there more than 3 X?", "at least 2 X?" (a count, compared); ``coordinates`` with a plural
  reference ("give me their coordinates"): the reported places' map coordinates.
* ``place``: coordinates to look at ("zoom on 1000 500 1300 800", "what is at pixel 1200, 600", "zoom to lon
  16.66 lat 46.86"); ``wider``: "zoom out".
* ``each``: "show me each of them", "zoom on them all": every place of the last search, zoomed on.
* ``thorough``: "look harder", "search the whole image": the last target again (the answer says how much of
  the scene was searched and what fills the rest).
* ``extreme``: "the biggest one", "the smallest" (``largest`` / ``smallest``): the reported site of that extent.
* ``order``: how to order a list of places: from a side ("list them from north to south": ``north``, the side
  the list starts from) or by extent or strength ("sort them by size": ``largest``; "smallest first"; "rank
  them by confidence": ``strongest``); with a target ("where are the biggest ponds?") an extreme orders the
  sites found, largest first.
* ``top``: the best N ("show me the top 2", "the 3 strongest ones", "best three"): the first N places.
* ``overview``: a question about the whole scene that names nothing ("what is in this image?", "describe
  the scene").
* ``part``: a part of the scene the target's sites are kept in ("how many ponds are in the north?", "are there
  ponds in the south-west?", "where are the ponds in the east?"), where a ``direction`` with a singular target
  picks the one site furthest that way ("the church in the top left", "the northernmost pond").
* ``relation``: where the target (or the last one: "which of them is nearest to the bridge?") lies relative
  to another object, the *anchor*, which is searched too
  (:class:`Relation`): ``nearest`` / ``farthest`` ("the pond nearest to the bridge", "the nearest pond to the
  bridge", "which tank is furthest from the port?"), ``near`` ("ponds near the river", "next to", "close to",
  "beside", "adjacent to"), ``within`` ("storage tanks within 500 m of the port", "less than 2 km from", km, m or px), ``side``
  ("the ponds north of the river", "south-west of") and ``distance`` ("how far is the pond from the bridge?",
  "how close is the pond to the bridge?", "the distance between the pond and the bridge").

It reads the analyst's words only (never a tool's output), with word lists, not a language model: it is
the offline policy's understanding, and says nothing it did not match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from rsrag.agent.evidence import EVIDENCE_ID
from rsrag.tools.errors import QueryError
from rsrag.tools.fastpath import extract_key_phrases, is_content_word

TurnKind = Literal["where", "presence", "count"]

_ORDINALS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
    "ninth": 9, "tenth": 10, "1st": 1, "2nd": 2, "3rd": 3, "last": -1, "strongest": 1, "weakest": -1,
}
_ORDINAL = re.compile(
    r"\b(?:the\s+)?(first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|last|strongest|weakest|"
    r"\d+(?:st|nd|rd|th))"
    r"(?:\s+(?:one|site|place|region|area|candidate|match|result|location))?\b"
    r"|\b(?:number|no\.?|site|#)\s*(\d+)\b"
)
_THIS = re.compile(r"\b(?:that|this|the same)\s+(?:one|site|place|region|area)\b|\b(?:it|that)\b|"
                   r"\bthis\b(?!\s+(?:image|scene|picture|photo|map|mosaic|raster|file)\b)")
_CLOSER = re.compile(r"\bzoom(?:ed)?\b|\bcloser\b|\benlarge\b|\bmagnify\b|\bmore detail\b|\bclose[- ]up\b")
_MORE = re.compile(r"\b(?:show\s+me\s+)?more\b|\bothers?\b|\banother\b|\belsewhere\b|\belse\b|\badditional\b|"
                   r"\bthe rest\b|\bremaining\b")
_OVERVIEW = re.compile(r"\bdescribe\b|\boverview\b|\bsummar(?:y|ise|ize)\b|\bwhat(?:'s|\s+is|\s+do\s+you\s+see|"
                       r"\s+can\s+you\s+see|\s+does\s+(?:it|the\s+(?:image|scene))\s+show)\b")
_COMPARE = re.compile(r"\b(more|fewer|less)\s+than\s+(\d+)\b|\bat\s+least\s+(\d+)\b")
_COORDINATES = re.compile(r"\bcoordinates?\b|\blat(?:itude)?s?\b|\blon(?:gitude)?s?\b|\bwhere\s+exactly\b|"
                          r"\bexact\s+(?:location|position)s?\b|\bgps\b")
_PLURAL = re.compile(r"\b(?:they|them|their|these|those)\b")
_PLACE_VERB = re.compile(r"\bzoom(?:ed)?\b|\bshow\b|\bgo\s+to\b|\bwhat(?:'s|\s+is)\s+(?:at|there\s+at)\b|\blook\s+at\b|"
                         r"\bcentre\s+on\b|\bcenter\s+on\b")
_NUMBER = r"(-?\d+(?:\.\d+)?)"
_LONLAT = re.compile(rf"\blon(?:gitude)?\s*=?\s*{_NUMBER}\s*,?\s*(?:and\s+)?\blat(?:itude)?\s*=?\s*{_NUMBER}|"
                     rf"\blat(?:itude)?\s*=?\s*{_NUMBER}\s*,?\s*(?:and\s+)?\blon(?:gitude)?\s*=?\s*{_NUMBER}")
_WIDER = re.compile(r"\bzoom(?:ed)?\s+out\b|\bwider\b|\bfurther\s+out\b|\bless\s+close\b")
_WHOLE = re.compile(r"\bshow\s+(?:me\s+)?the\s+(?:whole|entire|full)\s+(?:image|scene|picture|mosaic)\b")
_EXTREME = re.compile(r"\b(biggest|largest|smallest|tiniest)\b")
_EXTREMES = {"biggest": "largest", "largest": "largest", "smallest": "smallest", "tiniest": "smallest"}
_EACH = re.compile(r"\b(?:each|every|all)\s+(?:one\s+)?of\s+them\b|\bthem\s+all\b")
_EACH_OTHER = re.compile(r"\b(?:each\s+other|one\s+another)\b")
_DISTANCE = re.compile(r"\bhow\s+far\b|\bdistances?\b|\bapart\b|\b(?:near|close\s+to|far\s+from)\s+(?:each\s+other|one\s+another)\b")
_THOROUGH = re.compile(r"\blook\s+harder\b|\bsearch\b.*\b(?:whole|entire)\s+(?:image|scene|picture|mosaic)\b|"
                       r"\beverywhere\b|\bthoroughly\b|\bsearch\s+(?:it\s+)?again\b")
_SIZE = re.compile(r"\bhow\s+(?:big|large|wide|long|small)\b|\bsize\b|\bextent\b|\bhow much area\b|\bdimensions?\b|"
                   r"\b(?:the\s+)?area\s+of\b")
_PRESENCE = re.compile(r"^(?:and\s+)?(?:is|are)\s+there\b|\bany\b|^(?:and\s+)?(?:does|do)\s+(?:the|this)\s+(?:scene|image|picture)"
                       r"\s+(?:contain|have|show)\b|^(?:can|could)\s+you\s+see\b|^(?:do|can)\s+(?:i|we)\s+see\b")
_COUNT = re.compile(r"\bhow\s+many\b|\bcount\b|\bnumber\s+of\b|\bhow\s+much\b")
_DIRECTIONS: dict[str, tuple[float, float]] = {
    "north-west": (-1, -1), "north-east": (1, -1), "south-west": (-1, 1), "south-east": (1, 1),
    "north": (0, -1), "south": (0, 1), "east": (1, 0), "west": (-1, 0),
    "top-left": (-1, -1), "top-right": (1, -1), "bottom-left": (-1, 1), "bottom-right": (1, 1),
    "top": (0, -1), "bottom": (0, 1), "left": (-1, 0), "right": (1, 0),
    "centre": (0, 0), "center": (0, 0), "middle": (0, 0),
}
_DIRECTION = re.compile(
    r"\b(north|south)[\s-]?(east|west)(?:ern(?:most)?)?\b|\b(north|south|east|west)(?:ern(?:most)?)?\b|"
    r"\b(top|upper|bottom|lower)[\s-]?(left|right)\b|\b(top|bottom|upper|lower|left|right|centre|center|middle)\b"
)
_IN_PART = re.compile(r"\bin\s+(?:the\s+)?(?:far\s+)?(?:north|south|east|west|top|bottom|upper|lower|left|right|centre|"
                      r"center|middle)")
_SIDE = r"(north|south|east|west|top|bottom|left|right)(?:ern)?"
_ORDER_SIDE = re.compile(rf"\bfrom\s+(?:the\s+)?{_SIDE}\s+to\s+(?:the\s+)?{_SIDE}\b")
_CRITERION = r"\bby\s+(size|area|extent|strength|confidence|presence|score)\b"
_ORDER_BY = re.compile(rf"\b(?:sort|order|rank|list|arrange)\w*\b.*?{_CRITERION}")
_BY = re.compile(_CRITERION)  # what is cut from the question: "list the ponds by size" still names ponds
_ORDER_FIRST = re.compile(r"\b(?:from\s+(?:the\s+)?)?(biggest|largest|smallest|tiniest|strongest|weakest)(?:\s+(?:one|site)s?)?"
                          r"\s+(?:first|to\s+(?:the\s+)?(?:biggest|largest|smallest|tiniest|strongest|weakest))\b")
_ORDER_WORDS = {"size": "largest", "area": "largest", "extent": "largest", "biggest": "largest", "largest": "largest",
                "smallest": "smallest", "tiniest": "smallest", "weakest": "weakest"}
_SIDES = {"top": "north", "bottom": "south", "left": "west", "right": "east"}
_COUNT_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
                "ten": 10}
_N = r"(\d+|one|two|three|four|five|six|seven|eight|nine|ten)"
_TOP = re.compile(rf"\b(?:top|best)\s+{_N}\b|\b{_N}\s+(?:best|strongest|most\s+likely)\b")
_UNIT = r"(?P<unit>km|kilomet(?:er|re)s?|m|met(?:er|re)s?|px|pixels?)"
_RELATION = re.compile(
    r"\b(?P<nearest>nearest|closest)\b(?:\s+(?:to|from)\b)?|"
    r"\b(?P<farthest>farthest|furthest)\b(?:\s+away)?(?:\s+from\b)?|"
    rf"\b(?:within|less\s+than|under|at\s+most|no\s+more\s+than)\s+(?P<limit>\d+(?:\.\d+)?)\s*{_UNIT}\s+(?:of|from|away\s+from)\b|"
    r"\b(?P<side>north|south|east|west)(?:[\s-]?(?P<side2>east|west))?\s+of\b|"
    r"\b(?P<near>near(?:by)?|next\s+to|close\s+to|beside|adjacent\s+to|alongside)\b"
    r"(?!\s+(?:each\s+other|one\s+another)\b)"
)
_HOW_FAR = re.compile(r"\bhow\s+(?:far|close|near)\s+(?:away\s+)?(?:is|are)\s+(?P<target>.+?)\s+(?:from|to)\s+(?P<anchor>.+)$|"
                      r"\bdistances?\s+(?:between|from)\s+(?P<target2>.+?)\s+(?:and|to)\s+(?P<anchor2>.+)$")
_BACK = re.compile(r"\b(?:they|them|these|those|which\s+one|which|one|ones)\b")
_TO = re.compile(r"\b(?:to|from)\b")
_SPLIT = re.compile(r"\s*(?:[,;]|\?|\band\b|\bor\b|\bas well as\b|\bplus\b|\balso\b)\s*")


@dataclass(frozen=True)
class Relation:
    """Where the asked target lies relative to another object named in the question (the anchor).

    Attributes:
        kind: ``nearest`` / ``farthest`` (the one target site nearest to / farthest from any anchor site),
            ``near`` (the target sites near an anchor site), ``within`` (within ``limit`` of one), ``side``
            (on the ``side`` of one: ``north``, ``south-west``...) or ``distance`` (how far each target site is
            from the nearest anchor site).
        anchor: the anchor object's phrase ("bridge" in "the pond nearest to the bridge").
        limit: for ``within``: the distance, in metres (``unit`` "m") or pixels (``unit`` "px").
        unit: ``m`` or ``px``.
        side: for ``side``: the direction from the anchor.
    """

    kind: Literal["nearest", "farthest", "near", "within", "side", "distance"]
    anchor: str
    limit: float | None = None
    unit: str = "m"
    side: str | None = None

    @property
    def words(self) -> str:
        """The relation as an answer says it ("nearest to the bridge", "within 500 m of the port")."""
        if self.kind == "within":
            amount = f"{self.limit:g} {self.unit}" if self.unit == "px" or (self.limit or 0) < 1000 else \
                f"{(self.limit or 0) / 1000:g} km"
            return f"within {amount} of the {self.anchor}"
        if self.kind == "side":
            return f"{self.side} of the {self.anchor}"
        return {"nearest": "nearest to", "farthest": "farthest from", "near": "near",
                "distance": "from"}[self.kind] + f" the {self.anchor}"


@dataclass(frozen=True)
class Turn:
    """One question, as the rule policy understands it (see the module docstring)."""

    question: str
    kind: TurnKind = "where"
    targets: list[str] = field(default_factory=list)
    context: list[str] = field(default_factory=list)
    ordinal: int | None = None
    this: bool = False
    direction: str | None = None
    closer: bool = False
    more: bool = False
    size: bool = False
    distance: bool = False
    overview: bool = False
    extreme: str | None = None
    thorough: bool = False
    compare: tuple[str, int] | None = None
    coordinates: bool = False
    plural: bool = False
    place: dict[str, tuple[float, ...]] | None = None
    wider: bool = False
    each: bool = False
    order: str | None = None
    top: int | None = None
    relation: Relation | None = None
    part: str | None = None

    @property
    def refers_back(self) -> bool:
        """Whether the question points at earlier evidence rather than naming a new target (with a target,
        an ordinal or a direction picks among that target's new sites: "the church in the top left")."""
        return not self.targets and (self.ordinal is not None or self.direction is not None or self.this
                                     or self.closer or self.more or self.size or self.distance or self.wider
                                     or self.each or self.extreme is not None or (self.coordinates and self.plural)
                                     or self.order is not None or self.top is not None)


def _direction(text: str) -> str | None:
    match = _DIRECTION.search(text)
    if not match:
        return None
    ns, ew, single, tb, lr, word = match.groups()
    if ns:
        return f"{ns}-{ew}"
    if single:
        return single
    if tb:
        return f"{'top' if tb in ('top', 'upper') else 'bottom'}-{lr}"
    return {"upper": "top", "lower": "bottom"}.get(word, word)


def direction_vector(name: str) -> tuple[float, float]:
    """``(dx, dy)`` of a direction word (x east, y south: image rows grow southwards in north-up scenes)."""
    return _DIRECTIONS[name]


def _order(low: str) -> str | None:
    """How a list of places is to be ordered (see the module docstring), or ``None``."""
    side = _ORDER_SIDE.search(low)
    if side:
        return _SIDES.get(side.group(1), side.group(1))
    by = _ORDER_BY.search(low) or _ORDER_FIRST.search(low)
    if by:
        return _ORDER_WORDS.get(by.group(1), "strongest")
    return None


def _top(low: str) -> int | None:
    match = _TOP.search(low)
    if not match:
        return None
    word = match.group(1) or match.group(2)
    return int(word) if word.isdigit() else _COUNT_WORDS[word]


def _targets(question: str) -> tuple[list[str], list[str]]:
    """The objects named, one phrase each, in the order asked: the first object of each clause (clauses are
    cut at commas, "and", "or"...), and the other objects of those clauses, their context ("airplanes parked
    next to the terminal building" asks for airplanes, in the context of a terminal building): retrieval
    cannot check a relation, so the context is not searched, and the answer says so."""
    targets: list[str] = []
    context: list[str] = []
    for clause in _SPLIT.split(EVIDENCE_ID.sub(" ", question).lower()):
        words = re.findall(r"[a-z0-9][a-z0-9'\-]*", clause)
        if not _has_content(words):  # nothing but function and request words ("show me more", "how big is it")
            continue
        phrases = sorted(extract_key_phrases(clause), key=lambda p: (clause.find(p) % (len(clause) + 1), -len(p)))
        if phrases and phrases[0] not in targets:
            targets.append(phrases[0])
        context += [p for p in phrases[1:] if p not in context and not any(p in t or t in p for t in targets)]
    return targets, [c for c in context if c not in targets]


def _has_content(words: list[str]) -> bool:
    return any(is_content_word(w) and not w.isdigit() for w in words)


def _place(low: str) -> dict[str, tuple[float, ...]] | None:
    """A place given by coordinates with a verb that asks to see it: ``{"lonlat": (lon, lat)}``,
    ``{"bbox": (x0, y0, x1, y1)}`` (four numbers) or ``{"point": (x, y)}`` (two numbers, pixels)."""
    if not _PLACE_VERB.search(low):
        return None
    ll = _LONLAT.search(low)
    if ll:
        lon, lat = (ll.group(1), ll.group(2)) if ll.group(1) is not None else (ll.group(4), ll.group(3))
        return {"lonlat": (float(lon), float(lat))}
    plain = re.sub(r"\b\d+(?:st|nd|rd|th)\b", " ", EVIDENCE_ID.sub(" ", low))  # ordinals are not coordinates
    numbers = [float(n) for n in re.findall(_NUMBER, plain)]
    if len(numbers) == 4:
        return {"bbox": tuple(numbers)}
    if len(numbers) == 2:
        return {"point": tuple(numbers)}
    return None


def _phrase(text: str) -> str | None:
    """The object a piece of a question names (its first key phrase), or ``None`` when it names none."""
    clause = _SPLIT.split(EVIDENCE_ID.sub(" ", text).strip())[0]
    words = re.findall(r"[a-z0-9][a-z0-9'\-]*", clause)
    if not _has_content(words):
        return None
    return extract_key_phrases(clause)[0]


def _relation(low: str) -> tuple[Relation | None, str]:
    """The relation a question asks (see :class:`Relation`) and the question without the anchor's part (what
    the target, the kind and the rest are read from), or ``(None, low)``."""
    far = _HOW_FAR.search(low)
    if far:  # "how far is the pond from the bridge?", "the distance between the pond and the bridge"
        target, anchor = far.group("target") or far.group("target2"), _phrase(far.group("anchor") or far.group("anchor2"))
        if anchor and _phrase(target):
            return Relation("distance", anchor), f"where {target}"
    match = _RELATION.search(low)
    if not match:
        return None, low
    before, after = low[: match.start()], low[match.end():]
    kind: str
    limit, unit, side = None, "m", None
    if match.group("nearest") or match.group("farthest"):
        kind = "nearest" if match.group("nearest") else "farthest"
        joined = _TO.search(after)
        if not _TO.search(match.group(0)) and joined and _phrase(after[: joined.start()]):
            before, after = f"{before} {after[: joined.start()]}", after[joined.end():]  # "the nearest pond to X"
    elif match.group("limit"):
        kind, unit = "within", "px" if match.group("unit").startswith("p") else "m"
        limit = float(match.group("limit")) * (1000.0 if match.group("unit").startswith("k") else 1.0)
    elif match.group("side"):
        kind = "side"
        side = match.group("side") + (f"-{match.group('side2')}" if match.group("side2") else "")
    else:
        kind = "near"
    anchor = _phrase(after)
    # "is it near?", "what is nearest?": no two objects; "which of them is nearest to the bridge?": the last target
    if anchor is None or (_phrase(before) is None and not _BACK.search(before)):
        return None, low
    rest = _SPLIT.split(after.strip(), maxsplit=1)
    tail = f" and {rest[1]}" if len(rest) > 1 and rest[1] else ""
    return Relation(kind, anchor, limit, unit, side), f"{before}{tail}"  # type: ignore[arg-type]


def read_turn(question: str) -> Turn:
    """What ``question`` asks (see the module docstring).

    Raises:
        QueryError: the question is empty.
    """
    text = " ".join((question or "").split())
    if not text.strip(" ?!.,;:"):
        raise QueryError("the question is empty: ask about something in the image, e.g. 'where are the ships?'")
    low = text.lower()
    order, top = _order(low), _top(low)
    if order is not None or top is not None:  # "from north to south", "the top 2": no direction, ordinal or object
        low = _TOP.sub(" ", _ORDER_FIRST.sub(" ", _BY.sub(" ", _ORDER_SIDE.sub(" ", low))))
        asked_text = " ".join(low.split())
    else:
        asked_text = text
    relation, related = _relation(" ".join(EVIDENCE_ID.sub(" ", asked_text).lower().split()))  # ids are no objects
    if relation is not None:  # "the pond nearest to the bridge": the anchor's words are not the target's
        low = asked_text = related
    ordinal = None
    match = _ORDINAL.search(low)
    if match:
        word = match.group(1) or match.group(2)
        ordinal = _ORDINALS.get(word) if word in _ORDINALS else int(re.sub(r"\D", "", word) or 0) or None
    cmp = _COMPARE.search(low)
    compare = None if cmp is None else (("more" if cmp.group(1) == "more" else "fewer") if cmp.group(1) else "at least",
                                        int(cmp.group(2) or cmp.group(3)))
    asked = _COMPARE.sub(" ", asked_text) if cmp else asked_text  # "more than 3 ponds" asks about ponds
    place = _place(low)
    if place is not None:  # "zoom on 1000 500 1300 800", "what is at lon 16.6 lat 46.8": a place, not an object
        asked = ""
    targets, context = _targets(asked) if asked else ([], [])
    kind: TurnKind = "count" if _COUNT.search(low) or cmp else "presence" if _PRESENCE.search(low) else "where"
    direction = _direction(low)
    # "how many ponds are in the north?", "where are the ponds in the south-west?": the sites in that part of the
    # scene; "the church in the top left", "where is the pond in the north?": the one furthest that way
    part = direction if (direction is not None and targets and _IN_PART.search(low)
                         and (kind != "where" or _plural(targets[0]))) else None
    return Turn(
        question=text, kind=kind, targets=targets, context=context, ordinal=ordinal, this=bool(_THIS.search(low)),
        direction=direction, closer=bool(_CLOSER.search(low)),
        more=bool(_MORE.search(_EACH_OTHER.sub(" ", _COMPARE.sub(" ", low)))),  # not "each other", "more than 3"
        size=bool(_SIZE.search(low)), distance=bool(_DISTANCE.search(low)),
        overview=not targets and place is None and bool(_OVERVIEW.search(low) or _WHOLE.search(low)),
        thorough=bool(_THOROUGH.search(low)), compare=compare, coordinates=bool(_COORDINATES.search(low)),
        plural=bool(_PLURAL.search(low)), place=place, wider=bool(_WIDER.search(low)), each=bool(_EACH.search(low)),
        extreme=_EXTREMES[extreme.group(1)] if (extreme := _EXTREME.search(low)) else None, order=order, top=top,
        relation=relation, part=part,
    )


def _plural(phrase: str) -> bool:
    """Whether an object phrase names several things ("ponds", "storage tanks"; not "grass", "church")."""
    last = phrase.split()[-1] if phrase.split() else ""
    return last.endswith("s") and not last.endswith(("ss", "us", "is"))
