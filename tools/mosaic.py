"""Analyst scenes: georeferenced, tiled GeoTIFF mosaics of labelled chips with a ground truth of sites.

A scene is a square of ``side x side`` chip cells (150 px each by default). Its four quadrants are blocks of
four land-cover background classes; target classes are planted at 2-4 *sites* each, a site being one chip
or a 2 x 2 block of chips, sites kept at least one cell apart (so each is a separate place). Classes named
as *absent* appear nowhere. Beside ``scene.tif`` a ``scene.truth.json`` records the layout: class -> site
boxes in pixels and map coordinates, the background quadrants, the absent classes and the seed.

Everything is deterministic for a given chip folder, split and seed. Chips come from the fixed validation
split of the folder by default (:func:`rsrag.tools.captioned.split_chips`), so scenes never show an image
the encoder was trained on. Background cells reuse chips (a quadrant has more cells than a class has
validation chips) with random flips and quarter turns; the chips of a class's sites are distinct while the
class has enough of them.

Used by ``benchmarks/analyst.py`` and the demo::

    from rsrag.tools.mosaic import build_scene_set
    scenes = build_scene_set("/data/aid-rsicd", "out/scenes", n_scenes=20, seed=0)
    scenes[0].path, scenes[0].truth.present     # GeoTIFF, {"StorageTanks": (PixelBox, ...), ...}
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from rsrag.tools.captioned import Chip, read_chips, select_split
from rsrag.tools.errors import DataError
from rsrag.tools.region import MapBox, PixelBox

CELL_PX = 150
#: Land-cover classes (AID names) that make good background blocks.
BACKGROUND_POOL: tuple[str, ...] = (
    "Farmland", "Forest", "Meadow", "DenseResidential", "MediumResidential", "SparseResidential", "BareLand",
    "Desert", "Mountain", "Industrial", "Commercial",
)
#: Classes too alike to tell apart at chip scale: a scene never uses one as background and another as target.
FAMILIES: tuple[frozenset[str], ...] = (
    frozenset({"DenseResidential", "MediumResidential", "SparseResidential"}),
    frozenset({"BareLand", "Desert"}),
)
CRS = "EPSG:32633"
PIXEL_M = 2.0
QUADRANTS = ("nw", "ne", "sw", "se")


class SceneTruth(BaseModel):
    """Ground truth of an analyst scene (what ``scene.truth.json`` holds).

    Attributes:
        scene: file name of the GeoTIFF.
        width, height: size in pixels; cell_px: side of one chip cell.
        crs: CRS of the map boxes; transform: the GDAL geotransform (6 numbers).
        backgrounds: quadrant (``nw``, ``ne``, ``sw``, ``se``) -> background class.
        present: target class -> its site boxes (pixels), ordered row-major.
        present_map: the same boxes in map coordinates.
        absent: target classes that appear nowhere in the scene.
        seed: the seed the scene was built with.
    """

    model_config = ConfigDict(frozen=True)

    scene: str
    width: int
    height: int
    cell_px: int
    crs: str
    transform: tuple[float, float, float, float, float, float]
    backgrounds: dict[str, str]
    present: dict[str, tuple[PixelBox, ...]]
    present_map: dict[str, tuple[MapBox, ...]]
    absent: tuple[str, ...]
    seed: int


class AnalystScene(BaseModel):
    """A written scene: the GeoTIFF, its truth file and the truth itself."""

    model_config = ConfigDict(frozen=True)

    path: Path
    truth_path: Path
    truth: SceneTruth


def _family(label: str) -> frozenset[str]:
    for fam in FAMILIES:
        if label in fam:
            return fam
    return frozenset({label})


def _by_class(chips: Sequence[Chip]) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for c in chips:
        if c.label:
            out.setdefault(c.label, []).append(c.image)
    for paths in out.values():
        paths.sort()
    return out


def _place_sites(rng: random.Random, side: int, wanted: Sequence[tuple[str, int]], tries: int = 2000,
                 ) -> dict[str, list[tuple[int, int, int]]]:
    """Cells of each site: ``(row, col, size)`` with size 1 or 2, at least one free cell between sites."""
    taken = np.zeros((side, side), bool)  # cells of a site and the ring around it
    sites: dict[str, list[tuple[int, int, int]]] = {label: [] for label, _ in wanted}
    for label, count in wanted:
        for _ in range(count):
            for _ in range(tries):
                size = 2 if rng.random() < 0.5 else 1
                r, c = rng.randrange(side - size + 1), rng.randrange(side - size + 1)
                if not taken[r:r + size, c:c + size].any():
                    taken[max(0, r - 1):r + size + 1, max(0, c - 1):c + size + 1] = True
                    sites[label].append((r, c, size))
                    break
            else:
                raise DataError(f"no room for {count} sites of {label} in a {side} x {side} cell scene")
    return sites


def _chip_pixels(path: Path, cell: int, turn: int = 0, flip: bool = False) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB").resize((cell, cell), Image.Resampling.BILINEAR))
    rgb = np.rot90(rgb, turn)
    return np.ascontiguousarray(rgb[:, ::-1] if flip else rgb)


def build_scene(
    chips: Sequence[Chip],
    path: str | os.PathLike[str],
    *,
    backgrounds: Sequence[str],
    present: Mapping[str, int] | Sequence[str],
    absent: Sequence[str] = (),
    seed: int = 0,
    side: int = 20,
    cell_px: int = CELL_PX,
    pixel_m: float = PIXEL_M,
) -> AnalystScene:
    """Write one analyst scene (GeoTIFF + ``.truth.json``) from labelled chips.

    Args:
        chips: the chips to draw from (e.g. the validation split of a captioned folder).
        path: the GeoTIFF to write; the truth goes to the same stem with ``.truth.json``.
        backgrounds: four classes, filling the nw, ne, sw and se quadrants.
        present: target classes with their number of sites (2-4), or a list of classes (2-4 sites each, drawn).
        absent: classes recorded as absent (they must not be a background or present).
        seed: layout, chip choice and georeference seed.
        side: cells per side (an even number >= 4).
        cell_px: pixels per cell (chips are resized to it).
        pixel_m: ground sample distance of the map transform, metres.

    Raises:
        DataError: unknown classes, overlapping roles, too few chips for the sites, or no room for them.
    """
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.transform import from_origin

    from rsrag.tools.georef import pixel_box_to_map

    by_class = _by_class(chips)
    rng = random.Random(seed)
    wanted = [(c, n) for c, n in present.items()] if isinstance(present, Mapping) else [
        (c, rng.randint(2, 4)) for c in present]
    targets = [c for c, _ in wanted]
    if len(backgrounds) != 4:
        raise DataError(f"a scene needs 4 background classes (one per quadrant), got {list(backgrounds)}")
    if side < 4 or side % 2:
        raise DataError(f"side must be an even number of cells >= 4, got {side}")
    unknown = sorted({*backgrounds, *targets, *absent} - set(by_class))
    if unknown:
        raise DataError(f"no chips of class(es) {unknown} in the chip set; known: {sorted(by_class)}")
    roles = [*set(backgrounds), *targets, *absent]
    if len(set(roles)) != len(roles):
        raise DataError(f"a class has two roles (background, present, absent): {roles}")
    for label, n in wanted:
        if n < 1:
            raise DataError(f"{label}: a present class needs at least one site, got {n}")
    sites = _place_sites(rng, side, wanted)
    cell = cell_px
    data = np.zeros((side * cell, side * cell, 3), np.uint8)
    half = side // 2
    for r in range(side):
        for c in range(side):
            back = backgrounds[(r >= half) * 2 + (c >= half)]
            data[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = _chip_pixels(
                rng.choice(by_class[back]), cell, rng.randrange(4), rng.random() < 0.5)
    boxes: dict[str, tuple[PixelBox, ...]] = {}
    for label, spots in sites.items():
        pool: list[Path] = []
        for r, c, size in spots:
            for dr in range(size):
                for dc in range(size):
                    if not pool:  # distinct chips until the class runs out, then another shuffled pass
                        pool = list(by_class[label])
                        rng.shuffle(pool)
                    rr, cc = r + dr, c + dc
                    data[rr * cell:(rr + 1) * cell, cc * cell:(cc + 1) * cell] = _chip_pixels(pool.pop(), cell)
        ordered = sorted(spots)
        boxes[label] = tuple(PixelBox(x0=c * cell, y0=r * cell, x1=(c + s) * cell, y1=(r + s) * cell)
                             for r, c, s in ordered)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    origin = (500000.0 + rng.randrange(0, 200) * 1000.0, 5000000.0 + rng.randrange(0, 200) * 1000.0)
    transform = from_origin(origin[0], origin[1], pixel_m, pixel_m)
    size_px = side * cell
    tmp = out.with_name(out.name + ".tmp.tif")
    with rasterio.open(
        tmp, "w", driver="GTiff", width=size_px, height=size_px, count=3, dtype="uint8", crs=CRS,
        transform=transform, tiled=True, blockxsize=256, blockysize=256, compress="deflate", photometric="RGB",
    ) as dst:
        dst.write(data.transpose(2, 0, 1))
        factors = [f for f in (2, 4, 8, 16) if size_px // f >= 256]
        if factors:
            dst.build_overviews(factors, Resampling.average)
    os.replace(tmp, out)
    truth = SceneTruth(
        scene=out.name, width=size_px, height=size_px, cell_px=cell, crs=CRS, transform=tuple(transform.to_gdal()),
        backgrounds=dict(zip(QUADRANTS, backgrounds)), present=boxes,
        present_map={k: tuple(pixel_box_to_map(b, transform, CRS) for b in v) for k, v in boxes.items()},
        absent=tuple(absent), seed=seed,
    )
    truth_path = out.with_name(out.stem + ".truth.json")
    truth_path.write_text(truth.model_dump_json(indent=1), encoding="utf-8")
    return AnalystScene(path=out, truth_path=truth_path, truth=truth)


def read_truth(path: str | os.PathLike[str]) -> SceneTruth:
    """Read a ``.truth.json`` (or the truth beside a scene's GeoTIFF)."""
    p = Path(path)
    if p.suffix.lower() in (".tif", ".tiff"):
        p = p.with_name(p.stem + ".truth.json")
    try:
        return SceneTruth.model_validate(json.loads(p.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise DataError(f"{p}: not a readable scene truth file ({exc})") from exc


def plan_roles(classes: Sequence[str], n_scenes: int, seed: int, *, background_pool: Sequence[str] = BACKGROUND_POOL,
               ) -> list[tuple[tuple[str, ...], tuple[str, str], tuple[str, str]]]:
    """Backgrounds, 2 present and 2 absent classes for each scene, every class in rotation as a target.

    The classes are shuffled once by ``seed`` and taken four at a time, cyclically (so with 30 classes every
    class is a target at least twice in 15 scenes); which two of the four are present is drawn. Backgrounds
    are four pool classes outside the targets' families.
    """
    if len(classes) < 4:
        raise DataError(f"need at least 4 target classes, got {list(classes)}")
    rng = random.Random(seed)
    order = sorted(classes)
    rng.shuffle(order)
    plans = []
    for i in range(n_scenes):
        four = [order[(4 * i + k) % len(order)] for k in range(4)]
        # a class repeated within one scene's four (fewer than 8 classes): take the next distinct ones
        j = 4 * i + 4
        while len(set(four)) < 4:
            four = list(dict.fromkeys(four)) + [order[j % len(order)]]
            j += 1
        rng.shuffle(four)
        excluded = set().union(*(_family(t) for t in four))
        pool = [b for b in background_pool if b not in excluded]
        if len(pool) < 4:
            raise DataError(f"scene {i}: fewer than 4 background classes left outside the targets {four}")
        backs = tuple(rng.sample(pool, 4))
        plans.append((backs, (four[0], four[1]), (four[2], four[3])))
    return plans


def build_scene_set(
    data: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    n_scenes: int = 20,
    seed: int = 0,
    side: int = 20,
    split: str = "val",
    val_fraction: float = 0.1,
    classes: Sequence[str] | None = None,
    background_pool: Sequence[str] | None = None,
) -> list[AnalystScene]:
    """Build (or reuse, when the truth files match) ``n_scenes`` analyst scenes from a captioned chip folder.

    Each scene: 4 background quadrants, 2 present target classes (2-4 sites each), 2 absent target classes,
    targets rotating through ``classes`` (default: every class of the folder). Scene ``i`` uses seed
    ``seed * 1000 + i``. A scene whose GeoTIFF and truth already exist with the same seed and roles is kept.

    Args:
        data: folder with ``captions.jsonl`` (see :mod:`rsrag.tools.captioned`).
        out_dir: where ``scene_NN.tif`` and ``scene_NN.truth.json`` go.
        n_scenes: how many scenes.
        seed: seed of the rotation and of every layout.
        side: cells per scene side (20 cells of 150 px: 3,000 px).
        split: ``"val"`` (default: never-trained chips), ``"train"`` or ``"all"`` (a held-out folder).
        val_fraction: the split's validation share (as the encoder training used).
        classes: the target classes in rotation (default: all classes of the folder).
        background_pool: classes to draw the quadrants from (default: :data:`BACKGROUND_POOL` classes the
            folder has).
    """
    chips = select_split(read_chips(Path(data)), split, val_fraction)
    labels = sorted({c.label for c in chips if c.label})
    targets = list(classes) if classes is not None else labels
    pool = list(background_pool) if background_pool is not None else [b for b in BACKGROUND_POOL if b in labels]
    out = Path(out_dir)
    scenes = []
    for i, (backs, present, absent) in enumerate(plan_roles(targets, n_scenes, seed, background_pool=pool)):
        path = out / f"scene_{i:02d}.tif"
        scene_seed = seed * 1000 + i
        truth_path = path.with_name(path.stem + ".truth.json")
        if path.is_file() and truth_path.is_file():
            try:
                truth = read_truth(truth_path)
            except DataError:
                truth = None
            if (truth is not None and truth.seed == scene_seed and tuple(truth.backgrounds.values()) == backs
                    and set(truth.present) == set(present) and set(truth.absent) == set(absent)
                    and truth.width == side * CELL_PX):
                scenes.append(AnalystScene(path=path, truth_path=truth_path, truth=truth))
                continue
        scenes.append(build_scene(chips, path, backgrounds=backs, present=list(present), absent=absent,
                                  seed=scene_seed, side=side))
    return scenes
