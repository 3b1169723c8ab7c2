"""Indexing: resumable after kill -9, idempotent, shared store, locking, bad input, pipelining."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rsrag.tools.errors import IndexBusyError, RsragError, StoreError, TilingError
from rsrag.tools.indexing import IndexProgress, index_scene
from rsrag.tools.raster import open_scene
from rsrag.tools.store import PatchStore, index_key, open_store
from rsrag.tools.tiling import parse_tiling
from tests.conftest import REPO_ROOT
from tests.index_doubles import TinyEncoder, small_disk
from tests.rasters import gradient

TILING = "grid:16:overlap=0.5:scales=1,2"

_CHILD = f"""
import sys
from rsrag.tools.indexing import index_scene
from tests.index_doubles import TinyEncoder
image, store, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
index_scene(image, TinyEncoder(delay=delay), {TILING!r}, store, batch_size=10, chunk_size=20, readers=2)
print("finished", flush=True)
"""


def _child(image: Path, store: Path, delay: float) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(image), str(store), str(delay)], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stored(store: Path, image: Path, encoder: TinyEncoder) -> tuple[list[str], list[int]]:
    """(ids, chunk ids) of every stored patch row of this image's index."""
    with open_scene(image) as scene:
        key = index_key(scene.fingerprint, parse_tiling(TILING).id, encoder.id)
    ps = PatchStore(open_store(store))
    info = ps.info(key)
    if info is None:
        return [], []
    table = ps.store.open_table(ps.patch_table(info).schema)
    ids: list[str] = []
    chunks: list[int] = []
    for batch in table.scan(where={"index_key": key}, fields=["id", "chunk"]):
        ids += batch["id"]
        chunks += batch["chunk"]
    return ids, chunks


def _scene(make_raster, height: int = 96, width: int = 120, seed: int = 0) -> Path:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    return make_raster(rng.integers(0, 255, (3, height, width), dtype=np.uint8))


def test_resume_after_kill_9(make_raster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    image, store, enc = _scene(make_raster), tmp_path / "store", TinyEncoder()
    total = parse_tiling(TILING).count(120, 96)
    # the first scan of a store table in this process takes ~1.5 s (the store's runtime starting): done
    # here on another store, or the child finishes while the first poll runs
    warm = _scene(make_raster, 32, 32)
    index_scene(warm, enc, TILING, tmp_path / "warm")
    _stored(tmp_path / "warm", warm, enc)
    proc = _child(image, store, delay=0.08)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(set(_stored(store, image, enc)[1])) < 2:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ids, chunks = _stored(store, image, enc)
    assert 0 < len(ids) < total, "the run must be killed mid-index"
    # only whole chunks are ever committed
    for c in set(chunks):
        assert chunks.count(c) == min(20, total - 20 * c)
    report = index_scene(image, enc, TILING, store, batch_size=10, chunk_size=20)
    assert report.skipped == len(ids) and report.encoded == total - len(ids) and not report.no_op
    ids, _ = _stored(store, image, enc)
    assert len(ids) == total and len(set(ids)) == total
    assert {int(i.split(":")[1]) for i in ids} == set(range(total))
    assert report.info.complete


def test_rerun_on_unchanged_image_does_no_work(make_raster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    image, enc = _scene(make_raster), TinyEncoder()
    store = open_store(tmp_path / "s")
    first = index_scene(image, enc, TILING, store, chunk_size=7, batch_size=3)
    table = store.open_table(PatchStore(store).patch_table(first.info).schema)
    version = table.version()
    second = index_scene(image, enc, TILING, open_store(tmp_path / "s"))
    assert first.encoded == first.info.n_patches and first.chunks_written == first.info.n_chunks
    assert second.no_op and second.encoded == 0 and table.version() == version
    assert table.count() == first.info.n_patches
    # another tiling or encoder is another index
    assert not index_scene(image, TinyEncoder(seed=1), TILING, store).no_op


def test_several_images_share_one_store(make_raster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    enc, store = TinyEncoder(), open_store(tmp_path / "s")
    a = index_scene(_scene(make_raster, seed=1), enc, TILING, store)
    b = index_scene(_scene(make_raster, 64, 64, seed=2), enc, TILING, store)
    ps = PatchStore(store)
    assert a.info.patch_table == b.info.patch_table and a.info.key != b.info.key
    assert ps.count(a.info) == a.info.n_patches and ps.count(b.info) == b.info.n_patches
    assert store.open_table(ps.patch_table(a.info).schema).count() == a.info.n_patches + b.info.n_patches
    res = ps.search(b.info, enc.encode_texts(["red"])[0], k=b.info.n_patches + 10)
    assert len(res.rows) == b.info.n_patches and {r["scene"] for r in res.rows} == {b.info.scene}
    assert {i.key for i in ps.find()} == {a.info.key, b.info.key}


def test_concurrent_indexing_of_one_image(make_raster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    image, store, enc = _scene(make_raster, 48, 64), tmp_path / "store", TinyEncoder()
    proc = _child(image, store, delay=0.05)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _stored(store, image, enc)[0]:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    with pytest.raises(IndexBusyError, match="locked by another process"):
        index_scene(image, enc, TILING, store)
    waited = index_scene(image, enc, TILING, store, wait=True)  # returns once the other process is done
    assert proc.wait(60) == 0 and "finished" in proc.stdout.read()  # type: ignore[union-attr]
    assert waited.no_op and waited.info.complete
    ids, _ = _stored(store, image, enc)
    assert len(ids) == len(set(ids)) == waited.info.n_patches


def test_image_smaller_than_one_patch(make_raster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    image = make_raster(gradient(3, 10, 12))
    with pytest.raises(TilingError, match="smaller than one patch"):
        index_scene(image, TinyEncoder(), "grid:64", tmp_path / "s")
    assert open_store(tmp_path / "s").table_names() == []
    report = index_scene(image, TinyEncoder(), "grid:12", tmp_path / "s")  # clipped to the image: one patch
    assert report.info.n_patches == 1 and report.info.complete


def test_progress_and_reads_overlap_encoding(make_raster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import rsrag.tools.indexing as indexing

    image, enc = _scene(make_raster, 64, 64), TinyEncoder()
    reads: list[tuple[float, float]] = []
    encodes: list[tuple[float, float]] = []
    original_read, original_encode = indexing._read_batch, enc.encode_image_tensors

    def slow_read(*args):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        time.sleep(0.05)
        out = original_read(*args)
        reads.append((t0, time.perf_counter()))
        return out

    def slow_encode(batch):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        time.sleep(0.05)
        out = original_encode(batch)
        encodes.append((t0, time.perf_counter()))
        return out

    monkeypatch.setattr(indexing, "_read_batch", slow_read)
    enc.encode_image_tensors = slow_encode  # type: ignore[method-assign]
    seen: list[IndexProgress] = []
    report = index_scene(image, enc, "grid:16", tmp_path / "s", batch_size=2, chunk_size=5, readers=2, progress=seen.append)
    assert report.info.n_patches == 16 and len(seen) == 10  # chunks of 5,5,5,1 -> batches 2,2,1 x 3 and 1
    assert [p.done for p in seen][-1] == 16 and seen[-1].eta_s == pytest.approx(0.0)
    assert all(p.rate > 0 for p in seen)
    # the next batches are read while the encoder works on the current one (all but the last encodes, which
    # find every read already done: 3 batches are read ahead); a serial pipeline would overlap none
    overlapping = [e for e in encodes if any(r0 < e[1] and r1 > e[0] for r0, r1 in reads)]
    assert len(overlapping) >= len(encodes) - 3, (reads, encodes)


def test_full_disk_leaves_a_consistent_index(make_raster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    image, enc = _scene(make_raster, 400, 400), TinyEncoder(dim=128)  # 2,500 patches: ~1.3 MB of vectors
    with small_disk(tmp_path / "disk", "1m") as disk:
        with pytest.raises(StoreError, match="disk is full|No space"):
            index_scene(image, enc, "grid:8", disk / "store", chunk_size=500, batch_size=100)
        ps = PatchStore(open_store(disk / "store"))
        (info,) = ps.find(complete_only=False)
        assert not info.complete
        ids, chunks = _stored_generic(ps, info)
        assert len(ids) == len(set(ids))
        for c in set(chunks):
            assert chunks.count(c) == 500


def _stored_generic(ps: PatchStore, info) -> tuple[list[str], list[int]]:  # type: ignore[no-untyped-def]
    table = ps.store.open_table(ps.patch_table(info).schema)
    ids: list[str] = []
    chunks: list[int] = []
    for batch in table.scan(where={"index_key": info.key}, fields=["id", "chunk"]):
        ids += batch["id"]
        chunks += batch["chunk"]
    return ids, chunks


def test_errors_are_rsrag_errors() -> None:
    assert issubclass(IndexBusyError, RsragError) and issubclass(StoreError, OSError)


def test_with_a_real_open_clip_encoder(make_raster, tmp_path: Path, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    from rsrag.tools.fastpath import fast_search

    enc = tiny_encoder
    report = index_scene(_scene(make_raster, 96, 96), enc, "grid:32:overlap=0.5", tmp_path / "s", batch_size=4, chunk_size=10)
    assert report.encoded == report.info.n_patches == 25 and report.info.dim == enc.dim
    result = fast_search(report.info, enc, question="Where are the ships?", store=tmp_path / "s", top_k=5)
    assert result.phrases == ["ships"] and 0 < len(result.hits) <= 5
    assert all(0.0 <= h.confidence <= 1.0 and h.z is not None for h in result.hits)


class _Counting(TinyEncoder):
    """The tiny projection encoder, counting the windows it encodes."""

    def __init__(self) -> None:
        super().__init__()
        self.windows = 0

    def encode_image_tensors(self, batch):  # type: ignore[no-untyped-def]
        self.windows += int(batch.shape[0])
        return super().encode_image_tensors(batch)


def _half_nodata(make_raster, declared: bool) -> Path:  # type: ignore[no-untyped-def]
    """A 128 x 96 gradient whose right part (x >= 64) is 0 in every band: nodata when ``declared``."""
    img = gradient(3, 96, 128)
    img[:, :, 64:] = 0
    img[:, :, :64] = np.maximum(img[:, :, :64], 1)  # no pixel of the data part equals the nodata value
    return make_raster(img, name=f"half_{declared}.tif", nodata=0 if declared else None)


def test_windows_without_data_are_not_encoded_and_the_rest_is_unchanged(make_raster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tiling = "grid:16:overlap=0.5"
    plain_enc, nodata_enc = _Counting(), _Counting()
    plain = index_scene(_half_nodata(make_raster, False), plain_enc, tiling, tmp_path / "plain", batch_size=4,
                        chunk_size=7)
    image = _half_nodata(make_raster, True)
    masked = index_scene(image, nodata_enc, tiling, tmp_path / "masked", batch_size=4, chunk_size=7)
    specs = list(parse_tiling(tiling).patches(128, 96))
    assert plain_enc.windows == plain.info.n_patches == len(specs)  # black content without nodata is encoded
    store_m = PatchStore(open_store(tmp_path / "masked"))
    kept = store_m.stored_patches(masked.info)
    # a window is read decimated (bilinear), so one flush with the border may still see a data pixel; every
    # window further inside the nodata part holds none and was never encoded
    assert {s.index for s in specs if s.box.x0 < 64} <= kept
    assert not kept & {s.index for s in specs if s.box.x0 >= 72}
    assert nodata_enc.windows == masked.encoded == len(kept) < len(specs)
    assert masked.info.complete and masked.info.n_patches == len(kept)
    # each stored window holds what encoding its read gives, as before windows without data were skipped
    from rsrag.tools.indexing import _read_size

    got = store_m.vectors(masked.info, sorted(kept))
    with open_scene(image) as scene:
        for s in specs:
            if s.index in kept:
                pixels = scene.read_display(s.box, out_size=_read_size(s, TinyEncoder.image_size))
                assert np.allclose(got[s.index], TinyEncoder().encode_images([pixels])[0], atol=1e-6)
    again = index_scene(image, nodata_enc, tiling, tmp_path / "masked")
    assert again.no_op and nodata_enc.windows == len(kept)


def test_windows_the_mask_band_marks_without_data_are_not_encoded(make_raster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # the right part holds bright pixels, but the file's mask band says they are no data (an orthophoto collar)
    img = gradient(3, 96, 128)
    img[:, :, 64:] = 230
    mask = np.zeros((96, 128), dtype=bool)
    mask[:, :64] = True
    tiling = "grid:16:overlap=0.5"
    by_mask, by_nodata = _Counting(), _Counting()
    masked = index_scene(make_raster(img, name="mask.tif", mask=mask), by_mask, tiling, tmp_path / "m", batch_size=4)
    index_scene(_half_nodata(make_raster, True), by_nodata, tiling, tmp_path / "n", batch_size=4)
    kept = PatchStore(open_store(tmp_path / "m")).stored_patches(masked.info)
    specs = list(parse_tiling(tiling).patches(128, 96))
    assert {s.index for s in specs if s.box.x0 < 64} <= kept and not kept & {s.index for s in specs if s.box.x0 >= 72}
    # (the mask is decimated by nearest neighbour, so a window flush with the border is not kept as it may be
    # with a nodata value, whose bilinear read can reach over the border)
    assert by_mask.windows == len(kept) <= by_nodata.windows < len(specs)


_NO_TORCH_CHILD = """
import sys
import numpy as np
from rsrag.tools.errors import InvalidRasterError
from rsrag.tools.indexing import index_scene
from rsrag.tools.pyramid import Pyramid
from rsrag.tools.raster import open_scene

class Unused:  # an encoder that must never be asked for anything but its identity
    id, dim, image_size = "never-used", 4, 8
    def preprocess(self, image):
        raise AssertionError("a window without data was preprocessed")
    def encode_image_tensors(self, batch):
        raise AssertionError("a window without data was encoded")

image, store = sys.argv[1], sys.argv[2]
with open_scene(image) as scene:
    pyr = Pyramid(scene, Unused(), "pyramid:16:top=16", store, sample=4)
    assert pyr.ensure(pyr.finest.level, range(10)) == 0 and len(pyr.empty(pyr.finest.level)) >= 10
try:
    index_scene(image, Unused(), "grid:16", store + "-flat")
except InvalidRasterError as exc:
    print("refused:", exc)
print("torch imported:", "torch" in sys.modules)
"""


def test_reading_only_windows_without_data_imports_no_torch(make_raster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    image = make_raster(np.zeros((3, 64, 64), dtype=np.uint8), nodata=0)
    out = subprocess.run([sys.executable, "-c", _NO_TORCH_CHILD, str(image), str(tmp_path / "store")], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "torch imported: False" in out.stdout  # a question that re-reads empty windows stays torch-free
    assert "refused:" in out.stdout and "every window" in out.stdout and "nodata" in out.stdout
