"""Build the masked-collar scene of BENCHMARKS.md ("A collar marked by a mask band").

The demo scene (``make demo`` writes ``demo-output/analyst-scene.tif``) framed by a collar of near-white pixels
that an internal mask marks as no data, written as JPEG-compressed orthophotos are (tiled, JPEG/YCbCr, internal
mask, overviews). Then, as a user would::

    .venv/bin/python benchmarks/collar_scene.py --out /tmp/collar.tif
    RSRAG_HOME=$(mktemp -d) .venv/bin/rsrag ask /tmp/collar.tif "where are the storage tanks?" --json
"""

from __future__ import annotations

import argparse

import numpy as np
import rasterio
from rasterio.transform import Affine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", default="demo-output/analyst-scene.tif")
    parser.add_argument("--out", default="benchmarks/out/collar.tif")
    parser.add_argument("--collar", type=int, default=600, help="collar width in px")
    args = parser.parse_args()
    with rasterio.open(args.scene) as src:
        data, transform, crs = src.read(), src.transform, src.crs
    c = args.collar
    _, h, w = data.shape
    framed = np.full((3, h + 2 * c, w + 2 * c), 250, np.uint8)
    framed[:, c:c + h, c:c + w] = data
    mask = np.zeros(framed.shape[1:], np.uint8)
    mask[c:c + h, c:c + w] = 255
    profile = {"driver": "GTiff", "width": w + 2 * c, "height": h + 2 * c, "count": 3, "dtype": "uint8", "crs": crs,
               "transform": transform * Affine.translation(-c, -c), "tiled": True, "blockxsize": 512,
               "blockysize": 512, "compress": "jpeg", "photometric": "ycbcr", "jpeg_quality": 90}
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(args.out, "w", **profile) as dst:
            dst.write(framed)
            dst.write_mask(mask)
        with rasterio.open(args.out, "r+") as dst:
            dst.build_overviews([2, 4, 8])
    print(args.out)


if __name__ == "__main__":
    main()
