"""Pixel <-> map <-> lon/lat conversions on boxes."""

from __future__ import annotations

import pytest
from affine import Affine

from rsrag.tools.errors import GeoreferenceError
from rsrag.tools.georef import lonlat_to_map_box, map_box_to_lonlat, map_box_to_pixel, pixel_box_to_map
from rsrag.tools.region import MapBox, PixelBox

TRANSFORM = Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 5000000.0)  # 0.5 m pixels, north up


def test_pixel_to_map_and_back_is_exact_on_pixel_edges() -> None:
    box = PixelBox(x0=10, y0=20, x1=110, y1=70)
    map_box = pixel_box_to_map(box, TRANSFORM, "EPSG:32633")
    assert map_box.as_tuple() == pytest.approx((500005.0, 4999965.0, 500055.0, 4999990.0))
    assert map_box_to_pixel(map_box, TRANSFORM) == box


def test_map_box_not_on_pixel_edges_is_covered() -> None:
    box = map_box_to_pixel(MapBox(crs="EPSG:32633", left=500000.2, bottom=4999998.9, right=500001.1, top=4999999.9), TRANSFORM)
    assert box.as_tuple() == (0, 0, 3, 3)


def test_lonlat_of_a_utm_box_near_its_central_meridian() -> None:
    map_box = MapBox(crs="EPSG:32633", left=500000.0, bottom=4980000.0, right=501000.0, top=4981000.0)
    west, south, east, north = map_box_to_lonlat(map_box)
    assert west == pytest.approx(15.0, abs=1e-6)  # zone 33's central meridian
    assert 44.9 < south < north < 45.0 and east > west
    back = lonlat_to_map_box(west, south, east, north, "EPSG:32633")
    assert back.left <= map_box.left + 1 and back.top >= map_box.top - 1


def test_rotated_transform_bounds_cover_all_corners() -> None:
    rotated = TRANSFORM @ Affine.rotation(30)
    map_box = pixel_box_to_map(PixelBox(x0=0, y0=0, x1=100, y1=100), rotated, "EPSG:32633")
    assert map_box.right - map_box.left > 50  # wider than the unrotated 50 m


def test_bad_lonlat_box() -> None:
    with pytest.raises(GeoreferenceError, match="give west < east"):
        lonlat_to_map_box(20.0, 45.0, 10.0, 46.0, "EPSG:32633")


def test_crs_units_name_the_unit_of_the_coordinates() -> None:
    from rsrag.tools.georef import crs_units

    assert crs_units("EPSG:32633") == "m" and crs_units("EPSG:4326") == "degrees"
    assert crs_units("EPSG:2263") == "US survey foot"  # New York State Plane, feet
    assert crs_units("not a crs") == "map units"
