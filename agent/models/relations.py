"""Where one object's sites lie relative to another's: the geometry behind the rule policy's relations.

Retrieval finds each object on its own ("ponds", then "bridges"); whether a pond is *near* a bridge, the one
*nearest* to it, *within 500 m* of it or *north of* it is geometry on the two lists of sites, which this module
does: every target site is paired with the nearest anchor site of the same scene (:func:`place`), and a
:class:`~rsrag.agent.models.turns.Relation` keeps the pairs it holds for (:func:`holding`).

Distances are edge to edge between the sites' boxes (the extent of their matching windows, not measured
outlines; 0 when they overlap or touch), in pixels and, where the scene is georeferenced, on the ground
(the pixel gap times the site's ground size per pixel, from its map box). "Near" means at most the larger
side of the two boxes apart (:data:`NEAR_EXTENTS` of it): at the scale retrieval sees them, next to each
other. A direction ("north of") is judged from the anchor's centre to the site's, within
:data:`SIDE_HALF_ANGLE` degrees of the direction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rsrag.agent.evidence import Evidence, lonlat_box
from rsrag.agent.models.turns import Relation, direction_vector
from rsrag.tools.region import PixelBox

NEAR_EXTENTS = 1.0
"""A site is "near" an anchor site when their boxes are at most this many times the larger side of the two
apart, edge to edge."""
SIDE_HALF_ANGLE = 67.5
"""Half the angle, in degrees, of the sector a direction ("north of") covers from the anchor's centre: 67.5
makes the eight directions overlap a little, so a site north-north-east of a bridge is both north and
north-east of it."""


@dataclass(frozen=True)
class Placement:
    """A target site and the nearest anchor site to it in the same scene.

    Attributes:
        site: the target's site.
        anchor: the anchor site nearest to it.
        pixels: the gap between their boxes in pixels, edge to edge (0: they overlap or touch).
        metres: the same gap on the ground, or ``None`` when the scene has no map coordinates.
        reach: the larger side of the two boxes, in pixels (what "near" is measured against).
    """

    site: Evidence
    anchor: Evidence
    pixels: float
    metres: float | None
    reach: float

    @property
    def near(self) -> bool:
        """Whether the two sites are next to each other (see the module docstring)."""
        return self.pixels <= NEAR_EXTENTS * self.reach

    def toward(self, side: str) -> bool:
        """Whether the site lies on ``side`` of the anchor ("north", "south-west"...), centre to centre."""
        assert self.site.region is not None and self.anchor.region is not None
        (sx, sy), (ax, ay) = self.site.region.box.center, self.anchor.region.box.center
        dx, dy = sx - ax, sy - ay
        vx, vy = direction_vector(side)
        length = math.hypot(dx, dy) * math.hypot(vx, vy)
        return length > 0 and (dx * vx + dy * vy) / length >= math.cos(math.radians(SIDE_HALF_ANGLE))


def gap_pixels(a: PixelBox, b: PixelBox) -> float:
    """The distance between two boxes in pixels, edge to edge (0 when they overlap or touch)."""
    dx = max(0, b.x0 - a.x1, a.x0 - b.x1)
    dy = max(0, b.y0 - a.y1, a.y0 - b.y1)
    return math.hypot(dx, dy)


def ground_size(ev: Evidence) -> tuple[float, float] | None:
    """A place's box on the ground, (width, height) in metres (approximately: degrees at its latitude), or
    ``None`` when it is not georeferenced."""
    box = lonlat_box(ev)
    if box is None:
        return None
    west, south, east, north = box
    return (east - west) * 111_320 * math.cos(math.radians((south + north) / 2)), (north - south) * 110_540


def metres_per_pixel(ev: Evidence) -> float | None:
    """The ground size of one pixel of a site, from its map box (the mean of the two axes), or ``None``
    without map coordinates."""
    size = ground_size(ev)
    if size is None or ev.region is None:
        return None
    box = ev.region.box
    return (size[0] / max(1, box.width) + size[1] / max(1, box.height)) / 2


def place(sites: Sequence[Evidence], anchors: Sequence[Evidence]) -> list[Placement]:
    """Each target site with the nearest anchor site of its scene, nearest pairs first; sites without a region
    or without an anchor site in their scene are left out."""
    out: list[Placement] = []
    for site in sites:
        if site.region is None:
            continue
        same = [a for a in anchors if a.region is not None and a.region.scene == site.region.scene and a.id != site.id]
        if not same:
            continue
        best = min(same, key=lambda a: gap_pixels(site.region.box, a.region.box))  # type: ignore[union-attr]
        assert best.region is not None
        pixels = gap_pixels(site.region.box, best.region.box)
        scale = metres_per_pixel(site)
        reach = float(max(site.region.box.width, site.region.box.height, best.region.box.width, best.region.box.height))
        out.append(Placement(site, best, pixels, None if scale is None else pixels * scale, reach))
    return sorted(out, key=lambda p: p.pixels)


def holding(relation: Relation, placements: Sequence[Placement]) -> list[Placement]:
    """The placements a relation holds for, in the order the answer lists them: the nearest (or, for
    ``farthest``, the farthest) first. ``nearest`` / ``farthest`` keep one; ``distance`` keeps them all;
    ``within`` in metres keeps none where the scene has no map coordinates (the answer says so)."""
    if not placements:
        return []
    if relation.kind == "nearest":
        return [placements[0]]
    if relation.kind == "farthest":
        return [placements[-1]]
    if relation.kind == "distance":
        return list(placements)
    if relation.kind == "near":
        return [p for p in placements if p.near]
    if relation.kind == "within":
        limit = relation.limit or 0.0
        if relation.unit == "px":
            return [p for p in placements if p.pixels <= limit]
        return [p for p in placements if p.metres is not None and p.metres <= limit]
    return [p for p in placements if p.toward(relation.side or "")]
