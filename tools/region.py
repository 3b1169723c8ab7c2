"""Regions: boxes in a scene, in full-resolution pixel coordinates and (where georeferenced) map coordinates.

A :class:`Region` is the unit every other part of rsrag speaks in: a tile of an index, a retrieval hit, a
zoom and a cited piece of evidence all carry one. It is a small immutable pydantic model, so it serialises
into graph state, stores and traces unchanged.

Pixel boxes are half-open: ``x0 <= x < x1`` and ``y0 <= y < y1``, with ``x`` the column and ``y`` the row
of the full-resolution image.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, model_validator

from rsrag.tools.errors import WindowError


class PixelBox(BaseModel):
    """A half-open box in full-resolution pixel coordinates (x = column, y = row)."""

    model_config = ConfigDict(frozen=True)

    x0: int
    y0: int
    x1: int
    y1: int

    def __init__(self, **data: int) -> None:
        # Checked before pydantic validation so callers get a WindowError, not a generic ValidationError.
        x0, y0, x1, y1 = (data.get(k) for k in ("x0", "y0", "x1", "y1"))
        if all(isinstance(v, int) for v in (x0, y0, x1, y1)) and (x1 <= x0 or y1 <= y0):  # type: ignore[operator]
            raise WindowError(
                f"box ({x0}, {y0}, {x1}, {y1}) has zero or negative area: "
                "give x0 < x1 and y0 < y1 (pixel columns and rows)"
            )
        super().__init__(**data)

    @model_validator(mode="after")
    def _check_order(self) -> PixelBox:
        if self.x1 <= self.x0 or self.y1 <= self.y0:
            raise ValueError(f"box {self.as_tuple()} has zero or negative area: give x0 < x1 and y0 < y1")
        return self

    @classmethod
    def from_xywh(cls, x: int, y: int, width: int, height: int) -> PixelBox:
        """Build a box from its top-left corner and size."""
        return cls(x0=x, y0=y, x1=x + width, y1=y + height)

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def area(self) -> int:
        return self.width * self.height

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0)

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x0, self.y0, self.x1, self.y1)

    def intersection(self, other: PixelBox) -> int:
        """Area of overlap with ``other`` in pixels (0 when disjoint)."""
        w = min(self.x1, other.x1) - max(self.x0, other.x0)
        h = min(self.y1, other.y1) - max(self.y0, other.y0)
        return w * h if w > 0 and h > 0 else 0

    def iou(self, other: PixelBox) -> float:
        """Intersection over union with ``other``."""
        inter = self.intersection(other)
        return inter / float(self.area + other.area - inter) if inter else 0.0

    def contains(self, other: PixelBox) -> bool:
        return self.x0 <= other.x0 and self.y0 <= other.y0 and self.x1 >= other.x1 and self.y1 >= other.y1

    def fit_within(self, side: int) -> tuple[int, int]:
        """``(height, width)`` of this box scaled so its longest side is at most ``side`` px (never enlarged):
        the ``out_size`` for reading it as a thumbnail, crop or cue."""
        scale = min(1.0, side / max(self.width, self.height))
        return max(1, round(self.height * scale)), max(1, round(self.width * scale))

    def union(self, other: PixelBox) -> PixelBox:
        """The smallest box covering both."""
        return PixelBox(
            x0=min(self.x0, other.x0), y0=min(self.y0, other.y0),
            x1=max(self.x1, other.x1), y1=max(self.y1, other.y1),
        )


class MapBox(BaseModel):
    """A box in the scene's map coordinate reference system."""

    model_config = ConfigDict(frozen=True)

    crs: str
    """The CRS as an authority string (``EPSG:32618``) where one exists, otherwise WKT."""
    left: float
    bottom: float
    right: float
    top: float

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.left, self.bottom, self.right, self.top)


class Region(BaseModel):
    """A box in one scene: pixel box, map box where georeferenced, and the tiling scale it came from."""

    model_config = ConfigDict(frozen=True)

    scene: str
    """Fingerprint of the scene the box belongs to (see :attr:`rsrag.tools.raster.Scene.fingerprint`)."""
    box: PixelBox
    map_box: MapBox | None = None
    scale: int | None = None
    """Tiling scale level the region came from (0 = finest), or ``None`` for ad-hoc regions."""

    @property
    def georeferenced(self) -> bool:
        return self.map_box is not None
