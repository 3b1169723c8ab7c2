"""A deep-zoom pyramid over a scene's pixel space, with tiles cut on demand by the raster engine.

Level ``max_level`` is full resolution; each level below halves the resolution, down to level 0 where the
whole image is one pixel. Tile ``(level, col, row)`` covers ``tile_size`` pixels of its level, i.e. a window
of ``tile_size * 2 ** (max_level - level)`` full-resolution pixels, read decimated by
:meth:`rsrag.tools.raster.Scene.read_display` (which uses the file's overviews when it has them). Tiles at
the right and bottom edges are smaller than ``tile_size``. Nothing is pre-rendered: a tile is read when a
viewer asks for it and kept in a small in-memory cache of encoded bytes.
"""

from __future__ import annotations

import io
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

from PIL import Image

from rsrag.agent.interfaces.web.errors import TileNotFoundError
from rsrag.tools.raster import Scene
from rsrag.tools.region import PixelBox

TILE_SIZE = 256
JPEG_QUALITY = 85


@dataclass(frozen=True)
class Pyramid:
    """The deep-zoom pyramid geometry of an image of ``width`` x ``height`` full-resolution pixels."""

    width: int
    height: int
    tile_size: int = TILE_SIZE

    @property
    def max_level(self) -> int:
        """The full-resolution level: ``ceil(log2(longest side))``."""
        return max(0, math.ceil(math.log2(max(self.width, self.height))))

    def factor(self, level: int) -> int:
        """Full-resolution pixels per level pixel."""
        return 2 ** (self.max_level - level)

    def level_size(self, level: int) -> tuple[int, int]:
        """``(width, height)`` of a level in its own pixels."""
        f = self.factor(level)
        return max(1, math.ceil(self.width / f)), max(1, math.ceil(self.height / f))

    def grid(self, level: int) -> tuple[int, int]:
        """``(columns, rows)`` of tiles at a level."""
        w, h = self.level_size(level)
        return math.ceil(w / self.tile_size), math.ceil(h / self.tile_size)

    def tile(self, level: int, col: int, row: int) -> tuple[PixelBox, tuple[int, int]]:
        """The full-resolution box a tile covers and its output size ``(height, width)``.

        Raises:
            TileNotFoundError: the level, column or row is outside the pyramid.
        """
        if not 0 <= level <= self.max_level:
            raise TileNotFoundError(f"level {level} is outside the pyramid (levels 0 to {self.max_level})")
        cols, rows = self.grid(level)
        if not (0 <= col < cols and 0 <= row < rows):
            raise TileNotFoundError(f"tile ({col}, {row}) is outside level {level}, which has {cols} x {rows} tiles")
        f = self.factor(level)
        lw, lh = self.level_size(level)
        out_w = min(self.tile_size, lw - col * self.tile_size)
        out_h = min(self.tile_size, lh - row * self.tile_size)
        x0, y0 = col * self.tile_size * f, row * self.tile_size * f
        box = PixelBox(x0=x0, y0=y0, x1=min(self.width, x0 + out_w * f), y1=min(self.height, y0 + out_h * f))
        return box, (out_h, out_w)


def encode_image(rgb: object, fmt: str = "JPEG") -> bytes:
    """Encode an ``(h, w, 3)`` uint8 array as JPEG or PNG bytes."""
    buffer = io.BytesIO()
    image = Image.fromarray(rgb)  # type: ignore[arg-type]
    if fmt == "JPEG":
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    else:
        image.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


class TileCache:
    """A thread-safe LRU cache of encoded tiles, bounded by total bytes.

    Args:
        max_bytes: the most encoded bytes kept (default 64 MiB).
    """

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, int, int, int], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int, int, int]) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: tuple[str, int, int, int], data: bytes) -> None:
        with self._lock:
            if key in self._items:
                return
            self._items[key] = data
            self._bytes += len(data)
            while self._bytes > self.max_bytes and self._items:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= len(dropped)


def render_tile(scene: Scene, pyramid: Pyramid, level: int, col: int, row: int) -> bytes:
    """Cut one tile from the scene and encode it as JPEG (pixels without data are black)."""
    box, out_size = pyramid.tile(level, col, row)
    return encode_image(scene.read_display(box, out_size=out_size))
