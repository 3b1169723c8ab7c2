"""Tiling schemes: how a scene is cut into patches, produced lazily.

Every scheme is named by one spec string, parsed by :func:`parse_tiling`; its :attr:`TilingScheme.id` is the
canonical form of that string and is part of every patch index key, so the same spec always yields the same
patches in the same order.

Schemes:

``grid:SIZE[:overlap=F][:scales=S1,S2,...]``
    Square windows of ``SIZE * s`` full-resolution pixels for each scale multiplier ``s`` (default ``1``),
    stepping by ``(1 - overlap)`` of the window (default overlap ``0``). Each window is meant to be read
    decimated to ``SIZE`` px, so coarser scales see more context at the same cost.
``vit[:SIZE]``
    ImageRAG's ``vit`` scheme: a fixed grid of ``SIZE`` px windows without overlap (default 448).
``cc[:min=SIZE][:factor=F][:overlap=F]``
    ImageRAG's ``cc`` (complete cover) scheme: sliding windows at every scale from ``min`` (default 448)
    growing by ``factor`` (default 2) up to the whole image, with overlap (default 0.5) between neighbours.
``split:N``
    ImageRAG's ``grid`` scheme: the image split into ``n x n`` equal cells for every ``n = 1 .. N``.
``pyramid[:SIZE][:overlap=F][:top=N]``
    The pyramid index (the default, see :mod:`rsrag.tools.pyramid`): levels from at most ``top`` windows
    (default 512) down to ``SIZE`` px windows at full resolution (default ``auto``: the encoder's input),
    each level its own index, filled on demand and searched coarse to fine. Not a flat list of patches:
    :meth:`TilingScheme.patches` refuses it.

Windows never leave the image: the last row and column of a grid are shifted back to end at the image edge
(they overlap their neighbour instead of being padded). A scale whose window is larger than the image in
both directions is skipped; if every scale is skipped the scheme raises :class:`TilingError`. Any scheme
also takes ``max=N`` (default 500,000): a scene that would yield more patches raises instead of producing
an index nobody can afford.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from rsrag.tools.errors import TilingError
from rsrag.tools.region import PixelBox

DEFAULT_MAX_PATCHES = 500_000
_SPLIT_READ_SIZE = 448  # split cells are read at the CLIP input size of ImageRAG's reference models


@dataclass(frozen=True, slots=True)
class PatchSpec:
    """One patch of a tiling: its window, scale level, stable index and suggested read size.

    Attributes:
        box: window in full-resolution pixels.
        scale: scale level (0 = the scheme's finest scale).
        index: position in the scheme's fixed order (stable for a given scene size and spec).
        read_size: side in pixels to which the window is meant to be decimated when read.
    """

    box: PixelBox
    scale: int
    index: int
    read_size: int


def _starts(length: int, window: int, step: int) -> list[int]:
    """Start offsets of windows covering ``[0, length)``, the last one flush with the end."""
    if window >= length:
        return [0]
    starts = list(range(0, length - window + 1, step))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


@dataclass(frozen=True)
class _Level:
    """One scale of a tiling: window size and step along x and y."""

    window_x: int
    window_y: int
    step_x: int
    step_y: int
    read_size: int


class TilingScheme:
    """A named, deterministic way of cutting a scene into patches."""

    def __init__(self, spec_id: str, max_patches: int = DEFAULT_MAX_PATCHES) -> None:
        self.id = spec_id
        self.max_patches = max_patches

    def __repr__(self) -> str:
        return f"TilingScheme({self.id!r})"

    def _levels(self, width: int, height: int) -> list[_Level]:
        raise NotImplementedError  # each scheme defines its levels

    def _usable_levels(self, width: int, height: int) -> list[_Level]:
        if width <= 0 or height <= 0:
            raise TilingError(f"cannot tile an image of size {width} x {height}")
        levels = [lv for lv in self._levels(width, height) if lv.window_x <= width or lv.window_y <= height]
        if not levels:
            smallest = min(min(lv.window_x, lv.window_y) for lv in self._levels(width, height))
            raise TilingError(
                f"the image ({width} x {height} px) is smaller than one patch ({smallest} px) of tiling "
                f"{self.id!r}; use a smaller patch size, e.g. 'grid:{max(16, min(width, height) // 2)}'"
            )
        return levels

    def count(self, width: int, height: int) -> int:
        """Number of patches for a scene of this size (computed without generating them)."""
        total = 0
        for lv in self._usable_levels(width, height):
            cols = len(_starts(width, lv.window_x, lv.step_x))
            rows = len(_starts(height, lv.window_y, lv.step_y))
            total += cols * rows
        return total

    def patches(self, width: int, height: int) -> Iterator[PatchSpec]:
        """Generate the patches of a ``width x height`` scene lazily, level by level, row by row.

        Raises:
            TilingError: the image is smaller than every patch, or the patch count exceeds the cap.
        """
        total = self.count(width, height)
        if total > self.max_patches:
            raise TilingError(
                f"tiling {self.id!r} would cut the {width} x {height} px image into {total:,} patches, over "
                f"the cap of {self.max_patches:,}; use larger patches or fewer scales, or raise max=N"
            )
        index = 0
        for scale, lv in enumerate(self._usable_levels(width, height)):
            for y in _starts(height, lv.window_y, lv.step_y):
                for x in _starts(width, lv.window_x, lv.step_x):
                    box = PixelBox(x0=x, y0=y, x1=min(x + lv.window_x, width), y1=min(y + lv.window_y, height))
                    yield PatchSpec(box=box, scale=scale, index=index, read_size=lv.read_size)
                    index += 1


def _step(window: int, overlap: float) -> int:
    return max(1, int(round(window * (1.0 - overlap))))


class GridTiling(TilingScheme):
    """Square windows at several scale multipliers, with overlap."""

    def __init__(self, size: int, overlap: float = 0.0, scales: tuple[int, ...] = (1,), max_patches: int = DEFAULT_MAX_PATCHES) -> None:
        scale_txt = ",".join(str(s) for s in scales)
        super().__init__(f"grid:{size}:overlap={overlap:g}:scales={scale_txt}", max_patches)
        self.size, self.overlap, self.scales = size, overlap, scales

    def _levels(self, width: int, height: int) -> list[_Level]:
        levels = []
        for s in self.scales:
            w = self.size * s
            levels.append(_Level(w, w, _step(w, self.overlap), _step(w, self.overlap), self.size))
        return levels


class ViTTiling(GridTiling):
    """ImageRAG's ``vit`` scheme: fixed-size windows, no overlap."""

    def __init__(self, size: int = 448, max_patches: int = DEFAULT_MAX_PATCHES) -> None:
        super().__init__(size, 0.0, (1,), max_patches)
        self.id = f"vit:{size}"


class CompleteCoverTiling(TilingScheme):
    """ImageRAG's ``cc`` scheme: sliding windows at geometrically growing sizes up to the whole image."""

    def __init__(self, min_size: int = 448, factor: float = 2.0, overlap: float = 0.5, max_patches: int = DEFAULT_MAX_PATCHES) -> None:
        super().__init__(f"cc:min={min_size}:factor={factor:g}:overlap={overlap:g}", max_patches)
        self.min_size, self.factor, self.overlap = min_size, factor, overlap

    def _levels(self, width: int, height: int) -> list[_Level]:
        levels = []
        size = self.min_size
        longest = max(width, height)
        while True:
            levels.append(_Level(size, size, _step(size, self.overlap), _step(size, self.overlap), self.min_size))
            if size >= longest:
                break
            size = min(longest, int(math.ceil(size * self.factor)))
        return levels


class SplitTiling(TilingScheme):
    """ImageRAG's ``grid`` scheme: ``n x n`` equal cells for every ``n`` from 1 to ``N``."""

    def __init__(self, n: int, max_patches: int = DEFAULT_MAX_PATCHES) -> None:
        super().__init__(f"split:{n}", max_patches)
        self.n = n

    def _levels(self, width: int, height: int) -> list[_Level]:
        levels = []
        for n in range(1, self.n + 1):
            wx, wy = math.ceil(width / n), math.ceil(height / n)
            levels.append(_Level(wx, wy, wx, wy, _SPLIT_READ_SIZE))
        return levels


def _positive_int(key: str, value: str, spec: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise TilingError(f"tiling {spec!r}: {key} must be a whole number of pixels, got {value!r}") from None
    if number <= 0:
        raise TilingError(f"tiling {spec!r}: {key} must be positive, got {number}; e.g. 512")
    return number


def _fraction(key: str, value: str, spec: str, upper: float = 1.0) -> float:
    try:
        number = float(value)
    except ValueError:
        raise TilingError(f"tiling {spec!r}: {key} must be a number, got {value!r}") from None
    if not 0.0 <= number < upper:
        raise TilingError(f"tiling {spec!r}: {key} must be in [0, {upper:g}), got {number}")
    return number


def parse_tiling(spec: str) -> TilingScheme:
    """Build a tiling scheme from its spec string (see the module docstring for the grammar).

    Raises:
        TilingError: unknown scheme, or a parameter that is missing, not a number, zero or negative.
    """
    parts = [p.strip() for p in spec.strip().split(":") if p.strip()]
    if not parts:
        raise TilingError("empty tiling spec; use e.g. 'grid:512', 'vit:448', 'cc' or 'split:10'")
    kind, args = parts[0].lower(), parts[1:]
    positional = [a for a in args if "=" not in a]
    options = dict(a.split("=", 1) for a in args if "=" in a)
    max_patches = _positive_int("max", options.pop("max"), spec) if "max" in options else DEFAULT_MAX_PATCHES

    def leftover(n_positional: int = 1) -> None:
        if options or len(positional) > n_positional:
            extra = sorted(options) or positional[n_positional:]
            raise TilingError(f"tiling {spec!r}: unexpected parameter(s) {extra}")

    if kind == "grid":
        if not positional:
            raise TilingError(f"tiling {spec!r}: give the patch size, e.g. 'grid:512'")
        size = _positive_int("size", positional[0], spec)
        overlap = _fraction("overlap", options.pop("overlap", "0"), spec)
        scales = tuple(_positive_int("scale", s, spec) for s in options.pop("scales", "1").split(","))
        leftover()
        return GridTiling(size, overlap, tuple(sorted(set(scales))), max_patches)
    if kind == "vit":
        size = _positive_int("size", positional[0], spec) if positional else 448
        leftover()
        return ViTTiling(size, max_patches)
    if kind == "cc":
        min_size = _positive_int("min", options.pop("min", "448"), spec)
        factor = _fraction("factor", options.pop("factor", "2"), spec, upper=float("inf"))
        if factor <= 1.0:
            raise TilingError(f"tiling {spec!r}: factor must be greater than 1, got {factor}")
        overlap = _fraction("overlap", options.pop("overlap", "0.5"), spec)
        leftover(0)
        return CompleteCoverTiling(min_size, factor, overlap, max_patches)
    if kind == "split":
        n = _positive_int("n", positional[0], spec) if positional else 10
        leftover()
        return SplitTiling(n, max_patches)
    if kind == "pyramid":
        from rsrag.tools.pyramid import parse_pyramid  # the pyramid module builds on this one

        return parse_pyramid(spec, positional, options, max_patches)
    raise TilingError(f"unknown tiling scheme {kind!r} in {spec!r}; use 'pyramid', 'grid:SIZE', 'vit[:SIZE]', 'cc' or 'split:N'")
