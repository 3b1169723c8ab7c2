"""How the CLI shows answers, evidence and coordinates: the same fields as the JSON, in tables that fit.

Tables wrap long cells instead of cutting them (every column folds; boxes are written ``x0, y0, x1, y1`` so
they break at the commas), and numbers have a fixed precision: map coordinates 2 decimals (centimetres in a
metric CRS), degrees 6 (about 0.1 m), confidences 2. Evidence records with the same box (a site, the window
it was found by, the zoom on it) are one place on screen: :func:`places` groups them, so ``/evidence`` and
an answer's table list each place once with every id that names it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table
from rich.text import Text

from rsrag.agent.evidence import Answer, Evidence, lonlat_box

FINDING_TEXT = {"found": "found", "not_found": "not found", "uncertain": "uncertain"}
FINDING_STYLE = {"found": "bold green", "not_found": "bold", "uncertain": "bold yellow"}


def fixed(value: float, decimals: int = 2) -> str:
    """A number with a fixed count of decimals (never scientific notation)."""
    return f"{value:.{decimals}f}"


def box_text(values: Sequence[float], decimals: int = 0) -> str:
    """A box or coordinate list as ``a, b, c, d`` (integers for pixels, fixed decimals otherwise)."""
    return ", ".join(str(int(v)) if decimals == 0 else fixed(v, decimals) for v in values)


@dataclass
class Place:
    """Evidence records that name one box: the record shown first (a search result before a zoom on it)
    and every id, path, confidence and crop among them."""

    primary: Evidence
    records: list[Evidence] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.records]

    @property
    def paths(self) -> list[str]:
        return list(dict.fromkeys(e.path for e in self.records))

    @property
    def confidence(self) -> float | None:
        values = [e.confidence for e in self.records if e.confidence is not None]
        return max(values) if values else None

    @property
    def presence(self) -> float | None:
        values = [e.presence for e in self.records if getattr(e, "presence", None) is not None]
        return max(values) if values else None

    @property
    def windows(self) -> int:
        return max((len(getattr(e, "members", ()) or ()) for e in self.records), default=0) or 1

    @property
    def crop(self) -> str | None:
        return next((e.crop for e in self.records if e.crop), None)


def places(evidence: Sequence[Evidence]) -> list[Place]:
    """Group records by what they point at (scene and pixel box; a knowledge entry; a scene), in first-seen
    order; a zoom inside a place found earlier joins it. A place's primary record is its first non-zoom
    record (what found it)."""
    groups: dict[tuple[object, ...], Place] = {}
    for ev in evidence:
        if ev.region is not None and ev.kind == "region":
            key: tuple[object, ...] = ("region", ev.region.scene, ev.region.box.as_tuple())
            if ev.path == "zoom" and key not in groups:  # a closer look inside a place found earlier is that place
                home = next((k for k, p in groups.items() if k[0] == "region" and k[1] == ev.region.scene
                             and p.primary.path != "zoom" and p.primary.region is not None
                             and p.primary.region.box.contains(ev.region.box)), None)
                key = home or key
        elif ev.kind == "knowledge":
            key = ("knowledge", ev.knowledge_id)
        else:
            key = (ev.kind, ev.id)
        place = groups.setdefault(key, Place(primary=ev))
        place.records.append(ev)
        if place.primary.path == "zoom" and ev.path != "zoom":
            place.primary = ev
    return list(groups.values())


def fitting_table(*columns: str, title: str | None = None, show_header: bool = True) -> Table:
    """A table whose every column wraps (folds) long cells to fit the terminal instead of cutting them."""
    table = Table(title=title, expand=False, show_header=show_header)
    for name in columns:
        table.add_column(name, overflow="fold")
    return table


def places_table(items: Sequence[Place], title: str | None = None, *, crops: bool = False) -> Table:
    """One row per place: number, ids, its scene (when the places lie in several scenes or come from a catalog),
    what it was searched for (when the places answer several targets: "ponds" and "bridges"), how it was found,
    box (px), lon/lat, confidence, presence, windows."""
    lonlat = any(lonlat_box(p.primary) for p in items)
    presence = any(p.presence is not None for p in items)
    fingerprints = {p.primary.region.scene for p in items if p.primary.region is not None}
    scenes = len(fingerprints) > 1 or any(getattr(p.primary, "scene_id", None) for p in items)  # across a catalog
    queries = len({p.primary.query for p in items if p.primary.kind == "region" and p.primary.query}) > 1
    columns = ["#", "ids"] + (["scene"] if scenes else []) + (["for"] if queries else []) + ["path", "box x0, y0, x1, y1 (px)"]
    columns += (["lon/lat W, S, E, N"] if lonlat else []) + ["conf."]
    columns += (["presence"] if presence else []) + ["win."] + (["crop"] if crops else [])
    table = fitting_table(*columns, title=title)
    for i, p in enumerate(items, 1):
        ev = p.primary
        if ev.kind == "knowledge":
            where = f"entry {ev.knowledge_id}: {ev.title or ''}".strip()
        else:
            where = box_text(ev.bbox or [])
        row = [str(i), " ".join(p.ids)] + ([getattr(ev, "scene_name", None) or ""] if scenes else [])
        row += ([ev.query or ""] if queries else []) + ["+".join(p.paths), where]
        if lonlat:
            ll = lonlat_box(ev)
            row.append(box_text(ll, 6) if ll else "")
        row.append(fixed(p.confidence) if p.confidence is not None else "")
        if presence:
            row.append(fixed(p.presence) if p.presence is not None else "")
        row.append(str(p.windows) if ev.kind == "region" else "")
        if crops:
            row.append(p.crop or "")
        table.add_row(*(Text(c) for c in row))  # cells are data, never markup
    return table


def cited_confidence(answer: Answer) -> float | None:
    """The confidence of the best cited region (what the evidence says, not what the model said)."""
    values = [e.confidence for e in answer.evidence if e.kind == "region" and e.confidence is not None]
    return max(values) if values else None


def print_answer(answer: Answer, out: Console) -> None:
    """The answer as its JSON has it: finding, text, the cited evidence's confidence, the cited places."""
    finding = getattr(answer, "finding", None)
    word = FINDING_TEXT.get(finding, finding) if finding else ""
    repeats = bool(word) and answer.text.lower().startswith(word.lower())  # the text already says it first
    head = f"[{FINDING_STYLE.get(finding, 'bold')}]{word}:[/] " if finding and not repeats else ""
    out.print()
    out.print(f"{head}[bold]{_escape(answer.text)}[/]", soft_wrap=True, highlight=False)
    facts = []
    best = cited_confidence(answer)
    if best is not None:
        facts.append(f"cited evidence confidence {fixed(best)}")
    facts.append(f"answer confidence {fixed(answer.confidence)}")
    if not answer.supported:
        facts.append(f"[yellow]unsupported: {_escape(answer.missing or '')}[/]")
    out.print(" · ".join(facts), soft_wrap=True, highlight=False)
    if answer.evidence:
        out.print(places_table(places(answer.evidence)))
    for ev in answer.evidence:
        if ev.crop:
            out.print(f"crop {ev.id}: {ev.crop}", highlight=False, soft_wrap=True, markup=False)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
