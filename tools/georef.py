"""Pixel <-> map coordinate conversion for boxes, and map <-> lon/lat through pyproj.

All functions take the affine ``transform`` and ``crs`` of a scene explicitly, so they work on any
georeferenced raster and are easy to test. A scene without a CRS works in pixel coordinates only; asking it
for map coordinates raises :class:`~rsrag.tools.errors.GeoreferenceError`.
"""

from __future__ import annotations

import math
from functools import lru_cache

from affine import Affine
from pyproj import CRS as ProjCRS
from pyproj import Transformer
from pyproj.exceptions import CRSError, ProjError

from rsrag.tools.errors import GeoreferenceError
from rsrag.tools.region import MapBox, PixelBox

WGS84 = "EPSG:4326"


def crs_string(crs: object) -> str:
    """Authority string (``EPSG:32618``) for a rasterio/pyproj CRS where one exists, otherwise WKT."""
    to_authority = getattr(crs, "to_authority", None)
    authority = to_authority() if to_authority is not None else None
    if authority:
        return f"{authority[0]}:{authority[1]}"
    to_wkt = getattr(crs, "to_wkt", None)
    return to_wkt() if to_wkt is not None else str(crs)


def pixel_box_to_map(box: PixelBox, transform: Affine, crs: str) -> MapBox:
    """Map-coordinate bounds of a pixel box (handles rotated transforms by transforming all corners)."""
    corners = [transform @ (x, y) for x in (box.x0, box.x1) for y in (box.y0, box.y1)]
    xs = [c[0] for c in corners]
    ys = [c[1] for c in corners]
    return MapBox(crs=crs, left=min(xs), bottom=min(ys), right=max(xs), top=max(ys))


def map_box_to_pixel(map_box: MapBox, transform: Affine) -> PixelBox:
    """The smallest pixel box covering a map-coordinate box (not clipped to the scene)."""
    inverse = ~transform
    corners = [
        inverse @ (x, y)
        for x in (map_box.left, map_box.right)
        for y in (map_box.bottom, map_box.top)
    ]
    cols = [c[0] for c in corners]
    rows = [c[1] for c in corners]
    x0, y0 = math.floor(min(cols) + 1e-9), math.floor(min(rows) + 1e-9)
    x1, y1 = math.ceil(max(cols) - 1e-9), math.ceil(max(rows) - 1e-9)
    return PixelBox(x0=x0, y0=y0, x1=max(x1, x0 + 1), y1=max(y1, y0 + 1))


@lru_cache(maxsize=64)
def _transformer(src: str, dst: str) -> Transformer:
    try:
        return Transformer.from_crs(ProjCRS.from_user_input(src), ProjCRS.from_user_input(dst), always_xy=True)
    except CRSError as exc:
        raise GeoreferenceError(f"cannot build a transformation from {src[:80]} to {dst}: {exc}") from exc


def map_box_to_lonlat(map_box: MapBox) -> tuple[float, float, float, float]:
    """Bounds ``(west, south, east, north)`` in degrees (WGS 84) of a map box, densified along its edges."""
    try:
        return tuple(  # type: ignore[return-value]
            _transformer(map_box.crs, WGS84).transform_bounds(*map_box.as_tuple(), densify_pts=21)
        )
    except ProjError as exc:
        raise GeoreferenceError(
            f"the CRS {map_box.crs[:80]} cannot be converted to longitude/latitude: {exc}"
        ) from exc


def points_to_lonlat(points: list[tuple[float, float]], crs: str) -> list[tuple[float, float]]:
    """Map coordinates ``(x, y)`` in ``crs`` to ``(lon, lat)`` degrees (WGS 84)."""
    try:
        transformer = _transformer(crs, WGS84)
        pairs = [transformer.transform(x, y) for x, y in points]
        return [(float(lon), float(lat)) for lon, lat in pairs]
    except ProjError as exc:
        raise GeoreferenceError(f"the CRS {crs[:80]} cannot be converted to longitude/latitude: {exc}") from exc


def lonlat_to_map_box(west: float, south: float, east: float, north: float, crs: str) -> MapBox:
    """Map box in ``crs`` covering a lon/lat box (degrees, WGS 84)."""
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise GeoreferenceError(
            f"lon/lat box ({west}, {south}, {east}, {north}) is invalid: give west < east in [-180, 180] "
            "and south < north in [-90, 90]"
        )
    try:
        left, bottom, right, top = _transformer(WGS84, crs).transform_bounds(
            west, south, east, north, densify_pts=21
        )
    except ProjError as exc:
        raise GeoreferenceError(f"cannot convert lon/lat to {crs[:80]}: {exc}") from exc
    return MapBox(crs=crs, left=left, bottom=bottom, right=right, top=top)


EARTH_RADIUS_KM = 6371.0088
"""Mean Earth radius (IUGG), for great-circle distances."""


def great_circle_km(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in km between two lon/lat points (haversine on the mean Earth radius)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


@lru_cache(maxsize=64)
def crs_units(crs: str) -> str:
    """The unit of a CRS's coordinates (and so of its ground sample distance), as a short word: ``"m"`` for
    metres, ``"degrees"``, else PROJ's unit name (``"US survey foot"``, ...); ``"map units"`` when the CRS does not say."""
    try:
        axes = ProjCRS.from_user_input(crs).axis_info
    except CRSError:
        return "map units"
    name = axes[0].unit_name if axes else ""
    return {"metre": "m", "meter": "m", "degree": "degrees"}.get(name, name or "map units")


def ground_sample_distance(transform: Affine) -> tuple[float, float]:
    """Pixel size ``(x, y)`` in CRS units (metres for projected CRSs)."""
    return (math.hypot(transform.a, transform.d), math.hypot(transform.b, transform.e))
