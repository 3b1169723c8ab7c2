"""A catalog of scenes: an archive registered once, then searched by place, time and property.

A :class:`Catalog` is a table in the store (the same store the patch indexes live in, so it is shared by
every process and, on a shared file system or Weaviate, by every machine). Each record is one scene: its
source (a path or URL, as given), fingerprint, size, bands, CRS, ground sample distance, footprint as a
lon/lat polygon, acquisition time and free-form properties where the source has them.

Scenes are registered from paths, glob patterns, folders, URLs, or STAC (a static catalog, an
ItemCollection or a single Item, read with ``pystac``)::

    catalog = Catalog(open_store(), name="harbours")
    report = catalog.add(["/data/scenes/*.tif", "https://example.org/stac/catalog.json"])
    hits = catalog.find(point=(4.40, 51.22), radius_km=20, start="2024-01-01")
    stac = catalog.to_stac(index_status=lambda fingerprint: "indexed")

Nothing here loads an encoder; whether a scene is indexed is asked of the patch store by the caller.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rsrag.tools.errors import QueryError, RsragError
from rsrag.tools.sources import RASTER_SUFFIXES
from rsrag.tools.store.base import FieldType, ScalarField, Store, StoreTable, TableSchema

__all__ = ["AddReport", "Catalog", "CatalogScene", "footprint_of_scene"]

_STAC_SUFFIXES = {".json", ".geojson"}
_SCHEMA_FIELDS = (
    ScalarField("id", FieldType.STR),
    ScalarField("source", FieldType.STR),
    ScalarField("name", FieldType.STR),
    ScalarField("fingerprint", FieldType.STR),
    ScalarField("width", FieldType.INT),
    ScalarField("height", FieldType.INT),
    ScalarField("bands", FieldType.INT),
    ScalarField("dtype", FieldType.STR),
    ScalarField("crs", FieldType.STR, nullable=True),
    ScalarField("gsd", FieldType.FLOAT, nullable=True),
    ScalarField("west", FieldType.FLOAT, nullable=True),
    ScalarField("south", FieldType.FLOAT, nullable=True),
    ScalarField("east", FieldType.FLOAT, nullable=True),
    ScalarField("north", FieldType.FLOAT, nullable=True),
    ScalarField("footprint", FieldType.STR, nullable=True),
    ScalarField("datetime", FieldType.STR, nullable=True),
    ScalarField("properties", FieldType.STR),
    ScalarField("stac_id", FieldType.STR, nullable=True),
    ScalarField("added", FieldType.STR),
)


class CatalogScene(BaseModel):
    """One registered scene (small values only).

    Attributes:
        id: the catalog's id of the scene (the STAC item id when it came from STAC, else the file stem,
            made unique).
        source: the path or URL the scene is read from, as registered.
        fingerprint: the scene's cheap fingerprint (the patch index key part).
        footprint: the lon/lat polygon (GeoJSON geometry) where georeferenced.
        bbox: ``(west, south, east, north)`` in degrees, where georeferenced.
        gsd: ground sample distance in CRS units per pixel (the mean of x and y), where known.
        datetime: acquisition time (ISO 8601) where the source has one.
        properties: other properties of the source (STAC item properties, for example).
    """

    model_config = ConfigDict(frozen=True)

    id: str
    source: str
    name: str
    fingerprint: str
    width: int
    height: int
    bands: int
    dtype: str
    crs: str | None = None
    gsd: float | None = None
    bbox: tuple[float, float, float, float] | None = None
    footprint: dict[str, Any] | None = None
    datetime: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)
    stac_id: str | None = None
    added: str = ""

    def to_feature(self, index_status: str | None = None) -> dict[str, Any]:
        """The scene as a GeoJSON Feature (lon/lat footprint; ``geometry`` null when not georeferenced)."""
        props: dict[str, Any] = {
            "id": self.id, "source": self.source, "fingerprint": self.fingerprint, "width": self.width,
            "height": self.height, "bands": self.bands, "dtype": self.dtype, "crs": self.crs, "gsd": self.gsd,
            "datetime": self.datetime, **{f"properties:{k}": v for k, v in self.properties.items()},
        }
        if index_status is not None:
            props["rsrag:index"] = index_status
        return {"type": "Feature", "id": self.id, "geometry": self.footprint, "bbox": list(self.bbox) if self.bbox else None,
                "properties": props}


class AddReport(BaseModel):
    """What :meth:`Catalog.add` did: scenes added or updated, and the sources it could not register."""

    added: list[str] = Field(default_factory=list)
    updated: list[str] = Field(default_factory=list)
    failed: list[tuple[str, str]] = Field(default_factory=list)
    """``(source, one-line reason)`` for each source that could not be registered; the rest were."""


def footprint_of_scene(scene: Any) -> tuple[dict[str, Any] | None, tuple[float, float, float, float] | None]:
    """The lon/lat footprint polygon and bbox of an open :class:`~rsrag.tools.raster.Scene` (None, None if not
    georeferenced). The four corners are transformed, so a rotated or projected scene keeps its true shape."""
    if not scene.georeferenced or scene.crs is None:
        return None, None
    from rsrag.tools.georef import points_to_lonlat

    t = scene.transform
    corners = [t * (0, 0), t * (scene.width, 0), t * (scene.width, scene.height), t * (0, scene.height)]
    ring = [(round(lon, 7), round(lat, 7)) for lon, lat in points_to_lonlat(corners, scene.crs)]
    ring.append(ring[0])
    lons, lats = [p[0] for p in ring], [p[1] for p in ring]
    return {"type": "Polygon", "coordinates": [[list(p) for p in ring]]}, (min(lons), min(lats), max(lons), max(lats))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _parse_time(value: str | datetime | None, what: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(f"{what} {value!r} is not an ISO 8601 date or time (e.g. 2024-05-01 or 2024-05-01T10:00:00Z)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _distance_to_bbox_km(lon: float, lat: float, bbox: tuple[float, float, float, float]) -> float:
    from rsrag.tools.georef import great_circle_km  # pyproj stays out of the catalog's import

    west, south, east, north = bbox
    nearest_lon, nearest_lat = min(max(lon, west), east), min(max(lat, south), north)
    return great_circle_km(lon, lat, nearest_lon, nearest_lat)


def _is_url(source: str) -> bool:
    return "://" in source and not source.startswith("file://")


class Catalog:
    """The scenes of one named catalog, stored in a :class:`~rsrag.tools.store.base.Store`.

    Args:
        store: the store holding the catalog table (LanceDB folder or Weaviate).
        name: the catalog's name (letters, digits, ``-`` and ``_``); several catalogs share a store.
        opener: opens a source as a Scene (default :func:`rsrag.tools.raster.open_scene`).
    """

    def __init__(self, store: Store, name: str = "default", opener: Callable[[str], Any] | None = None) -> None:
        if not name or not all(c.isalnum() or c in "-_" for c in name):
            raise QueryError(f"catalog name {name!r} may only use letters, digits, '-' and '_'")
        self.store = store
        self.name = name
        self.schema = TableSchema(name=f"catalog_{name.replace('-', '_')}", key="id", fields=_SCHEMA_FIELDS)
        self._opener = opener

    # --- storage ------------------------------------------------------------------------------------

    def _table(self, create: bool = False) -> StoreTable | None:
        return self.store.table(self.schema) if create else self.store.open_table(self.schema)

    def _open(self, source: str) -> Any:
        if self._opener is not None:
            return self._opener(source)
        from rsrag.tools.raster import open_scene

        return open_scene(source)

    @staticmethod
    def _record(scene: CatalogScene) -> dict[str, Any]:
        west, south, east, north = scene.bbox or (None, None, None, None)
        return {
            "id": scene.id, "source": scene.source, "name": scene.name, "fingerprint": scene.fingerprint,
            "width": scene.width, "height": scene.height, "bands": scene.bands, "dtype": scene.dtype,
            "crs": scene.crs, "gsd": scene.gsd, "west": west, "south": south, "east": east, "north": north,
            "footprint": json.dumps(scene.footprint) if scene.footprint else None, "datetime": scene.datetime,
            "properties": json.dumps(scene.properties, sort_keys=True, default=str), "stac_id": scene.stac_id,
            "added": scene.added,
        }

    @staticmethod
    def _from_row(row: dict[str, Any]) -> CatalogScene:
        bbox = None
        if row.get("west") is not None:
            bbox = (float(row["west"]), float(row["south"]), float(row["east"]), float(row["north"]))
        return CatalogScene(
            id=row["id"], source=row["source"], name=row["name"], fingerprint=row["fingerprint"],
            width=int(row["width"]), height=int(row["height"]), bands=int(row["bands"]), dtype=row["dtype"],
            crs=row.get("crs"), gsd=row.get("gsd"), bbox=bbox,
            footprint=json.loads(row["footprint"]) if row.get("footprint") else None,
            datetime=row.get("datetime"), properties=json.loads(row.get("properties") or "{}"),
            stac_id=row.get("stac_id"), added=row.get("added") or "",
        )

    def scenes(self) -> list[CatalogScene]:
        """Every registered scene, ordered by id."""
        table = self._table()
        if table is None:
            return []
        rows = [dict(zip(batch, values)) for batch in table.scan() for values in zip(*batch.values())]
        return sorted((self._from_row(r) for r in rows), key=lambda s: s.id)

    def get(self, ref: str) -> CatalogScene:
        """The scene with id, source or fingerprint ``ref``."""
        for scene in self.scenes():
            if ref in (scene.id, scene.source, scene.fingerprint):
                return scene
        known = ", ".join(s.id for s in self.scenes()[:10]) or "none (add some with `rsrag catalog add`)"
        raise QueryError(f"catalog {self.name!r} has no scene {ref!r}; scenes: {known}")

    def remove(self, refs: Sequence[str]) -> list[str]:
        """Remove scenes by id, source or fingerprint; returns the removed ids (their indexes stay in the store)."""
        ids = [self.get(ref).id for ref in refs]
        table = self._table()
        if table is not None and ids:
            table.delete({"id": ids})
        return ids

    # --- registration -------------------------------------------------------------------------------

    def add(self, sources: Iterable[str], progress: Callable[[str], None] | None = None) -> AddReport:
        """Register scenes from paths, globs, folders (their images), URLs, or STAC JSON (catalog, collection,
        ItemCollection or Item). A source that cannot be read is reported in :attr:`AddReport.failed` and the
        others are still registered; re-adding a scene updates its record (idempotent)."""
        report = AddReport()
        existing = {s.source: s for s in self.scenes()}
        taken = {s.id for s in existing.values()}
        records: dict[str, CatalogScene] = {}
        for source, stac in self._expand(sources, report):
            try:
                scene = self._describe(source, stac)
            except RsragError as exc:
                report.failed.append((source, str(exc).splitlines()[0]))
                continue
            old = existing.get(scene.source)
            if old is not None:
                scene = scene.model_copy(update={"id": old.id, "added": old.added})
                report.updated.append(scene.id)
            else:
                scene = scene.model_copy(update={"id": self._unique(scene.id, taken), "added": _now()})
                taken.add(scene.id)
                report.added.append(scene.id)
            existing[scene.source] = scene
            records[scene.id] = scene
            if progress is not None:
                progress(scene.id)
        if records:
            table = self._table(create=True)
            assert table is not None
            rows = [self._record(r) for r in records.values()]
            table.upsert({name: [row[name] for row in rows] for name in rows[0]})
        return report

    @staticmethod
    def _unique(base: str, taken: set[str]) -> str:
        candidate, n = base, 2
        while candidate in taken:
            candidate, n = f"{base}-{n}", n + 1
        return candidate

    def _expand(self, sources: Iterable[str], report: AddReport) -> Iterator[tuple[str, dict[str, Any] | None]]:
        """Yield ``(image source, STAC item dict or None)`` for every image the sources name."""
        for raw in sources:
            source = str(raw).strip()
            if not source:
                continue
            if _is_url(source):
                if Path(source.split("?")[0]).suffix.lower() in _STAC_SUFFIXES:
                    yield from self._stac_items(source, report)
                else:
                    yield source, None
                continue
            path = Path(source).expanduser()
            if any(ch in source for ch in "*?["):
                matches = sorted(glob.glob(str(path), recursive=True))
                if not matches:
                    report.failed.append((source, "the pattern matches no file"))
                for match in matches:
                    yield from self._expand([match], report)
            elif path.is_dir():
                images = sorted(p for p in path.rglob("*") if p.suffix.lower() in RASTER_SUFFIXES and p.is_file())
                if not images:
                    report.failed.append((source, "the folder holds no image (.tif, .png, .jpg, .jp2, .vrt ...)"))
                for image in images:
                    yield str(image.resolve()), None
            elif path.suffix.lower() in _STAC_SUFFIXES:
                yield from self._stac_items(str(path.resolve()) if path.exists() else source, report)
            elif not path.exists():
                report.failed.append((source, "no such file or folder"))
            else:
                yield str(path.resolve()), None

    def _stac_items(self, source: str, report: AddReport) -> Iterator[tuple[str, dict[str, Any] | None]]:
        import pystac

        try:
            obj = pystac.read_file(source)
        except Exception as exc:  # pystac raises many kinds (I/O, JSON, STAC validation): report, don't crash
            report.failed.append((source, f"not a readable STAC file: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"))
            return
        if isinstance(obj, pystac.Item):
            items: Iterable[pystac.Item] = [obj]
        elif isinstance(obj, pystac.ItemCollection):
            items = list(obj)
        elif isinstance(obj, pystac.Catalog):  # Collection is a Catalog
            items = obj.get_items(recursive=True)
        else:
            report.failed.append((source, f"STAC {type(obj).__name__} holds no items"))
            return
        for item in items:
            asset = self._image_asset(item)
            if asset is None:
                report.failed.append((f"{source}#{item.id}", "the STAC item has no image asset (GeoTIFF/COG, PNG, JPEG, JPEG 2000)"))
                continue
            yield asset, item.to_dict(include_self_link=False)

    @staticmethod
    def _image_asset(item: Any) -> str | None:
        assets = item.get_assets()
        preferred = ["visual", "image", "data", "analytic"]
        ordered = [assets[k] for k in preferred if k in assets] + [a for k, a in assets.items() if k not in preferred]
        for asset in ordered:
            media = (asset.media_type or "").lower()
            href = asset.get_absolute_href() or asset.href
            suffix = Path(href.split("?")[0]).suffix.lower()
            if "image/" in media or "tiff" in media or suffix in RASTER_SUFFIXES:
                return href
        return None

    def _describe(self, source: str, stac: dict[str, Any] | None) -> CatalogScene:
        scene = self._open(source)
        try:
            info = scene.info
            footprint, bbox = footprint_of_scene(scene)
            properties: dict[str, Any] = {}
            when: str | None = None
            stac_id: str | None = None
            if stac is not None:
                stac_id = stac.get("id")
                properties = {k: v for k, v in (stac.get("properties") or {}).items() if k != "datetime"}
                when = (stac.get("properties") or {}).get("datetime") or properties.get("start_datetime")
                if footprint is None and stac.get("geometry"):
                    footprint = stac["geometry"]
                    box = stac.get("bbox") or []
                    bbox = (float(box[0]), float(box[1]), float(box[2]), float(box[3])) if len(box) >= 4 else None
            gsd = None
            if info.gsd:
                gsd = float(sum(info.gsd) / 2)
            elif isinstance(properties.get("gsd"), int | float):
                gsd = float(properties["gsd"])
            name = Path(source.split("?")[0]).name
            return CatalogScene(
                id=stac_id or Path(name).stem or "scene", source=source, name=name, fingerprint=scene.fingerprint,
                width=scene.width, height=scene.height, bands=scene.count, dtype=info.dtypes[0], crs=info.crs,
                gsd=gsd, bbox=bbox, footprint=footprint, datetime=when, properties=properties, stac_id=stac_id,
            )
        finally:
            scene.close()

    # --- queries ------------------------------------------------------------------------------------

    def find(
        self,
        bbox: Sequence[float] | None = None,
        point: Sequence[float] | None = None,
        radius_km: float = 0.0,
        start: str | datetime | None = None,
        end: str | datetime | None = None,
        where: dict[str, Any] | None = None,
    ) -> list[CatalogScene]:
        """Scenes that match every condition given (none given: all scenes).

        Args:
            bbox: ``[west, south, east, north]`` in degrees: scenes whose footprint box intersects it.
            point: ``[lon, lat]``: scenes within ``radius_km`` of it (0: scenes that contain it).
            start / end: ISO 8601 bounds on the acquisition time (scenes without a time are excluded).
            where: property -> value (equality) on the scene's properties or fields (``gsd``, ``crs``...).

        Returns:
            The matching scenes, nearest first when a point is given, else by id.
        """
        if bbox is not None and (len(bbox) != 4 or bbox[0] > bbox[2] or bbox[1] > bbox[3]):
            raise QueryError(f"bbox must be [west, south, east, north] with west <= east and south <= north, got {list(bbox)}")
        if point is not None and (len(point) != 2 or not -180 <= point[0] <= 180 or not -90 <= point[1] <= 90):
            raise QueryError(f"point must be [lon, lat] in degrees, got {list(point)}")
        if radius_km < 0:
            raise QueryError(f"radius_km must be >= 0, got {radius_km}")
        t0, t1 = _parse_time(start, "start"), _parse_time(end, "end")
        out: list[tuple[float, CatalogScene]] = []
        for scene in self.scenes():
            distance = 0.0
            if bbox is not None:
                if scene.bbox is None or scene.bbox[0] > bbox[2] or scene.bbox[2] < bbox[0] or scene.bbox[1] > bbox[3] or scene.bbox[3] < bbox[1]:
                    continue
            if point is not None:
                if scene.bbox is None:
                    continue
                distance = _distance_to_bbox_km(point[0], point[1], scene.bbox)
                if distance > radius_km + 1e-9:
                    continue
            if t0 is not None or t1 is not None:
                when = _parse_time(scene.datetime, "scene datetime") if scene.datetime else None
                if when is None or (t0 is not None and when < t0) or (t1 is not None and when > t1):
                    continue
            if where and not all(self._matches(scene, k, v) for k, v in where.items()):
                continue
            out.append((distance, scene))
        out.sort(key=lambda pair: (pair[0], pair[1].id) if point is not None else (0.0, pair[1].id))
        return [scene for _, scene in out]

    @staticmethod
    def _matches(scene: CatalogScene, key: str, value: Any) -> bool:
        if key in CatalogScene.model_fields and key != "properties":
            return getattr(scene, key) == value
        return scene.properties.get(key) == value

    # --- export -------------------------------------------------------------------------------------

    def to_geojson(self, index_status: Callable[[str], str] | None = None) -> dict[str, Any]:
        """The catalog as a GeoJSON FeatureCollection of lon/lat footprints."""
        return {"type": "FeatureCollection", "features": [
            s.to_feature(index_status(s.fingerprint) if index_status else None) for s in self.scenes()]}

    def to_stac(self, index_status: Callable[[str], str] | None = None) -> dict[str, Any]:
        """The catalog as a STAC ItemCollection: one item per scene, its image as the ``data`` asset with the
        rsrag index status as an asset property (``rsrag:index``). Scenes without a footprint get a null
        geometry, as STAC allows."""
        import pystac

        items = []
        for s in self.scenes():
            when = _parse_time(s.datetime, "scene datetime") if s.datetime else None
            props = dict(s.properties)
            if when is None:
                props.setdefault("rsrag:added", s.added)
            item = pystac.Item(
                id=s.id, geometry=s.footprint, bbox=list(s.bbox) if s.bbox else None,
                datetime=when or _parse_time(s.added or _now(), "added"), properties=props,
            )
            extra: dict[str, Any] = {"rsrag:fingerprint": s.fingerprint, "rsrag:width": s.width, "rsrag:height": s.height}
            if index_status is not None:
                extra["rsrag:index"] = index_status(s.fingerprint)
            if s.gsd is not None:
                item.properties["gsd"] = s.gsd
            if s.crs:
                item.properties["proj:code"] = s.crs
            item.add_asset("data", pystac.Asset(href=s.source, media_type=_media_type(s.source), roles=["data"], extra_fields=extra))
            items.append(item)
        return pystac.ItemCollection(items).to_dict()


def _media_type(source: str) -> str:
    suffix = Path(source.split("?")[0]).suffix.lower()
    return {".tif": "image/tiff; application=geotiff", ".tiff": "image/tiff; application=geotiff", ".png": "image/png",
            ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".jp2": "image/jp2", ".vrt": "application/xml"}.get(suffix, "application/octet-stream")
