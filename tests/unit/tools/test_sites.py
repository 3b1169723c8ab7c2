"""Sites: overlapping or touching hits become one site, separate places stay separate, ranked best first."""

from __future__ import annotations

import random

import pytest

from rsrag.tools.errors import QueryError
from rsrag.tools.hit import Hit
from rsrag.tools.region import MapBox, PixelBox, Region
from rsrag.tools.sites import Site, group_sites, make_site
from rsrag.tools.tiling import parse_tiling


def _hit(x0: int, y0: int, x1: int, y1: int, conf: float = 0.6, score: float = 0.3, *, scene: str = "s",
         scale: int | None = 0, query: str = "tanks", geo: bool = False) -> Hit:
    box = PixelBox(x0=x0, y0=y0, x1=x1, y1=y1)
    # A north-up transform with 2 m pixels and origin (1000, 5000).
    map_box = MapBox(crs="EPSG:32633", left=1000 + 2 * x0, bottom=5000 - 2 * y1, right=1000 + 2 * x1,
                     top=5000 - 2 * y0) if geo else None
    return Hit(region=Region(scene=scene, box=box, map_box=map_box, scale=scale), score=score, confidence=conf,
               path="fast", query=query, queries=(query,))


def test_overlapping_windows_of_one_place_are_one_site_and_a_second_place_is_kept() -> None:
    # Five overlapping windows on a tank farm (the symptom) and one window elsewhere ranked 6th.
    farm = [_hit(1000 + dx, 1000 + dy, 1256 + dx, 1256 + dy, conf=0.9 - 0.01 * i)
            for i, (dx, dy) in enumerate([(0, 0), (128, 0), (0, 128), (128, 128), (64, 64)])]
    single = _hit(2500, 300, 2756, 556, conf=0.7)
    sites = group_sites([*farm, single])
    assert len(sites) == 2
    assert sites[0].region.box.as_tuple() == (1000, 1000, 1384, 1384)
    assert len(sites[0].members) == 5 and sites[0].best == farm[0]
    assert sites[0].confidence == pytest.approx(0.9) and sites[0].score == farm[0].score
    assert sites[1].region.box.as_tuple() == (2500, 300, 2756, 556) and sites[1].members == (single,)


def test_touching_boxes_join_and_gaps_need_touch_px() -> None:
    a = _hit(0, 0, 256, 256)
    edge = _hit(256, 0, 512, 256)        # shares an edge
    corner = _hit(512, 256, 768, 512)    # shares a corner with `edge`
    far = _hit(800, 300, 900, 400)       # 32 px from `corner`'s right edge at x=768
    sites = group_sites([a, edge, corner, far])
    assert [len(s.members) for s in sites].count(3) == 1 and len(sites) == 2
    assert len(group_sites([a, edge, corner, far], touch_px=32)) == 1
    assert len(group_sites([a, edge, corner, far], touch_px=31)) == 2
    with pytest.raises(QueryError, match="touch_px"):
        group_sites([a], touch_px=-1)


def test_chains_across_scales_are_transitive_and_scales_are_recorded() -> None:
    fine_left = _hit(0, 0, 100, 100, conf=0.8, scale=0)
    fine_right = _hit(400, 0, 500, 100, conf=0.7, scale=0)
    coarse = _hit(50, 0, 450, 400, conf=0.6, scale=2)  # bridges the two fine windows
    (site,) = group_sites([fine_right, coarse, fine_left])
    assert site.best == fine_left and site.scale == 0 and site.scales == (0, 2)
    assert site.members == (fine_left, fine_right, coarse)
    assert site.region.box.as_tuple() == (0, 0, 500, 400)


def test_overlapping_grid_windows_over_two_places_give_two_sites() -> None:
    """Real windows of an overlapping multi-scale grid, as an index stores them."""
    tiling = parse_tiling("grid:128:overlap=0.5:scales=1,2")
    places = [PixelBox(x0=200, y0=200, x1=330, y1=330), PixelBox(x0=1400, y0=1300, x1=1530, y1=1430)]
    hits = [
        _hit(*p.box.as_tuple(), conf=0.5 + 0.4 * p.box.intersection(place) / p.box.area, scale=p.scale)
        for p in tiling.patches(2000, 2000) for place in places if p.box.intersection(place)
    ]
    sites = group_sites(hits)
    assert len(sites) == 2
    for site in sites:
        assert any(site.region.box.contains(place) for place in places)
        assert {1, 0} == set(site.scales)


def test_scenes_are_never_grouped_and_ranking_is_by_confidence_then_score() -> None:
    a = _hit(0, 0, 100, 100, conf=0.6, score=0.2, scene="one")
    b = _hit(0, 0, 100, 100, conf=0.6, score=0.3, scene="two")
    c = _hit(500, 500, 600, 600, conf=0.9, scene="one")
    sites = group_sites([a, b, c])
    assert [s.best for s in sites] == [c, b, a]
    with pytest.raises(QueryError, match="one scene"):
        make_site([a, b])
    with pytest.raises(QueryError):
        make_site([])


def test_union_map_box_and_presence() -> None:
    site = make_site([_hit(0, 0, 100, 100, geo=True), _hit(50, 50, 200, 150, geo=True, query="oil tanks")])
    assert site.region.map_box is not None
    assert site.region.map_box.as_tuple() == (1000, 5000 - 300, 1400, 5000)
    assert site.queries == ("tanks", "oil tanks")
    assert site.presence is None and site.with_presence(0.75).presence == 0.75
    # a member without a map box leaves the union without one rather than a wrong one
    assert make_site([_hit(0, 0, 100, 100, geo=True), _hit(50, 50, 200, 150)]).region.map_box is None
    with pytest.raises(ValueError):
        Site(**{**site.model_dump(), "presence": 1.5})


def test_every_hit_lands_in_exactly_one_site_on_random_layouts() -> None:
    rng = random.Random(7)
    for _ in range(30):
        hits = []
        for _ in range(rng.randint(1, 40)):
            x, y, w, h = rng.randint(0, 900), rng.randint(0, 900), rng.randint(5, 120), rng.randint(5, 120)
            hits.append(_hit(x, y, x + w, y + h, conf=rng.random()))
        sites = group_sites(hits)
        assert sorted(id(m) for s in sites for m in s.members) == sorted(id(h) for h in hits)
        # no two sites overlap or touch (otherwise they should have been one)
        for i, s in enumerate(sites):
            for t in sites[i + 1:]:
                assert all(
                    max(m.region.box.x0, n.region.box.x0) > min(m.region.box.x1, n.region.box.x1)
                    or max(m.region.box.y0, n.region.box.y0) > min(m.region.box.y1, n.region.box.y1)
                    for m in s.members for n in t.members
                )
        confs = [s.confidence for s in sites]
        assert confs == sorted(confs, reverse=True)
