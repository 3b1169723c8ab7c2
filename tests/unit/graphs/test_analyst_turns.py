"""An analyst's turns through the whole graph with the rule policy, on a small generated scene.

The scene is green ground with red roofs at two separate places (a large block and a small one). The encoder
is the colour test double (``tests/index_doubles.TinyEncoder``: "red" embeds like a red image) with a presence
calibration fitted on generated colour chips, so findings are real verdicts, not defaults. What a user would
notice is asserted: the second site is cited, an absent colour is not found (and said first), a count is of
sites, "the second one" zooms the second site, "others" leaves out what was reported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rsrag.agent.context import Resources
from rsrag.agent.interfaces.api import Analyst
from rsrag.agent.models.policy import RETRIEVAL_ONLY
from rsrag.agent.workspace import Workspace
from rsrag.tools.calibration import (
    FitConfig,
    clear_presence_cache,
    fit_calibration,
    home_file,
    save_calibration,
)
from rsrag.tools.region import PixelBox

from tests.captioned import make_folder
from tests.configured import settings_for
from tests.index_doubles import TinyEncoder
from tests.rasters import write_raster

COLOURS = {"Red": (220, 30, 30), "Green": (30, 200, 40), "Blue": (30, 40, 220), "Yellow": (230, 220, 20),
           "White": (250, 250, 250), "Black": (5, 5, 5)}
BIG = PixelBox(x0=64, y0=64, x1=192, y1=192)      # the larger block of roofs, north-west
SMALL = PixelBox(x0=448, y0=416, x1=512, y1=480)  # the smaller one, south-east


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    folder = make_folder(tmp_path_factory.mktemp("colours"), COLOURS, n=20)
    return fit_calibration(TinyEncoder(), folder, config=FitConfig(per_class=8, n_mosaics=40, val_per_class=2,
                                                                    val_mosaics=20, scenes=100, scene_windows=20))


@pytest.fixture
def analyst(tmp_path: Path, calibration):  # type: ignore[no-untyped-def]
    clear_presence_cache()
    save_calibration(calibration, home_file())  # the user's calibration file under the test's RSRAG_HOME
    settings = settings_for(tmp_path, **{"store.tiling": "grid:64:overlap=0.5", "vlm.spec": "rule",
                                         "retrieval.top_k": 5})
    workspace = Workspace(settings, encoder=TinyEncoder())
    with Analyst(settings, resources=Resources(settings, workspace=workspace)) as a:
        yield a
    clear_presence_cache()


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    data = np.clip(np.array(COLOURS["Green"])[:, None, None] + rng.integers(-12, 12, (3, 576, 576)), 0, 255)
    data = data.astype(np.uint8)
    for box in (BIG, SMALL):
        data[:, box.y0:box.y1, box.x0:box.x1] = np.array(COLOURS["Red"], dtype=np.uint8)[:, None, None]
    return write_raster(tmp_path / "roofs.tif", data)


def _sites(answer) -> list:  # type: ignore[no-untyped-def]
    return [e for e in answer.evidence if e.path in ("fast", "slow")]


def test_where_cites_every_site_and_follow_ups_refer_to_them(analyst: Analyst, scene: Path) -> None:
    answer = analyst.ask(scene, "where are the red roofs?", thread_id="t")
    sites = _sites(answer)
    assert answer.finding == "found" and answer.findings == {"red roofs": "found"} and answer.supported
    assert answer.text.startswith("Red roofs at 2 sites: ") and answer.text.endswith(RETRIEVAL_ONLY)
    assert "at full detail" not in answer.text  # a complete index: the whole scene was searched
    assert len(sites) == 2 and sites[0].region.box.contains(BIG) and sites[1].region.box.contains(SMALL)
    assert len(sites[0].members) > 1 and sites[0].presence is not None  # overlapping windows are one site

    second = analyst.ask(scene, "zoom closer on the second one", thread_id="t")
    (crop,) = [e for e in second.evidence if e.path == "zoom"]
    assert crop.region.box.intersection(SMALL) > 0 and not crop.region.box.intersection(BIG)
    assert second.cited[0] == sites[1].id and "second site" in second.text

    closer = analyst.ask(scene, "zoom closer", thread_id="t")
    (finer,) = [e for e in closer.evidence if e.path == "zoom"]
    assert crop.region.box.contains(finer.region.box) and finer.region.box.area < crop.region.box.area

    others = analyst.ask(scene, "are there any other red roofs elsewhere?", thread_id="t")
    assert others.text.startswith("Not found: no other red roofs") and others.finding == "not_found"
    assert not {e.id for e in _sites(others)} & {e.id for e in sites}  # the reported sites are left out


def test_an_absent_class_is_not_found_first(analyst: Analyst, scene: Path) -> None:
    answer = analyst.ask(scene, "is there any blue water?", thread_id="absent")
    assert answer.finding == "not_found" and answer.supported  # supported: its citations exist; not found all the same
    assert answer.text.startswith("Not found: no blue water in this scene")
    assert all(e.presence is not None and e.presence < 0.5 for e in _sites(answer))  # candidates, unconfirmed


def test_a_count_or_presence_follow_up_without_a_target_asks_about_the_last_one(analyst: Analyst, scene: Path) -> None:
    analyst.ask(scene, "where are the red roofs?", thread_id="follow")
    count = analyst.ask(scene, "how many are there?", thread_id="follow")
    assert count.text.startswith("Red roofs: 2 sites found by retrieval")
    again = analyst.ask(scene, "are there any?", thread_id="follow")
    assert again.finding == "found" and again.text.startswith("Yes, red roofs at 2 sites")
    fresh = analyst.ask(scene, "how many are there?", thread_id="no-earlier-target")
    assert fresh.text.startswith("I found nothing to look for")


def test_how_far_apart_measures_between_the_reported_sites(analyst: Analyst, scene: Path) -> None:
    import re

    answer = analyst.ask(scene, "where are the red roofs?", thread_id="far")
    a, b = _sites(answer)
    apart = analyst.ask(scene, "how far apart are they?", thread_id="far")
    assert apart.text.startswith(f"{a.id} and {b.id} are about ") and apart.cited == [a.id, b.id]
    metres = float(re.search(r"about ([\d,.]+) m apart", apart.text).group(1).replace(",", ""))  # type: ignore[union-attr]
    (ax, ay), (bx, by) = a.region.box.center, b.region.box.center
    assert metres == pytest.approx(0.5 * ((bx - ax) ** 2 + (by - ay) ** 2) ** 0.5, rel=0.02)  # 0.5 m pixels
    analyst.ask(scene, "zoom on the second one", thread_id="far")
    between = analyst.ask(scene, "how far is it from the first one?", thread_id="far")
    assert between.text.startswith(f"{b.id} and {a.id} are about ") and set(between.cited) == {a.id, b.id}
    named = analyst.ask(scene, f"how far is {b.id} from {a.id}?", thread_id="far")
    assert named.text.split(" are about ")[0] in (f"{a.id} and {b.id}", f"{b.id} and {a.id}")
    assert "Centre to centre of the places named" in named.text
    again = analyst.ask(scene, "look harder", thread_id="far")
    assert again.text.startswith("Red roofs at 2 sites")  # the last target, searched again
    lone = analyst.ask(scene, "how far apart are they?", thread_id="far-none")
    assert lone.text.startswith("There are no earlier places") and not lone.cited


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # writing the plain copy
def test_how_far_apart_in_pixels_without_map_coordinates(analyst: Analyst, scene: Path, tmp_path: Path) -> None:
    import rasterio

    with rasterio.open(scene) as src:
        data = src.read()
    plain = write_raster(tmp_path / "plain.tif", data, crs=None)  # the same roofs, not georeferenced
    a, b = _sites(analyst.ask(plain, "where are the red roofs?", thread_id="px"))
    apart = analyst.ask(plain, "how far apart are they?", thread_id="px")
    (ax, ay), (bx, by) = a.region.box.center, b.region.box.center
    assert apart.text.startswith(f"{a.id} and {b.id} are {((bx - ax) ** 2 + (by - ay) ** 2) ** 0.5:,.0f} px apart")


def test_a_question_about_the_whole_image_gives_its_facts_and_what_to_ask(analyst: Analyst, scene: Path) -> None:
    answer = analyst.ask(scene, "what is in this image?", thread_id="overview")
    assert answer.text.startswith("roofs.tif is 576 x 576 px, 3 bands of uint8, in EPSG:32633 at 0.5 x 0.5 m per pixel")
    assert "vision-language model" in answer.text and [e.path for e in answer.evidence] == ["scene"]
    vague = analyst.ask(scene, "what now?", thread_id="vague")
    assert vague.text.startswith("I found nothing to look for")


def test_a_relation_retrieval_cannot_measure_is_said_to_be_unchecked(analyst: Analyst, scene: Path) -> None:
    answer = analyst.ask(scene, "are there red roofs with yellow cars on them?", thread_id="relation")
    assert answer.findings == {"red roofs": "found"}  # the context is not searched: "with" is no place relation
    assert "Not checked against yellow cars: retrieval searched red roofs alone" in answer.text


def test_an_answer_from_part_of_the_scene_says_how_much_was_searched(calibration, scene: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    clear_presence_cache()
    save_calibration(calibration, home_file())
    settings = settings_for(tmp_path, **{"store.tiling": "pyramid:32:top=16", "vlm.spec": "rule",
                                         "pyramid.complete_below": 0, "pyramid.settle_below": 0})
    workspace = Workspace(settings, encoder=TinyEncoder())
    with Analyst(settings, resources=Resources(settings, workspace=workspace)) as fresh:
        answer = fresh.ask(scene, "where are the red roofs?", thread_id="partial")
    assert "of the scene at full detail (coarse to fine, on an index not yet filled)" in answer.text
    assert "`rsrag index`" in answer.text


def test_the_biggest_and_the_smallest_pick_among_the_reported_sites(analyst: Analyst, scene: Path) -> None:
    big, small = _sites(analyst.ask(scene, "where are the red roofs?", thread_id="extreme"))
    biggest = analyst.ask(scene, "which one is the biggest?", thread_id="extreme")
    assert biggest.cited[0] == big.id and "largest site" in biggest.text
    smallest = analyst.ask(scene, "zoom on the smallest", thread_id="extreme")
    assert smallest.cited[0] == small.id
    second = analyst.ask(scene, "now the first one", thread_id="extreme")  # still counts from the search's list
    assert second.cited[0] == big.id and "first site" in second.text
    central = analyst.ask(scene, "the one closest to the centre", thread_id="extreme")
    assert "furthest centre" in central.text and not central.findings  # a reference, not a search for "closest"


def test_the_reported_sites_listed_in_an_order_and_the_top_n(analyst: Analyst, scene: Path) -> None:
    big, small = _sites(analyst.ask(scene, "where are the red roofs?", thread_id="order"))  # north-west, south-east
    side = analyst.ask(scene, "list them from south to north", thread_id="order")
    assert side.text.startswith("The 2 sites of the last answer, from south to north: ") and side.cited == [small.id, big.id]
    size = analyst.ask(scene, "smallest first", thread_id="order")
    w, h = small.region.box.width, small.region.box.height  # the extent of its windows, not of the roofs
    assert size.cited == [small.id, big.id] and f"{small.id} spans {w} x {h} px" in size.text
    second = analyst.ask(scene, "now the second one", thread_id="order")  # counts from the search's own list
    assert second.cited[0] == small.id
    top = analyst.ask(scene, "show me the top 1", thread_id="order")
    assert top.text.startswith("The top 1 of the 2 sites") and [e.id for e in _sites(top)] == [big.id]
    assert len([e for e in top.evidence if e.path == "zoom"]) == 1


def test_a_search_can_order_its_sites_or_keep_the_top_n(analyst: Analyst, scene: Path) -> None:
    smallest = analyst.ask(scene, "where are the smallest red roofs?", thread_id="o1")
    sites = _sites(smallest)
    assert smallest.finding == "found" and "smallest first" in smallest.text
    assert sites[0].region.box.contains(SMALL) and not sites[0].region.box.contains(BIG)
    east = analyst.ask(scene, "list the red roofs from east to west", thread_id="o2")
    assert "from east to west" in east.text and _sites(east)[0].region.box.contains(SMALL)
    top = analyst.ask(scene, "show me the top 1 red roofs", thread_id="o3")
    assert top.findings == {"red roofs": "found"} and "at 2 sites: the top 1, " in top.text
    assert [e.region.box.contains(BIG) for e in _sites(top)] == [True]


def test_a_count_compared_and_the_coordinates_of_the_reported_places(analyst: Analyst, scene: Path) -> None:
    more = analyst.ask(scene, "are there more than 3 red roofs?", thread_id="cmp")
    assert more.findings == {"red roofs": "found"} and "No: 2 sites of red roofs found, not more than 3" in more.text
    least = analyst.ask(scene, "at least 2 red roofs?", thread_id="cmp2")
    assert "Yes: 2 sites of red roofs found, at least 2" in least.text
    a, b = _sites(more)
    where = analyst.ask(scene, "give me their coordinates", thread_id="cmp")
    assert where.text.startswith(f"{a.id}: lon ") and f"; {b.id}: lon " in where.text and where.cited == [a.id, b.id]
    exact = analyst.ask(scene, "where exactly are the red roofs?", thread_id="exact")
    assert exact.findings == {"red roofs": "found"}  # "exactly" is not an object


def test_zooming_on_coordinates_and_out(analyst: Analyst, scene: Path) -> None:
    from rsrag.tools.georef import map_box_to_lonlat

    box = analyst.ask(scene, "zoom on 300 200 420 330", thread_id="place")
    (crop,) = [e for e in box.evidence if e.path == "zoom"]
    assert crop.region.box.as_tuple() == (300, 200, 420, 330) and box.text.startswith("Zoomed to [300, 200, 420, 330]")
    point = analyst.ask(scene, "what is at pixel 100, 120?", thread_id="place")
    (crop,) = [e for e in point.evidence if e.path == "zoom"]
    assert crop.region.box.contains(PixelBox(x0=99, y0=119, x1=101, y1=121))
    a, _ = _sites(analyst.ask(scene, "where are the red roofs?", thread_id="place2"))
    west, south, east, north = map_box_to_lonlat(a.region.map_box)
    there = analyst.ask(scene, f"zoom to lon {(west + east) / 2:.6f} lat {(south + north) / 2:.6f}", thread_id="place2")
    (crop,) = [e for e in there.evidence if e.path == "zoom"]
    cx, cy = a.region.box.center
    assert crop.region.box.contains(PixelBox(x0=int(cx) - 1, y0=int(cy) - 1, x1=int(cx) + 1, y1=int(cy) + 1))
    out = analyst.ask(scene, "zoom out", thread_id="place2")
    (wide,) = [e for e in out.evidence if e.path == "zoom"]
    assert wide.region.box.contains(crop.region.box) and wide.region.box.area > crop.region.box.area
    none = analyst.ask(scene, "zoom out", thread_id="place3")
    assert none.text.startswith("There is no earlier view to zoom out from")


def test_show_me_each_of_them_zooms_on_every_reported_site(analyst: Analyst, scene: Path) -> None:
    a, b = _sites(analyst.ask(scene, "where are the red roofs?", thread_id="each"))
    each = analyst.ask(scene, "show me each of them", thread_id="each")
    crops = [e for e in each.evidence if e.path == "zoom"]
    assert each.cited[0::2] == [a.id, b.id] and len(crops) == 2
    assert crops[0].region.box.intersection(BIG) and crops[1].region.box.intersection(SMALL)


def test_are_any_of_them_in_a_part_of_the_scene(analyst: Analyst, scene: Path) -> None:
    big, small = _sites(analyst.ask(scene, "where are the red roofs?", thread_id="part"))  # north-west, south-east
    nw = analyst.ask(scene, "are any of them in the north-west?", thread_id="part")
    assert nw.text.startswith("Yes, 1 of the 2 places the last search reported lie in the north-west") and nw.cited == [big.id]
    ne = analyst.ask(scene, "are any of them in the north-east?", thread_id="part")
    assert ne.text.startswith("No: none of the 2 places") and ne.cited


def test_a_target_in_a_part_of_the_scene_keeps_the_sites_there(analyst: Analyst, scene: Path) -> None:
    big, small = _sites(analyst.ask(scene, "where are the red roofs?", thread_id="all"))
    count = analyst.ask(scene, "how many red roofs are in the south-east?", thread_id="count-part")
    assert count.text.startswith("Red roofs in the south-east (the scene's south-east quadrant): 1 of the 2 sites "
                                 "found by retrieval") and count.finding == "found"
    assert [e.region.box for e in _sites(count)] == [small.region.box]
    north = analyst.ask(scene, "where are the red roofs in the north?", thread_id="where-part")
    assert north.text.startswith("Red roofs in the north (the scene's northern half): 1 of the 2 sites found")
    assert [e.region.box for e in _sites(north)] == [big.region.box]
    none = analyst.ask(scene, "are there red roofs in the north-east?", thread_id="none-part")
    assert none.text.startswith("No: none of the 2 sites of red roofs found lies in the north-east")
    assert none.finding == "not_found" and none.findings == {"red roofs": "found"}  # found, but not there
    one = analyst.ask(scene, "where is the red roof in the north-west?", thread_id="one")  # singular: the one
    assert "the one furthest north-west is" in one.text


def test_count_and_two_targets(analyst: Analyst, scene: Path) -> None:
    count = analyst.ask(scene, "how many red roofs are there?", thread_id="count")
    assert count.text.startswith("Red roofs: 2 sites found by retrieval (a count of places, not of individual objects)")
    both = analyst.ask(scene, "where are the red roofs and the yellow cars?", thread_id="both")
    assert both.findings == {"red roofs": "found", "yellow cars": "not_found"} and both.finding == "uncertain"
    assert both.text.startswith("Red roofs at 2 sites") and "Not found: no yellow cars" in both.text


WATER = PixelBox(x0=320, y0=64, x1=384, y1=128)  # blue water north-east of the large block, north of the small one


@pytest.fixture
def lake_scene(tmp_path: Path) -> Path:
    rng = np.random.default_rng(6)
    data = np.clip(np.array(COLOURS["Green"])[:, None, None] + rng.integers(-12, 12, (3, 576, 576)), 0, 255)
    data = data.astype(np.uint8)
    for box, colour in ((BIG, "Red"), (SMALL, "Red"), (WATER, "Blue")):
        data[:, box.y0:box.y1, box.x0:box.x1] = np.array(COLOURS[colour], dtype=np.uint8)[:, None, None]
    return write_raster(tmp_path / "lake.tif", data)


def test_the_site_nearest_to_another_object_and_the_distance(analyst: Analyst, lake_scene: Path) -> None:
    answer = analyst.ask(lake_scene, "which red roofs are nearest to the blue water?", thread_id="nearest")
    assert answer.findings == {"red roofs": "found", "blue water": "found"} and answer.finding == "found"
    assert answer.text.startswith("Red roofs nearest to the blue water: ")
    by_id = {e.id: e for e in answer.evidence}
    nearest = answer.cited[0]  # the target's sites first, then the anchor's (then the crops)
    (water,) = [i for i in answer.cited if by_id[i].path == "fast" and by_id[i].query == "blue water"]
    assert by_id[nearest].region.box.contains(BIG) and by_id[water].region.box.contains(WATER)
    assert "The other red roofs sites, nearest first: " in answer.text  # the small block, further away
    farthest = analyst.ask(lake_scene, "the red roofs furthest from the blue water", thread_id="farthest")
    far = {e.id: e for e in farthest.evidence}[farthest.cited[0]]
    assert farthest.text.startswith("Red roofs farthest from the blue water: ") and far.region.box.contains(SMALL)
    how_far = analyst.ask(lake_scene, "how far are the red roofs from the blue water?", thread_id="how-far")
    assert how_far.text.startswith("Red roofs by distance to the nearest blue water site, nearest first: ")
    assert " m (" in how_far.text and how_far.finding == "found"


def test_sites_within_a_distance_on_a_side_or_near_another_object(analyst: Analyst, lake_scene: Path) -> None:
    def boxes(answer):  # type: ignore[no-untyped-def]
        by_id = {e.id: e for e in answer.evidence}
        return [by_id[i].region.box for i in answer.cited if by_id[i].path == "fast" and by_id[i].query == "red roofs"]

    within = analyst.ask(lake_scene, "where are the red roofs within 80 m of the blue water?", thread_id="within")
    assert within.text.startswith("Red roofs within 80 m of the blue water: 1 of the 2 sites found")
    assert within.finding == "found" and [b.contains(BIG) for b in boxes(within)] == [True]
    south = analyst.ask(lake_scene, "are there red roofs south of the blue water?", thread_id="south")
    assert south.text.startswith("Yes, red roofs south of the blue water at 1 of the 2 sites found")
    assert [b.contains(SMALL) for b in boxes(south)] == [True]
    east = analyst.ask(lake_scene, "how many red roofs are east of the blue water?", thread_id="east")
    assert east.text.startswith("Red roofs east of the blue water: 0 of the 2 sites found") and east.finding == "not_found"
    near = analyst.ask(lake_scene, "red roofs next to the blue water", thread_id="near")
    assert "(near: at most the larger site's extent apart, edge to edge)" in near.text


def test_a_relation_to_an_absent_object_cannot_hold(analyst: Analyst, lake_scene: Path) -> None:
    answer = analyst.ask(lake_scene, "are there red roofs near the yellow cars?", thread_id="absent-anchor")
    assert answer.findings == {"red roofs": "found", "yellow cars": "not_found"} and answer.finding == "not_found"
    assert answer.text.startswith("Not found: no yellow cars found by retrieval")
    assert "so 'red roofs near the yellow cars' cannot be judged. Red roofs at 2 sites" in answer.text


def test_the_second_one_after_a_relation_is_the_next_target_site(analyst: Analyst, lake_scene: Path) -> None:
    answer = analyst.ask(lake_scene, "the red roofs nearest to the blue water", thread_id="then")
    second = analyst.ask(lake_scene, "zoom on the second one", thread_id="then")
    by_id = {e.id: e for e in answer.evidence}
    assert by_id[answer.cited[1]].query == "red roofs" and second.cited[0] == answer.cited[1]  # not the water


def test_which_of_them_relates_the_last_target(analyst: Analyst, lake_scene: Path) -> None:
    analyst.ask(lake_scene, "where are the red roofs?", thread_id="them")
    answer = analyst.ask(lake_scene, "which of them is nearest to the blue water?", thread_id="them")
    assert answer.text.startswith("Red roofs nearest to the blue water: ")
    assert {e.id: e for e in answer.evidence}[answer.cited[0]].region.box.contains(BIG)


def test_others_near_an_anchor_reported_before_still_measure_to_it(analyst: Analyst, lake_scene: Path) -> None:
    analyst.ask(lake_scene, "where is the blue water?", thread_id="others-near")
    answer = analyst.ask(lake_scene, "are there other red roofs within 80 m of the blue water?", thread_id="others-near")
    assert answer.findings["blue water"] == "found"  # "other" leaves out earlier red roofs, never the anchor
    assert answer.text.startswith("Yes, red roofs within 80 m of the blue water at 1 of the 2 sites found")
