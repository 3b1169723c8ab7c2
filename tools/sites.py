"""Sites: retrieval hits that overlap or touch, grouped into the unit an analyst sees and an answer cites.

Overlapping windows of one place (an overlapping grid, several scales, several pyramid levels, several
phrases of one target) would otherwise fill a top-k list with the same place five times and push a second
place out of it. :func:`group_sites` groups every hit whose box overlaps or touches another's (transitively,
by union-find, whatever the tiling or scale) into one :class:`Site`: the union box of its members, its best
window as the representative, the members kept as evidence. Sites are ranked best first; callers show the
first few, but every site built from hits above the threshold exists in the result.

Hits of different scenes are never grouped. Callers group the hits of one target (one asked thing, possibly
several phrases or synonyms); hits of different targets at one place are grouped together if passed
together.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from rsrag.tools.errors import QueryError
from rsrag.tools.hit import Hit
from rsrag.tools.region import MapBox, PixelBox, Region


def _rank_key(hit: Hit) -> tuple[float, float]:
    return (-hit.confidence, -hit.score)


class Site(BaseModel):
    """One place found by retrieval: hits that overlap or touch, grouped.

    Attributes:
        region: union box of the members (pixel box; map box where the members are georeferenced); its
            ``scale`` is the best member's.
        best: the representative window (highest confidence, then score).
        members: every member hit, best first (the best included).
        score: raw cosine score of the best member.
        confidence: within-scene confidence of the best member (see the fast path).
        presence: calibrated probability that the asked thing is present at this site (see
            :mod:`rsrag.tools.calibration`), ``None`` where no calibration was applied.
        scales: distinct tiling scales / pyramid levels of the members (finest first), where known.
    """

    model_config = ConfigDict(frozen=True)

    region: Region
    best: Hit
    members: tuple[Hit, ...]
    score: float
    confidence: float
    presence: float | None = Field(default=None, ge=0.0, le=1.0)
    scales: tuple[int, ...] = ()

    @property
    def scale(self) -> int | None:
        """Scale (tiling level) of the best member's region, where known."""
        return self.best.region.scale

    @property
    def queries(self) -> tuple[str, ...]:
        """Every query that matched a member, in first-seen order (best member's first)."""
        seen: dict[str, None] = {}
        for h in self.members:
            for q in (h.queries or (h.query,)):
                seen.setdefault(q, None)
        return tuple(seen)

    @property
    def box(self) -> PixelBox:
        """The union pixel box (shortcut for ``region.box``)."""
        return self.region.box

    def with_presence(self, presence: float | None) -> Site:
        """A copy carrying a calibrated presence probability."""
        return self.model_copy(update={"presence": None if presence is None else float(presence)})


def _gap(a: PixelBox, b: PixelBox) -> int:
    """Chebyshev-style gap between two boxes: 0 when they overlap or share an edge/corner."""
    gx = max(a.x0, b.x0) - min(a.x1, b.x1)
    gy = max(a.y0, b.y0) - min(a.y1, b.y1)
    return max(gx, gy, 0)


def _union_map_box(boxes: Sequence[MapBox | None]) -> MapBox | None:
    present = [b for b in boxes if b is not None]
    if not present or len(present) != len(boxes) or len({b.crs for b in present}) != 1:
        return None
    return MapBox(
        crs=present[0].crs,
        left=min(b.left for b in present), bottom=min(b.bottom for b in present),
        right=max(b.right for b in present), top=max(b.top for b in present),
    )


def make_site(members: Sequence[Hit]) -> Site:
    """One site from hits already known to belong together (ranked inside, union box computed).

    Raises:
        QueryError: no hits, or hits of different scenes.
    """
    if not members:
        raise QueryError("a site needs at least one hit")
    ranked = tuple(sorted(members, key=_rank_key))
    scenes = {h.region.scene for h in ranked}
    if len(scenes) != 1:
        raise QueryError(f"a site's hits must come from one scene, got {len(scenes)}: {sorted(scenes)[:3]}")
    best = ranked[0]
    box = ranked[0].region.box
    for h in ranked[1:]:
        box = box.union(h.region.box)
    # The map union of north-up boxes is exact; for rotated transforms it is the covering axis-aligned box.
    region = Region(
        scene=best.region.scene, box=box, map_box=_union_map_box([h.region.map_box for h in ranked]),
        scale=best.region.scale,
    )
    scales = tuple(sorted({h.region.scale for h in ranked if h.region.scale is not None}))
    return Site(region=region, best=best, members=ranked, score=best.score, confidence=best.confidence,
                scales=scales)


def group_sites(hits: Sequence[Hit], touch_px: int = 0) -> list[Site]:
    """Group hits whose boxes overlap or touch into sites, ranked best first.

    Two hits are linked when they are in the same scene and the gap between their boxes is at most
    ``touch_px`` pixels on both axes (0: overlapping or sharing an edge or a corner). Links are transitive
    (union-find), so a chain of overlapping windows is one site whatever the tiling or the mix of scales.
    Sites are ranked by their best member's confidence, then score; a site's ``presence`` is left
    ``None`` (see :func:`rsrag.tools.calibration.calibrate_sites`).

    Args:
        hits: hits of one target (filter them by the threshold first: every hit passed is grouped).
        touch_px: largest gap in pixels between two boxes that still makes them one site.

    Raises:
        QueryError: a negative ``touch_px``.
    """
    if touch_px < 0:
        raise QueryError(f"touch_px is a gap in pixels and must be >= 0, got {touch_px}")
    items = list(hits)
    parent = list(range(len(items)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # Sweep along x: only boxes whose x-extent (widened by touch_px) reaches the current box can link.
    order = sorted(range(len(items)), key=lambda i: items[i].region.box.x0)
    active: list[int] = []
    for i in order:
        bi = items[i].region.box
        active = [j for j in active if items[j].region.box.x1 + touch_px >= bi.x0]
        for j in active:
            if items[j].region.scene == items[i].region.scene and _gap(items[j].region.box, bi) <= touch_px:
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[ri] = rj
        active.append(i)
    groups: dict[int, list[Hit]] = {}
    for i, h in enumerate(items):
        groups.setdefault(find(i), []).append(h)
    sites = [make_site(g) for g in groups.values()]
    sites.sort(key=lambda s: (_rank_key(s.best), s.region.box.y0, s.region.box.x0))
    return sites
