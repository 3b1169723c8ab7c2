"""Reading knowledge files (JSONL, CSV, GeoJSON) into validated entries, one verdict per record.

A bad record never stops an import: it becomes a :class:`RecordIssue` naming the file, the line (or the
GeoJSON feature) and the field at fault, and the other records go on. Files are decoded as UTF-8 (a leading
byte-order mark is dropped) with invalid bytes kept as escapes, so a record with non-UTF-8 text is reported
by field instead of failing the whole file.

Records are validated, never coerced: ``id`` and the text fields (``name``, ``category``, ``description``,
``source``, ``licence``) must be strings (a number, list or object there is reported, not stringified);
geometries must be valid GeoJSON (a known type, closed rings of at least four positions, no
self-intersections: checked with shapely); a CSV record with an unterminated or stray quote is reported on
its own line and parsing resumes on the next line, so it never swallows the records after it.

Column / key mapping (case-insensitive): ``id`` | ``entry_id`` | ``uid``; ``name`` | ``title`` |
``landmark``; ``category`` | ``class`` | ``type``; ``description`` | ``text`` | ``summary``; ``images`` |
``image`` (a list, or ``;``-separated in CSV); ``lon``/``lng``/``longitude`` + ``lat``/``latitude`` (+ ``crs``),
or ``location`` as ``{"lon", "lat"}``, ``{"x", "y", "crs"}`` or a GeoJSON geometry; ``source``; ``licence`` |
``license``; ``kind``. Every other key (RSWK's history, architecture, function, remote-sensing indicators,
a textual location...) is kept verbatim in :attr:`KnowledgeEntry.fields`.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rsrag.tools.errors import DataError
from rsrag.tools.knowledge.entry import LONLAT_CRS, ImageRef, KnowledgeEntry, Location

MAX_FIELD_CHARS = 200_000
"""Default limit on one text field's length (longer fields are reported, not truncated)."""

_ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("id", "entry_id", "uid"),
    "name": ("name", "title", "landmark"),
    "category": ("category", "class", "type"),
    "description": ("description", "text", "summary"),
    "images": ("images", "image", "image_paths", "image_path"),
    "source": ("source",),
    "licence": ("licence", "license"),
    "kind": ("kind",),
}
_GEO_KEYS = {"lon", "lng", "longitude", "lat", "latitude", "crs", "geometry"}
_TEXT_FIELDS = ("name", "category", "description", "source", "licence")
GEOMETRY_TYPES = ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon",
                  "GeometryCollection")
_JSON_TYPES = {dict: "an object", list: "a list", bool: "a boolean", int: "a number", float: "a number"}


@dataclass(frozen=True)
class RecordIssue:
    """Why one record was skipped."""

    source: str
    line: int
    field: str | None
    message: str
    record_id: str | None = None
    unit: str = "line"

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.unit == "line" else f"{self.source}: {self.unit} {self.line}"
        what = f" field {self.field!r}:" if self.field else ""
        rid = f" (id {self.record_id!r})" if self.record_id else ""
        return f"{where}{rid}:{what} {self.message}"


@dataclass(frozen=True)
class RecordResult:
    """One record's verdict: an entry, or an issue."""

    line: int
    entry: KnowledgeEntry | None = None
    issue: RecordIssue | None = None


class _Bad(Exception):
    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _pick(raw: dict[str, Any], name: str) -> tuple[str | None, Any]:
    lower = {k.lower(): k for k in raw}
    for alias in _ALIASES[name]:
        if alias in lower:
            return lower[alias], raw[lower[alias]]
    return None, None


def _check_text(value: Any, field: str, max_chars: int) -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _Bad(field, "text is not valid UTF-8; re-save the file as UTF-8") from None
        if len(value) > max_chars:
            raise _Bad(field, f"text has {len(value):,} characters, more than the limit of {max_chars:,}; "
                              "split the record or raise max_field_chars")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_text(k, field, max_chars)
            _check_text(v, f"{field}.{k}" if field else str(k), max_chars)
    elif isinstance(value, list):
        for v in value:
            _check_text(v, field, max_chars)


def _coords(geometry: Any) -> list[tuple[float, float]]:
    if isinstance(geometry, dict):
        if geometry.get("type") == "GeometryCollection":
            return [c for g in geometry.get("geometries", []) for c in _coords(g)]
        return _coords(geometry.get("coordinates"))
    if isinstance(geometry, (list, tuple)) and len(geometry) >= 2 and all(isinstance(v, (int, float)) for v in geometry[:2]):
        return [(float(geometry[0]), float(geometry[1]))]
    if isinstance(geometry, (list, tuple)):
        return [c for g in geometry for c in _coords(g)]
    return []


def _kind_of(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _positions(value: Any, field: str, where: str) -> list[list[float]]:
    if not isinstance(value, list) or not value:
        raise _Bad(field, f"{where}: expected a non-empty list of positions, got {_kind_of(value)}")
    for pos in value:
        _position(pos, field, where)
    return value


def _position(pos: Any, field: str, where: str) -> None:
    import math

    if (not isinstance(pos, list) or not 2 <= len(pos) <= 3
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in pos)):
        raise _Bad(field, f"{where}: position {json.dumps(pos)[:60]} is not [x, y] or [x, y, z] in finite numbers")


def _check_rings(rings: Any, field: str, where: str) -> None:
    if not isinstance(rings, list) or not rings:
        raise _Bad(field, f"{where}: a polygon needs a list of rings")
    for n, ring in enumerate(rings, 1):
        label = f"{where}, ring {n}"
        _positions(ring, field, label)
        if len(ring) < 4:
            raise _Bad(field, f"{label} has {len(ring)} positions; a ring needs at least 4 (the first repeated last)")
        if ring[0] != ring[-1]:
            raise _Bad(field, f"{label} is not closed: it starts at {ring[0]} and ends at {ring[-1]}; "
                              "repeat the first position at the end")


def check_geometry(geometry: Any, field: str = "geometry") -> None:
    """Validate a GeoJSON geometry object: a known type, well-formed coordinates, closed rings, and no
    self-intersection or other invalidity (shapely's validity check).

    Raises:
        _Bad: naming ``field`` and what is wrong.
    """
    if not isinstance(geometry, dict):
        raise _Bad(field, f"expected a GeoJSON geometry object, got {_kind_of(geometry)}")
    kind = geometry.get("type")
    if kind not in GEOMETRY_TYPES:
        raise _Bad(field, f"unknown geometry type {kind!r}; use one of {', '.join(GEOMETRY_TYPES)}")
    if kind == "GeometryCollection":
        members = geometry.get("geometries")
        if not isinstance(members, list):
            raise _Bad(field, "a GeometryCollection needs a list of geometries")
        for member in members:
            check_geometry(member, field)
        return
    coords = geometry.get("coordinates")
    where = f"{kind} coordinates"
    if kind == "Point":
        _position(coords, field, where)
    elif kind in ("MultiPoint", "LineString"):
        positions = _positions(coords, field, where)
        if kind == "LineString" and len(positions) < 2:
            raise _Bad(field, f"{where}: a LineString needs at least 2 positions")
    elif kind == "MultiLineString":
        if not isinstance(coords, list) or not coords:
            raise _Bad(field, f"{where}: expected a list of lines")
        for n, line in enumerate(coords, 1):
            _positions(line, field, f"{where}, line {n}")
    elif kind == "Polygon":
        _check_rings(coords, field, where)
    else:  # MultiPolygon
        if not isinstance(coords, list) or not coords:
            raise _Bad(field, f"{where}: expected a list of polygons")
        for n, polygon in enumerate(coords, 1):
            _check_rings(polygon, field, f"{where}, polygon {n}")
    import shapely
    from shapely.geometry import shape

    try:
        geom = shape(geometry)
    except (ValueError, TypeError, shapely.errors.ShapelyError) as exc:
        raise _Bad(field, f"{kind} is not a valid geometry ({exc})") from None
    if not geom.is_valid:
        raise _Bad(field, f"{kind} is not a valid geometry: {shapely.is_valid_reason(geom)}")


def _to_lonlat(x: float, y: float, crs: str) -> tuple[float, float]:
    if crs.upper() in (LONLAT_CRS, "OGC:CRS84", "WGS84", "CRS84"):
        return x, y
    from pyproj import CRS, Transformer
    from pyproj.exceptions import CRSError

    try:
        tr = Transformer.from_crs(CRS.from_user_input(crs), CRS.from_epsg(4326), always_xy=True)
    except CRSError as exc:
        raise _Bad("crs", f"unknown CRS {crs!r} ({exc})") from None
    lon, lat = tr.transform(x, y)
    return float(lon), float(lat)


def _location(raw: dict[str, Any], default_crs: str) -> Location | None:
    try:
        return _location_unchecked(raw, default_crs)
    except ValidationError as exc:
        raise _Bad("location", "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None


def _location_unchecked(raw: dict[str, Any], default_crs: str) -> Location | None:
    lower = {k.lower(): v for k, v in raw.items()}
    crs = lower.get("crs") or default_crs
    if not isinstance(crs, str):
        raise _Bad("crs", f"expected a CRS name such as 'EPSG:32633', got {_kind_of(crs)}")
    loc = lower.get("location")
    geometry = lower.get("geometry")
    geometry_field = "geometry"
    if geometry is not None:
        check_geometry(geometry, "geometry")
    x = y = None
    if isinstance(loc, dict):
        if "type" in loc and ("coordinates" in loc or "geometries" in loc):
            check_geometry(loc, "location")
            geometry, geometry_field = loc, "location"
        else:
            crs = str(loc.get("crs") or crs)
            x = loc.get("lon", loc.get("lng", loc.get("x")))
            y = loc.get("lat", loc.get("y"))
    if x is None and y is None:
        x = next((lower[k] for k in ("lon", "lng", "longitude", "x") if lower.get(k) not in (None, "")), None)
        y = next((lower[k] for k in ("lat", "latitude", "y") if lower.get(k) not in (None, "")), None)
    if geometry is not None:
        pts = _coords(geometry)
        if not pts:
            raise _Bad(geometry_field, "geometry has no coordinates")
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
        lon, lat = _to_lonlat(cx, cy, crs)
        return Location(crs=crs, geometry=geometry, lon=lon, lat=lat)
    if x is None and y is None:
        return None
    try:
        fx, fy = float(x), float(y)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise _Bad("location", f"coordinates ({x!r}, {y!r}) are not numbers") from None
    lon, lat = _to_lonlat(fx, fy, crs)
    return Location(crs=crs, x=fx, y=fy, lon=lon, lat=lat)


def _image_refs(value: Any, base: Path, sep: str | None) -> tuple[ImageRef, ...]:
    from PIL import Image, UnidentifiedImageError

    if value in (None, ""):
        return ()
    items = value.split(sep) if isinstance(value, str) and sep else [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise _Bad("images", f"expected a list of image paths, got {type(value).__name__}")
    refs = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise _Bad("images", f"image path {item!r} is not a non-empty string")
        path = Path(item.strip()).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise _Bad("images", f"image file not found: {path}")
        try:
            with Image.open(path) as im:
                im.verify()
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise _Bad("images", f"{path} is not a readable image ({type(exc).__name__})") from None
        refs.append(ImageRef(path=str(path.resolve()), sha1=hashlib.sha1(path.read_bytes()).hexdigest()))
    return tuple(refs)


def record_to_entry(raw: dict[str, Any], *, base: Path, source: str, max_field_chars: int = MAX_FIELD_CHARS,
                    image_sep: str | None = None, default_crs: str = LONLAT_CRS) -> KnowledgeEntry:
    """Validate one raw record (a parsed JSON object, CSV row or GeoJSON feature's properties).

    Raises:
        _Bad: with the field at fault (caught by the readers and turned into a :class:`RecordIssue`).
    """
    if not isinstance(raw, dict):
        raise _Bad(None, f"expected an object, got {type(raw).__name__}")
    raw = {k: v for k, v in raw.items() if v not in (None, "")}
    for key, value in raw.items():
        _check_text(key, str(key), max_field_chars)
        _check_text(value, str(key), max_field_chars)
    used: set[str] = set()
    vals: dict[str, Any] = {}
    for name in _ALIASES:
        key, value = _pick(raw, name)
        if key is not None:
            used.add(key)
            vals[name] = value
    if vals.get("id") in (None, ""):
        raise _Bad("id", "missing id: every record needs a unique, non-empty id")
    if not isinstance(vals["id"], str):
        shown = json.dumps(vals["id"], ensure_ascii=False)[:60]
        raise _Bad("id", f"id must be a string, got {_kind_of(vals['id'])} {shown}"
                         + (f"; write it in quotes: \"{vals['id']}\"" if isinstance(vals["id"], int) else ""))
    loc_raw = raw.get("location") if isinstance(raw.get("location"), dict) else None
    geo = {k: v for k, v in raw.items() if k.lower() in _GEO_KEYS or (k.lower() == "location" and loc_raw is not None)}
    used.update(geo)
    fields: dict[str, Any] = {}
    if isinstance(raw.get("fields"), dict):
        used.add("fields")
        fields.update(raw["fields"])
    fields.update({k: v for k, v in raw.items() if k not in used})
    images = _image_refs(vals.pop("images", None), base, image_sep)
    location = _location(geo, default_crs)
    for name in _TEXT_FIELDS:
        if name in vals and not isinstance(vals[name], str):
            shown = json.dumps(vals[name], ensure_ascii=False, default=str)[:60]
            raise _Bad(name, f"{name} must be a string, got {_kind_of(vals[name])} {shown}; put structured "
                             "values under another key (they are kept as fields)")
    if "kind" in vals and vals["kind"] not in ("knowledge", "concept"):
        raise _Bad("kind", f"kind must be 'knowledge' or 'concept', got {json.dumps(vals['kind'])[:60]}")
    vals.setdefault("source", source)
    try:
        return KnowledgeEntry(**vals, fields=fields, images=images, location=location)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        raise _Bad(field, err["msg"]) from None


FILE_TYPES = (".jsonl", ".ndjson", ".csv", ".geojson", ".json")


def check_file(path: str | Path) -> Path:
    """``path`` if it names a knowledge file rsrag can read (checked before any work starts).

    Raises:
        DataError: a folder, a missing file, or an unknown file type.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder; kb add takes one .jsonl, .csv or .geojson file (for a folder of "
                        "class-labelled images use `rsrag kb concepts FOLDER`)")
    if not path.is_file():
        raise DataError(f"knowledge file not found: {path}")
    if path.suffix.lower() not in FILE_TYPES:
        raise DataError(f"{path}: unknown knowledge file type {path.suffix.lower()!r}; use .jsonl, .csv or .geojson")
    return path


def read_records(path: str | Path, images_dir: str | Path | None = None, *,
                 max_field_chars: int = MAX_FIELD_CHARS) -> Iterator[RecordResult]:
    """Read a JSONL, CSV or GeoJSON knowledge file, validating each record.

    Image paths are relative to ``images_dir`` (default: the file's folder). Duplicate ids within the file
    are reported on the later record.

    Raises:
        DataError: the file is missing, of an unknown type, or not parseable as a whole (GeoJSON).
    """
    path = check_file(path)
    base = Path(images_dir) if images_dir is not None else path.parent
    if images_dir is not None and not base.is_dir():
        raise DataError(f"image folder not found: {base}")
    text = path.read_bytes().decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")  # BOM
    suffix = path.suffix.lower()
    unit = "line"
    sep = None
    if suffix in (".jsonl", ".ndjson"):
        raw_iter = _jsonl(text)
    elif suffix == ".csv":
        raw_iter, sep = _csv(text), ";"
    elif suffix in (".geojson", ".json"):
        raw_iter, unit = _geojson(text, path), "feature"
    else:
        raise DataError(f"{path}: unknown knowledge file type {suffix!r}; use .jsonl, .csv or .geojson")
    seen: dict[str, int] = {}
    for line, raw, err in raw_iter:
        rid = str(raw.get("id")) if isinstance(raw, dict) and raw.get("id") not in (None, "") else None
        if err is not None:
            yield RecordResult(line, issue=RecordIssue(str(path), line, None, err, rid, unit))
            continue
        try:
            entry = record_to_entry(raw, base=base, source=path.name, max_field_chars=max_field_chars, image_sep=sep)
        except _Bad as bad:
            yield RecordResult(line, issue=RecordIssue(str(path), line, bad.field, bad.message, rid, unit))
            continue
        if entry.id in seen:
            msg = f"duplicate id {entry.id!r} (first seen on {unit} {seen[entry.id]}); ids must be unique"
            yield RecordResult(line, issue=RecordIssue(str(path), line, "id", msg, entry.id, unit))
            continue
        seen[entry.id] = line
        yield RecordResult(line, entry=entry)


def _jsonl(text: str) -> Iterator[tuple[int, Any, str | None]]:
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line), None
        except json.JSONDecodeError as exc:
            yield n, None, f"not valid JSON ({exc.msg} at column {exc.colno})"


def _csv(text: str) -> Iterator[tuple[int, Any, str | None]]:
    """CSV records with their first line; a record the parser refuses (an unterminated or stray quote) is
    reported on its own line and parsing resumes on the next physical line, so it never swallows others."""
    lines = text.splitlines(keepends=True)
    header: list[str] | None = None
    i = 0
    while i < len(lines):
        start = i + 1
        if not lines[i].strip():
            i += 1
            continue
        reader = csv.reader(iter(lines[i:]), strict=True)
        try:
            row = next(reader)
        except csv.Error as exc:
            yield start, None, f"malformed CSV ({exc}); check the quotes on this line"
            i += 1
            continue
        consumed = max(reader.line_num, 1)
        i += consumed
        if header is None:
            header = [h.strip() for h in row]
            continue
        if len(row) > len(header):
            yield start, None, f"{len(row) - len(header)} more values than header columns"
            continue
        yield start, dict(zip(header, row + [""] * (len(header) - len(row)), strict=True)), None


def _geojson(text: str, path: Path) -> Iterator[tuple[int, Any, str | None]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); GeoJSON must be one JSON document") from None
    if not isinstance(doc, dict) or doc.get("type") not in ("FeatureCollection", "Feature"):
        raise DataError(f"{path}: expected a GeoJSON FeatureCollection or Feature")
    crs = doc.get("crs", {}).get("properties", {}).get("name") if isinstance(doc.get("crs"), dict) else None
    features = doc.get("features", []) if doc["type"] == "FeatureCollection" else [doc]
    if not isinstance(features, list):
        raise DataError(f"{path}: 'features' must be a list of GeoJSON Features")
    for n, feat in enumerate(features, 1):
        if not isinstance(feat, dict) or not isinstance(feat.get("properties", {}), dict):
            yield n, None, "not a GeoJSON Feature with properties"
            continue
        raw = dict(feat.get("properties") or {})
        if "id" in feat and "id" not in raw:
            fid = feat["id"]  # RFC 7946 allows a string or an integer Feature id; any other type is reported
            raw["id"] = str(fid) if isinstance(fid, int) and not isinstance(fid, bool) else fid
        if feat.get("geometry"):
            raw["geometry"] = feat["geometry"]
        if crs and "crs" not in raw:
            raw["crs"] = crs
        yield n, raw, None
