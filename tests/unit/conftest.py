"""Fixtures for unit tests: tiny generated rasters with real CRS and transforms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.rasters import RasterFactory, gradient, write_raster


@pytest.fixture
def make_raster(tmp_path: Path) -> RasterFactory:
    """Factory writing a raster into the test's temporary folder and returning its path."""
    counter = iter(range(1_000_000))

    def factory(data: np.ndarray | None = None, name: str | None = None, **kwargs) -> Path:
        if data is None:
            data = gradient(3, 64, 80)
        path = tmp_path / (name or f"scene_{next(counter)}.tif")
        return write_raster(path, data, **kwargs)

    return factory
