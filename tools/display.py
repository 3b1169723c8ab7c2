"""Display conversion: any band layout and data type to 8-bit RGB for encoders, VLMs and people.

Three steps, applied to every window a scene reads for display:

1. band selection: which three bands become R, G and B (1-based, configurable; one band is repeated into
   three; an alpha band becomes part of the validity mask);
2. stretch: 8-bit data is passed through unchanged by default; other types (uint16, int16, float32, ...)
   are stretched linearly between per-band low/high percentiles computed **once per scene** from an overview
   or a sample of windows (never from the window itself, so neighbouring patches match);
3. masking: nodata values, NaN and alpha == 0 are black in the output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rsrag.tools.errors import InvalidRasterError


@dataclass(frozen=True)
class DisplayOptions:
    """How a scene is turned into 8-bit RGB.

    Attributes:
        bands: 1-based band indexes for R, G, B; ``None`` picks them from the colour interpretation
            (red/green/blue tags), else bands 1, 2, 3, or band 1 three times for 1- and 2-band images.
        percentiles: low and high percentiles of the linear stretch.
        stretch_uint8: also stretch 8-bit data (off by default: 8-bit imagery is usually display-ready).
    """

    bands: tuple[int, int, int] | None = None
    percentiles: tuple[float, float] = (2.0, 98.0)
    stretch_uint8: bool = False


def choose_bands(count: int, colorinterp: list[str], requested: tuple[int, ...] | None, name: str) -> tuple[int, int, int]:
    """Pick the three 1-based bands shown as R, G, B.

    Args:
        count: number of bands in the scene.
        colorinterp: colour interpretation name of each band (``"red"``, ``"gray"``, ``"alpha"``, ...).
        requested: explicit band indexes (1 or 3 of them), or ``None`` to choose automatically.
        name: the scene's name, for error messages.

    Raises:
        InvalidRasterError: a requested band does not exist, or the wrong number of bands was requested.
    """
    if requested is not None:
        bands = tuple(int(b) for b in requested)
        if len(bands) == 1:
            bands = bands * 3
        if len(bands) != 3:
            raise InvalidRasterError(f"{name}: give 1 or 3 display bands, not {len(bands)} ({bands})")
        bad = [b for b in bands if not 1 <= b <= count]
        if bad:
            raise InvalidRasterError(
                f"{name}: display band(s) {bad} do not exist; this image has bands 1..{count}"
            )
        return bands  # type: ignore[return-value]
    interp = [c.lower() for c in colorinterp]
    if all(c in interp for c in ("red", "green", "blue")):
        return (interp.index("red") + 1, interp.index("green") + 1, interp.index("blue") + 1)
    data_bands = [i + 1 for i, c in enumerate(interp) if c != "alpha"] or [1]
    if len(data_bands) >= 3:
        return (data_bands[0], data_bands[1], data_bands[2])
    return (data_bands[0],) * 3


def alpha_band(colorinterp: list[str]) -> int | None:
    """1-based index of the alpha band, if any."""
    interp = [c.lower() for c in colorinterp]
    return interp.index("alpha") + 1 if "alpha" in interp else None


@dataclass(frozen=True)
class Stretch:
    """Per-band linear stretch to 0..255 (``low`` maps to 0, ``high`` to 255)."""

    low: tuple[float, ...]
    high: tuple[float, ...]

    @classmethod
    def identity(cls, bands: int = 3) -> Stretch:
        return cls(low=(0.0,) * bands, high=(255.0,) * bands)

    @classmethod
    def from_sample(cls, sample: np.ndarray, valid: np.ndarray, percentiles: tuple[float, float]) -> Stretch:
        """Fit a stretch to a sample.

        Args:
            sample: (3, H, W) array of the display bands.
            valid: (H, W) boolean mask of pixels that hold data.
            percentiles: low and high percentile.
        """
        lows: list[float] = []
        highs: list[float] = []
        for band in sample:
            values = band[valid & np.isfinite(band)]
            if values.size == 0:
                lows.append(0.0)
                highs.append(1.0)
                continue
            lo, hi = np.percentile(values.astype(np.float64), percentiles)
            if hi <= lo:  # flat band: avoid dividing by zero, keep the value mid-grey
                lo, hi = float(lo) - 0.5, float(lo) + 0.5
            lows.append(float(lo))
            highs.append(float(hi))
        return cls(low=tuple(lows), high=tuple(highs))

    def apply(self, data: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        """Convert (3, H, W) data to (H, W, 3) uint8, masked pixels black."""
        if data.dtype == np.uint8 and self.low == (0.0,) * len(self.low) and self.high == (255.0,) * len(self.high):
            out = np.ascontiguousarray(np.moveaxis(data, 0, -1))
        else:
            low = np.asarray(self.low, dtype=np.float32)[:, None, None]
            scale = 255.0 / (np.asarray(self.high, dtype=np.float32)[:, None, None] - low)
            scaled = (data.astype(np.float32, copy=False) - low) * scale
            np.nan_to_num(scaled, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
            out = np.moveaxis(np.clip(scaled, 0.0, 255.0).astype(np.uint8), 0, -1)
            out = np.ascontiguousarray(out)
        if valid is not None and not valid.all():
            np.copyto(out, 0, where=~valid[..., None])
        return out


def valid_mask(data: np.ndarray, nodata: float | None, alpha: np.ndarray | None = None) -> np.ndarray:
    """(H, W) mask of pixels that hold data in every display band.

    Args:
        data: (3, H, W) display bands.
        nodata: the scene's nodata value (may be NaN), or ``None``.
        alpha: optional (H, W) alpha band; 0 means no data.
    """
    valid = np.ones(data.shape[1:], dtype=bool)
    if np.issubdtype(data.dtype, np.floating):
        valid &= np.isfinite(data).all(axis=0)
    if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
        valid &= ~(data == np.asarray(nodata, dtype=data.dtype)).all(axis=0)
    if alpha is not None:
        valid &= alpha > 0
    return valid
