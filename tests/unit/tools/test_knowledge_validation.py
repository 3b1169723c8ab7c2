"""Knowledge records are validated, never coerced: string ids and names, valid geometries, CSV quoting
errors reported on their own record, a UTF-8 byte-order mark accepted, a folder refused clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rsrag.tools.errors import DataError
from rsrag.tools.knowledge import read_records

SQUARE = [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]


def _issues(path: Path) -> dict[int, tuple[str | None, str]]:
    return {r.line: (r.issue.field, r.issue.message) for r in read_records(path) if r.issue}


def _ids(path: Path) -> list[str]:
    return [r.entry.id for r in read_records(path) if r.entry]


def test_an_unterminated_csv_quote_is_reported_and_swallows_nothing(tmp_path: Path) -> None:
    f = tmp_path / "kb.csv"
    f.write_text('id,name,description\n'
                 'a,"Alpha,first record\n'
                 'b,Beta,second record\n'
                 'c,"Gamma, with a comma",third\n'
                 'd,"Delta"x,stray quote\n'
                 'e,"Epsilon\nspans two lines",fine\n', encoding="utf-8")
    assert _ids(f) == ["b", "c", "e"]
    issues = _issues(f)
    assert set(issues) == {2, 5} and all("malformed CSV" in m and "quotes" in m for _, m in issues.values())
    multi = next(r.entry for r in read_records(f) if r.entry and r.entry.id == "e")
    assert multi.name == "Epsilon\nspans two lines"


@pytest.mark.parametrize(("record", "field", "text"), [
    ({"id": ["a", "b"], "name": "x"}, "id", "id must be a string, got a list"),
    ({"id": 17, "name": "x"}, "id", 'write it in quotes: "17"'),
    ({"id": True, "name": "x"}, "id", "got a boolean"),
    ({"id": {"k": 1}, "name": "x"}, "id", "got an object"),
    ({"id": "a", "name": {"en": "Tower"}}, "name", "name must be a string, got an object"),
    ({"id": "a", "name": 1889}, "name", "got a number"),
    ({"id": "a", "name": "x", "category": ["tower"]}, "category", "got a list"),
    ({"id": "a", "name": "x", "kind": "landmark"}, "kind", "'knowledge' or 'concept'"),
    ({"id": "a", "name": "x", "crs": 4326, "lon": 1, "lat": 2}, "crs", "expected a CRS name"),
])
def test_ids_and_names_are_strings_or_reported(tmp_path: Path, record: dict, field: str, text: str) -> None:
    f = tmp_path / "kb.jsonl"
    f.write_text(json.dumps(record) + "\n" + json.dumps({"id": "ok", "name": "fine"}) + "\n")
    assert _ids(f) == ["ok"]
    (got_field, message), = _issues(f).values()
    assert got_field == field and text in message, message


@pytest.mark.parametrize(("geometry", "text"), [
    ({"type": "Circle", "coordinates": [0, 0], "radius": 5}, "unknown geometry type 'Circle'"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}, "ring 1 is not closed"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [0, 0]]]}, "at least 4"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}, "Self-intersection"),
    ({"type": "Point", "coordinates": ["a", 1]}, "finite numbers"),
    ({"type": "Point", "coordinates": [1]}, "is not [x, y]"),
    ({"type": "LineString", "coordinates": [[0, 0]]}, "at least 2 positions"),
    ({"type": "MultiPolygon", "coordinates": [SQUARE, [[[0, 0], [2, 0], [2, 2], [0, 0.5]]]]}, "polygon 2, ring 1 is not closed"),
    ({"type": "GeometryCollection", "geometries": [{"type": "Blob"}]}, "unknown geometry type 'Blob'"),
    ("POINT (1 2)", "expected a GeoJSON geometry object, got str"),
])
def test_invalid_geometries_are_reported(tmp_path: Path, geometry: object, text: str) -> None:
    features = [{"type": "Feature", "id": "bad", "properties": {"name": "bad"}, "geometry": geometry},
                {"type": "Feature", "id": "good", "properties": {"name": "good"},
                 "geometry": {"type": "Polygon", "coordinates": SQUARE}}]
    f = tmp_path / "kb.geojson"
    f.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    assert _ids(f) == ["good"]
    (field, message), = _issues(f).values()
    assert field == "geometry" and text in message, message


def test_a_geometry_under_location_is_validated_too(tmp_path: Path) -> None:
    f = tmp_path / "kb.jsonl"
    bad = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}
    f.write_text(json.dumps({"id": "a", "name": "x", "location": bad}) + "\n")
    (field, message), = _issues(f).values()
    assert field == "location" and "not closed" in message


def test_geojson_integer_feature_ids_are_allowed_by_the_rfc(tmp_path: Path) -> None:
    f = tmp_path / "kb.geojson"
    f.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": 7, "properties": {"name": "seven"}, "geometry": None}]}))
    assert _ids(f) == ["7"]
    f.write_text(json.dumps({"type": "FeatureCollection", "features": {"not": "a list"}}))
    with pytest.raises(DataError, match="'features' must be a list"):
        list(read_records(f))


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    jsonl, csvf = tmp_path / "bom.jsonl", tmp_path / "bom.csv"
    jsonl.write_bytes(b"\xef\xbb\xbf" + json.dumps({"id": "a", "name": "x"}).encode() + b"\n")
    csvf.write_bytes(b"\xef\xbb\xbfid,name\nb,y\n")
    assert _ids(jsonl) == ["a"] and _ids(csvf) == ["b"]


def test_a_folder_gets_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a folder; kb add takes one .jsonl, .csv or .geojson file"):
        list(read_records(tmp_path))
