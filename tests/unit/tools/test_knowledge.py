"""The knowledge base: validation per record, lossless RSWK records, idempotent re-add, search and filters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rsrag.tools.errors import DataError, QueryError
from rsrag.tools.knowledge import KnowledgeBase, KnowledgeEntry, ingest_file, read_records
from tests.index_doubles import TinyEncoder

RSWK = {
    "id": "rswk-00017", "name": "Eiffel Tower", "category": "tower",
    "description": "A wrought-iron lattice tower on the Champ de Mars in Paris.",
    "location": {"lon": 2.2945, "lat": 48.8584},
    "history": "Built 1887-1889 as the entrance arch to the 1889 World's Fair.",
    "architecture": {"style": "lattice", "height_m": 330, "material": ["wrought iron", "puddle iron"]},
    "function": ["observation", "broadcasting"],
    "remote_sensing": {"shape": "square footprint", "shadow": "long thin shadow", "spectral": "dark metal"},
    "city": "Paris", "images": ["red.png"], "source": "RSWK", "licence": "CC-BY-4.0",
}


@pytest.fixture
def kb_files(tmp_path: Path) -> Path:
    img = tmp_path / "img"
    img.mkdir()
    Image.new("RGB", (32, 32), (220, 30, 30)).save(img / "red.png")
    Image.new("RGB", (32, 32), (30, 200, 40)).save(img / "green.png")
    (img / "fake.jpg").write_bytes(b"this is not a picture")
    records = [
        RSWK,
        {"id": "forest-1", "name": "Black Forest", "category": "forest", "description": "green mountain forest",
         "images": ["green.png"], "lon": 8.2, "lat": 48.0},
        {"id": "doc-1", "name": "Harbour basics", "category": "port", "description": "cranes load container ships"},
        {"name": "record without an id"},
        {"id": "forest-1", "name": "same id again"},
        {"id": "b", "name": "x", "images": ["missing.png"]},
        {"id": "c", "name": "x", "images": ["fake.jpg"]},
        {"id": "d", "name": "x", "lat": 95.0, "lon": 0.0},
        {"id": "e", "name": "x", "description": "y" * 5000},
    ]
    lines = [json.dumps(r).encode() for r in records] + [b'{"id": "f", "name": "caf\xe9 latin-1"}', b"{not json"]
    (tmp_path / "kb.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return tmp_path


def test_bad_records_are_reported_by_line_and_field_and_skipped(kb_files: Path) -> None:
    results = list(read_records(kb_files / "kb.jsonl", kb_files / "img", max_field_chars=1000))
    ok = [r.entry.id for r in results if r.entry]
    assert ok == ["rswk-00017", "forest-1", "doc-1"]
    issues = {r.line: r.issue for r in results if r.issue}
    expect = {4: ("id", "missing id"), 5: ("id", "duplicate id 'forest-1' (first seen on line 2)"),
              6: ("images", "not found"), 7: ("images", "not a readable image"), 8: ("location", "latitude 95.0"),
              9: ("description", "5,000 characters"), 10: ("name", "not valid UTF-8"), 11: (None, "not valid JSON")}
    assert set(issues) == set(expect)
    for line, (field, text) in expect.items():
        issue = issues[line]
        assert issue is not None and issue.field == field and text in issue.message, (line, issue)
        assert str(issue).startswith(f"{kb_files / 'kb.jsonl'}:{line}")


def test_rswk_record_maps_without_loss(kb_files: Path, tmp_path: Path) -> None:
    entry = next(r.entry for r in read_records(kb_files / "kb.jsonl", kb_files / "img") if r.entry)
    assert entry.name == "Eiffel Tower" and entry.category == "tower" and entry.licence == "CC-BY-4.0"
    assert entry.location is not None and (entry.location.lon, entry.location.lat) == (2.2945, 48.8584)
    for key in ("history", "architecture", "function", "remote_sensing", "city"):
        assert entry.fields[key] == RSWK[key]
    assert "lattice" in entry.search_text() and "long thin shadow" in entry.search_text()
    kb = KnowledgeBase(tmp_path / "s", TinyEncoder())
    kb.add([entry])
    assert kb.get([entry.id]) == [entry]  # stored and read back unchanged


def test_readd_is_idempotent_and_changes_update(kb_files: Path, tmp_path: Path) -> None:
    kb = KnowledgeBase(tmp_path / "s", TinyEncoder())
    seen: list[tuple[int, int]] = []
    first = ingest_file(kb, kb_files / "kb.jsonl", kb_files / "img", max_field_chars=1000, progress=lambda d, t: seen.append((d, t)))
    assert (first.written.added, first.skipped, first.records) == (3, 8, 11) and seen[-1] == (3, 3)
    version = first.written.version
    again = ingest_file(kb, kb_files / "kb.jsonl", kb_files / "img", max_field_chars=1000)
    assert (again.written.added, again.written.updated, again.written.unchanged) == (0, 0, 3)
    assert again.written.version == version and kb.count() == 3 and kb.stats()["images"] == 2
    changed = kb.get(["doc-1"])[0].model_copy(update={"description": "tugboats and cranes"})
    rep = kb.add([changed])
    assert (rep.updated, rep.added) == (1, 0) and kb.get(["doc-1"])[0].description == "tugboats and cranes"


def test_csv_and_geojson(tmp_path: Path) -> None:
    Image.new("RGB", (16, 16), (30, 40, 220)).save(tmp_path / "blue.png")
    (tmp_path / "kb.csv").write_text(
        "id,name,category,lon,lat,images,height\n"
        "lake-1,Lake Geneva,lake,6.5,46.4,blue.png,372\n"
        ",no id,lake,,,,\n"
        "lake-2,Bad lake,lake,200,10,,\n", encoding="utf-8")
    res = list(read_records(tmp_path / "kb.csv"))
    assert [r.entry.id for r in res if r.entry] == ["lake-1"]
    assert res[0].entry is not None and res[0].entry.fields == {"height": "372"} and len(res[0].entry.images) == 1
    assert [(r.line, r.issue.field) for r in res if r.issue] == [(3, "id"), (4, "location")]
    gj = {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "EPSG:32631"}}, "features": [
        {"type": "Feature", "id": "port-1", "properties": {"name": "Port", "category": "port"},
         "geometry": {"type": "Polygon", "coordinates": [[[500000, 5000000], [501000, 5000000], [501000, 5001000], [500000, 5000000]]]}},
        {"type": "Feature", "properties": {"name": "no id"}, "geometry": None},
    ]}
    (tmp_path / "kb.geojson").write_text(json.dumps(gj))
    res = list(read_records(tmp_path / "kb.geojson"))
    entry = res[0].entry
    assert entry is not None and entry.location is not None and entry.location.crs == "EPSG:32631"
    assert entry.location.geometry is not None and abs(entry.location.lon - 3.006) < 0.01 and 45.1 < entry.location.lat < 45.2
    assert res[1].issue is not None and res[1].issue.unit == "feature" and "feature 2" in str(res[1].issue)
    with pytest.raises(DataError, match="unknown knowledge file type"):
        list(read_records(tmp_path / "blue.png"))


def test_search_by_text_image_hybrid_and_filters(kb_files: Path, tmp_path: Path) -> None:
    kb = KnowledgeBase(tmp_path / "s", TinyEncoder())
    ingest_file(kb, kb_files / "kb.jsonl", kb_files / "img")
    bm25 = kb.search("container ships", alpha=0.0)  # pure BM25: only the entry with those words
    assert [h.id for h in bm25.hits][:1] == ["doc-1"] and bm25.hits[0].scores["bm25"] > 0 and bm25.mode == "text"
    green = np.full((8, 8, 3), (30, 200, 40), np.uint8)
    by_image = kb.search(image=green)
    assert by_image.hits[0].id == "forest-1" and by_image.mode == "image"
    assert "doc-1" not in [h.id for h in by_image.hits]  # entries without images are not image-searched
    both = kb.search("tower", image=str(kb_files / "img" / "red.png"), image_weight=0.8)
    assert both.hits[0].id == "rswk-00017" and both.mode == "image+text"
    assert both.hits[0].score == pytest.approx(0.8 * both.hits[0].scores["image"] + 0.2 * both.hits[0].scores["text"])
    assert [h.id for h in kb.search("forest", category="port").hits] == ["doc-1"]
    assert [h.id for h in kb.search("forest", bbox=(0.0, 45.0, 5.0, 50.0)).hits] == ["rswk-00017"]
    with pytest.raises(QueryError):
        kb.search()
    with pytest.raises(QueryError, match="location box"):
        kb.search("x", bbox=(10.0, 0.0, 5.0, 1.0))


def test_entry_needs_content() -> None:
    with pytest.raises(ValueError, match="no name"):
        KnowledgeEntry(id="x")
