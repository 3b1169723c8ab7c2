"""The geometry of relations between two objects' sites (``rsrag.agent.models.relations``): gaps edge to edge,
on the ground where georeferenced, the nearest anchor of each site, and which sites a relation holds for."""

from __future__ import annotations

import pytest
from rsrag.agent.evidence import Evidence, evidence_id
from rsrag.agent.models.relations import gap_pixels, holding, metres_per_pixel, place
from rsrag.agent.models.turns import Relation
from rsrag.tools.region import MapBox, PixelBox, Region

GSD = 0.5  # metres per pixel of the UTM scene below


def site(x0: int, y0: int, x1: int, y1: int, query: str = "ponds", scene: str = "s", utm: bool = True) -> Evidence:
    box = PixelBox(x0=x0, y0=y0, x1=x1, y1=y1)
    map_box = MapBox(crs="EPSG:32633", left=500_000 + GSD * x0, bottom=5_000_000 - GSD * y1,
                     right=500_000 + GSD * x1, top=5_000_000 - GSD * y0) if utm else None
    return Evidence(id=evidence_id(scene, box.as_tuple(), "fast", query), kind="region", path="fast",
                    region=Region(scene=scene, box=box, map_box=map_box), score=0.3, confidence=0.9, presence=0.9,
                    query=query)


def test_gap_is_edge_to_edge_and_zero_for_touching_boxes() -> None:
    a = PixelBox(x0=0, y0=0, x1=100, y1=100)
    assert gap_pixels(a, PixelBox(x0=100, y0=0, x1=200, y1=100)) == 0  # touching
    assert gap_pixels(a, PixelBox(x0=50, y0=50, x1=150, y1=150)) == 0  # overlapping
    assert gap_pixels(a, PixelBox(x0=130, y0=0, x1=200, y1=100)) == 30
    assert gap_pixels(a, PixelBox(x0=130, y0=140, x1=200, y1=200)) == pytest.approx(50.0)  # 30, 40 diagonal


def test_ground_distance_comes_from_the_map_box() -> None:
    assert metres_per_pixel(site(0, 0, 200, 200)) == pytest.approx(GSD, rel=0.01)
    assert metres_per_pixel(site(0, 0, 200, 200, utm=False)) is None
    pond, bridge = site(0, 0, 100, 100), site(300, 0, 400, 100, query="bridge")
    (p,) = place([pond], [bridge])
    assert p.pixels == 200 and p.metres == pytest.approx(100, rel=0.01) and not p.near


def test_each_site_is_paired_with_the_nearest_anchor_of_its_own_scene() -> None:
    near, far, elsewhere = site(0, 0, 100, 100), site(1000, 1000, 1100, 1100), site(0, 0, 100, 100, scene="other")
    bridges = [site(150, 0, 250, 100, query="bridge"), site(1200, 1000, 1300, 1100, query="bridge")]
    placed = place([far, elsewhere, near], bridges)
    assert [p.site for p in placed] == [near, far]  # nearest pair first; no anchor in the other scene
    assert [p.anchor for p in placed] == bridges and all(p.near for p in placed)  # 50 and 100 px: within one extent


def test_which_sites_a_relation_holds_for() -> None:
    river = site(400, 400, 600, 600, query="river")
    north, south, west = site(450, 100, 550, 200), site(450, 950, 550, 1050), site(0, 450, 100, 550)
    placed = place([north, south, west], [river])
    assert [p.site for p in holding(Relation("nearest", "river"), placed)] == [north]  # 200 px, before 300 and 350
    assert [p.site for p in holding(Relation("farthest", "river"), placed)] == [south]
    assert [p.site for p in holding(Relation("side", "river", side="north"), placed)] == [north]
    assert [p.site for p in holding(Relation("side", "river", side="west"), placed)] == [west]
    assert holding(Relation("side", "river", side="east"), placed) == []
    assert [p.site for p in holding(Relation("within", "river", limit=120.0), placed)] == [north]  # 100 m
    assert [p.site for p in holding(Relation("within", "river", limit=300.0, unit="px"), placed)] == [north, west]
    assert [p.site for p in holding(Relation("near", "river"), placed)] == [north]  # 200 px, the river's side
    assert len(holding(Relation("distance", "river"), placed)) == 3


def test_metres_cannot_be_measured_without_map_coordinates() -> None:
    placed = place([site(0, 0, 100, 100, utm=False)], [site(150, 0, 250, 100, query="bridge", utm=False)])
    assert placed[0].metres is None
    assert holding(Relation("within", "bridge", limit=1000.0), placed) == []
    assert len(holding(Relation("within", "bridge", limit=60.0, unit="px"), placed)) == 1


def test_the_relation_says_itself_in_words() -> None:
    assert Relation("within", "port", limit=2000.0).words == "within 2 km of the port"
    assert Relation("within", "port", limit=300.0, unit="px").words == "within 300 px of the port"
    assert Relation("side", "river", side="south-west").words == "south-west of the river"
    assert Relation("nearest", "bridge").words == "nearest to the bridge"
