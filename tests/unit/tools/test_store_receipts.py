"""Receipts of complete indexes: written when an index completes, read without lancedb, trusted only at the
table versions they name, and searched with the same hits as the store."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from rsrag.tools.region import MapBox, PixelBox, Region
from rsrag.tools.store import IndexInfo, PatchStore, index_key, open_store
from rsrag.tools.store.patches import INDEX_SCHEMA, patch_schema

DIM = 16
ENCODER = "test-encoder#abc"


def _info(scene: str, n: int, chunk: int = 8) -> IndexInfo:
    key = index_key(scene, "grid:32", ENCODER)
    return IndexInfo(key=key, scene=scene, tiling="grid:32", encoder=ENCODER, dim=DIM, patch_table="", source=f"/{scene}.tif",
                     width=320, height=320, n_patches=n, chunk_size=chunk, status="building", updated=0.0)


def _vectors(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _build(patches: PatchStore, scene: str, n: int, seed: int, *, finish: bool = True) -> IndexInfo:
    info = _info(scene, n)
    info = patches.begin(info.model_copy(update={"patch_table": patches.patch_table(info).name}))
    vecs = _vectors(n, seed)
    for chunk in range(info.n_chunks):
        ids = list(range(chunk * info.chunk_size, min(n, (chunk + 1) * info.chunk_size)))
        regions = [Region(scene=scene, box=PixelBox(x0=10 * i, y0=0, x1=10 * i + 32, y1=32), scale=1 + i % 2,
                          map_box=MapBox(crs="EPSG:32618", left=float(i), bottom=0.5, right=i + 1.25, top=1.5) if i % 3 else None)
                   for i in ids]
        patches.add_chunk(info, chunk, ids, regions, vecs[ids])
    return patches.finish(info) if finish else info


def _hits(patches: PatchStore, info: IndexInfo, queries: np.ndarray, k: int) -> list[list[tuple]]:
    out = []
    for q in queries:
        res = patches.search(info, q, k)
        out.append([(r["patch"], r["scene"], r["scale"], r["x0"], r["y0"], r["x1"], r["y1"], r["map_crs"], r["map_left"],
                     r["map_bottom"], r["map_right"], r["map_top"], round(s, 5), res.version) for r, s in zip(res.rows, res.scores)])
    return out


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


def test_complete_index_gets_a_receipt_and_searches_identically(store_dir: Path) -> None:
    patches = PatchStore(open_store(store_dir))
    info = _build(patches, "sceneA", 45, seed=1)
    receipt = json.loads((store_dir / "receipts" / f"{info.key}.json").read_text())
    assert receipt["info"]["status"] == "complete" and receipt["vectors"] is True
    queries = _vectors(6, seed=9)
    assert PatchStore(open_store(store_dir)).search(info, queries[0], 10).extra.get("from") == "receipt"
    with_receipt = _hits(PatchStore(open_store(store_dir)), info, queries, k=10)
    fresh = PatchStore(open_store(store_dir))
    fresh._receipts_dir = None  # the same store read without receipts: the store's own exact search
    without = _hits(fresh, info, queries, k=10)
    assert with_receipt == without
    assert _hits(PatchStore(open_store(store_dir)), info, queries, k=45) == _hits(fresh, info, queries, k=45)
    again = PatchStore(open_store(store_dir))
    assert again.info(info.key) == fresh.info(info.key) == info
    assert again.find(scene="sceneA", encoder=ENCODER, tiling="grid:32") == [info]
    s1, s2 = again.stats(info), fresh.stats(info)
    assert np.array_equal(s1.mean, s2.mean) and np.array_equal(s1.cov, s2.cov) and s1.n == s2.n == 45
    assert again.count(info) == 45


def test_read_without_lancedb_or_pyarrow(store_dir: Path) -> None:
    patches = PatchStore(open_store(store_dir))
    info = _build(patches, "sceneA", 30, seed=2)
    q = _vectors(1, seed=5)[0]
    expected = [r["patch"] for r in patches.search(info, q, 5).rows]
    code = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        from rsrag.tools.store import PatchStore, open_store
        p = PatchStore(open_store({str(store_dir)!r}))
        (info,) = p.find(scene="sceneA", encoder={ENCODER!r}, tiling="grid:32")
        p.stats(info)
        res = p.search(info, np.asarray({q.tolist()!r}, dtype=np.float32), 5)
        name, version = p.table_version(info.encoder, info.dim)
        print(json.dumps({{"patches": [r["patch"] for r in res.rows], "version": version == res.version,
                          "heavy": [m for m in ("lancedb", "pyarrow") if m in sys.modules]}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {"patches": expected, "version": True, "heavy": []}


def test_writes_elsewhere_restamp_unchanged_indexes(store_dir: Path) -> None:
    """Completing another index moves both tables past the first index's receipt. A reader checks it against
    the store once (record unchanged, every row there), re-stamps it, and the next process reads no database;
    another level of the same scene completing re-stamps it at once."""
    patches = PatchStore(open_store(store_dir))
    a = _build(patches, "sceneA", 20, seed=1)
    _build(patches, "sceneB", 12, seed=3)
    folder = store_dir / "receipts"
    stale = json.loads((folder / f"{a.key}.json").read_text())["versions"]
    reader = PatchStore(open_store(store_dir))
    assert reader.search(a, _vectors(1, 4)[0], 3).extra.get("from") == "receipt"
    assert json.loads((folder / f"{a.key}.json").read_text())["versions"] != stale
    level = IndexInfo(**{**_info("sceneA", 8).model_dump(), "tiling": "grid:64", "key": index_key("sceneA", "grid:64", ENCODER)})
    level = patches.begin(level.model_copy(update={"patch_table": patches.patch_table(level).name}))
    regions = [Region(scene="sceneA", box=PixelBox(x0=i, y0=0, x1=i + 64, y1=64), scale=2) for i in range(8)]
    patches.add_chunk(level, 0, list(range(8)), regions, _vectors(8, 11))
    patches.finish(level)
    current = open_store(store_dir).local_versions(list(stale))
    assert json.loads((folder / f"{a.key}.json").read_text())["versions"] == current


def test_foreign_write_sends_readers_to_the_store(store_dir: Path) -> None:
    """A write that did not go through the patch store (another program, an older rsrag) moves the table
    past the receipt's version: readers use the store, and get the store's answer."""
    patches = PatchStore(open_store(store_dir))
    a = _build(patches, "sceneA", 20, seed=1)
    raw = open_store(store_dir).open_table(patch_schema(ENCODER, DIM))
    assert raw is not None
    raw.delete({"index_key": a.key, "patch": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]})  # damages sceneA behind rsrag's back
    for _ in range(2):  # the stale receipt is checked against the store (rows are missing) and dropped
        res = PatchStore(open_store(store_dir)).search(a, _vectors(1, 4)[0], 20)
        assert res.extra.get("from") != "receipt" and len(res.rows) == 10 and min(r["patch"] for r in res.rows) == 10
    assert not (store_dir / "receipts" / f"{a.key}.json").exists()


def test_restarting_an_index_removes_its_receipt(store_dir: Path) -> None:
    patches = PatchStore(open_store(store_dir))
    a = _build(patches, "sceneA", 20, seed=1)
    folder = store_dir / "receipts"
    assert (folder / f"{a.key}.json").is_file()
    patches.begin(a.model_copy(update={"chunk_size": 4, "status": "building"}))  # another chunking: starts again
    assert not (folder / f"{a.key}.json").exists() and not list(folder.glob(f"{a.key}-*.npy"))
    assert patches.info(a.key).status == "building"
    assert PatchStore(open_store(store_dir)).find(scene="sceneA", encoder=ENCODER, tiling="grid:32") == []


def test_index_completed_before_receipts_gets_one_on_first_read(store_dir: Path) -> None:
    patches = PatchStore(open_store(store_dir))
    a = _build(patches, "sceneA", 20, seed=1)
    for path in (store_dir / "receipts").iterdir():
        path.unlink()
    q = _vectors(1, 7)[0]
    expected = [r["patch"] for r in patches.search(a, q, 5).rows]
    first = PatchStore(open_store(store_dir))
    assert first.info(a.key) == a  # from the store; writes the missing receipt
    assert (store_dir / "receipts" / f"{a.key}.json").is_file()
    second = PatchStore(open_store(store_dir))
    res = second.search(a, q, 5)
    assert res.extra.get("from") == "receipt" and [r["patch"] for r in res.rows] == expected


def test_a_broken_receipt_is_ignored(store_dir: Path) -> None:
    patches = PatchStore(open_store(store_dir))
    a = _build(patches, "sceneA", 20, seed=1)
    q = _vectors(1, 7)[0]
    expected = [r["patch"] for r in patches.search(a, q, 5).rows]
    for path in (store_dir / "receipts").glob(f"{a.key}-*.vectors.npy"):
        path.write_bytes(b"not an array")
    res = PatchStore(open_store(store_dir)).search(a, q, 5)
    assert res.extra.get("from") != "receipt" and [r["patch"] for r in res.rows] == expected


def test_dropping_the_patch_table_drops_its_receipts(store_dir: Path) -> None:
    patches = PatchStore(open_store(store_dir))
    a = _build(patches, "sceneA", 20, seed=1)
    assert (store_dir / "receipts" / f"{a.key}.json").is_file()
    patches.store.drop_table(patch_schema(ENCODER, DIM).name)
    assert not list((store_dir / "receipts").iterdir())
    assert PatchStore(open_store(store_dir)).count(a) == 0


def test_local_versions_are_the_database_versions(store_dir: Path) -> None:
    """The versions read from the tables' folders (no lancedb) are the versions lancedb reports."""
    patches = PatchStore(open_store(store_dir))
    _build(patches, "sceneA", 20, seed=1)
    _build(patches, "sceneB", 9, seed=2)
    store = open_store(store_dir)
    schemas = [INDEX_SCHEMA, patch_schema(ENCODER, DIM)]
    expected = {}
    for schema in schemas:
        table = store.open_table(schema)
        assert table is not None
        expected[schema.name] = table.version()
    assert store.local_versions([s.name for s in schemas] + ["no_such_table"]) == expected


def test_a_partly_filled_index_is_read_from_its_receipt(store_dir: Path) -> None:
    """A pyramid level filled on demand (some windows stored, provisional statistics): once a search has
    encoded what it needed, the next process reads the record, statistics, stored windows and their rows
    and vectors from the level's receipt, with the store's answers."""
    patches = PatchStore(open_store(store_dir))
    info = _build(patches, "sceneA", 40, seed=1, finish=False)  # every window is committed, not finished
    raw = open_store(store_dir).open_table(patch_schema(ENCODER, DIM))
    assert raw is not None
    raw.delete({"index_key": info.key, "patch": list(range(24, 40))})  # as if only 24 windows were encoded
    info = patches.set_provisional_stats(info, patches.vector_stats(info))
    assert not patches.has_receipt(info)
    assert patches.save_receipt(info) and patches.has_receipt(info)
    reader = PatchStore(open_store(store_dir))
    plain = PatchStore(open_store(store_dir))
    plain._receipts_dir = None
    assert reader.info(info.key) == plain.info(info.key) == info and info.status == "building"
    assert reader.count(info) == plain.count(info) == 24
    assert reader.stored_patches(info, [3, 30, 23]) == plain.stored_patches(info, [3, 30, 23]) == {3, 23}
    got, want = reader.patch_rows(info, [30, 5, 2]), plain.patch_rows(info, [30, 5, 2])
    assert [r for r, _ in got] == [r for r, _ in want] and [r["patch"] for r, _ in got] == [2, 5]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, want))
    queries = _vectors(4, seed=3)
    assert _hits(reader, info, queries, k=30) == _hits(plain, info, queries, k=30)
    assert reader.search(info, queries[0], 5).extra.get("from") == "receipt"
    s1, s2 = reader.stats(info), plain.stats(info)
    assert np.array_equal(s1.cov, s2.cov) and s1.n == s2.n == 24
    # encoding one more window moves the table: the receipt no longer applies until saved again
    patches.add_chunk(info, 30, [30], [Region(scene="sceneA", box=PixelBox(x0=0, y0=0, x1=32, y1=32), scale=1)], _vectors(1, 8))
    fresh = PatchStore(open_store(store_dir))
    assert fresh.count(info) == 25 and not fresh.has_receipt(info)
