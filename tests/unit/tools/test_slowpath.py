"""The slow path: concept library, label matching, proxies, patch search, cascade; provenance on every hit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rsrag.tools.errors import DataError, EncoderError, QueryError
from rsrag.tools.indexing import index_scene
from rsrag.tools.knowledge import KnowledgeBase, build_concepts
from rsrag.tools.region import PixelBox
from rsrag.tools.retrieval import cascade
from rsrag.tools.slowpath import reduce_vectors, slow_search
from rsrag.tools.store import PatchStore, open_store
from tests.index_doubles import TinyEncoder

RED_AT = PixelBox(x0=160, y0=64, x1=192, y1=96)


def _labelled_folder(root: Path) -> Path:
    rng = np.random.default_rng(1)
    for label, colour in (("red", (220, 30, 30)), ("green", (30, 200, 40)), ("blue", (30, 40, 220))):
        (root / label).mkdir(parents=True)
        for i in range(4):
            px = np.clip(np.array(colour) + rng.integers(-15, 15, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(px).save(root / label / f"{label}_{i}.png")
    return root


@pytest.fixture
def setup(make_raster, tmp_path: Path):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    data = rng.integers(100, 140, (3, 256, 256)).astype(np.uint8)
    data[:, 64:96, 160:192] = np.array([220, 30, 30], dtype=np.uint8)[:, None, None]
    enc = TinyEncoder()
    store = open_store(tmp_path / "s")
    info = index_scene(make_raster(data), enc, "grid:32:overlap=0.5:scales=1,2", store).info
    kb = KnowledgeBase(store, enc, name="concepts")
    kb.add(build_concepts(_labelled_folder(tmp_path / "chips")))
    return enc, PatchStore(store), info, kb


def test_concepts_from_a_labelled_folder_and_from_the_shared_captions(tmp_path: Path, shared_data: Path) -> None:
    entries = build_concepts(_labelled_folder(tmp_path / "chips"), per_class=3)
    assert [e.id for e in entries] == ["concept:blue", "concept:green", "concept:red"]
    assert all(e.kind == "concept" and len(e.images) == 3 for e in entries)
    aid = build_concepts(shared_data / "aid-rsicd", per_class=2)
    assert len(aid) == 30 and {e.category for e in aid} >= {"Airport", "StorageTanks"}
    tanks = next(e for e in aid if e.category == "StorageTanks")
    assert tanks.name == "storage tanks" and tanks.fields["captions"] and all(Path(i.path).is_file() for i in tanks.images)
    assert build_concepts(shared_data / "aid-rsicd" / "captions.jsonl", per_class=2) == aid
    with pytest.raises(DataError):
        build_concepts(tmp_path / "nowhere")


def test_slow_path_finds_the_object_through_a_concept_and_says_why(setup) -> None:  # type: ignore[no-untyped-def]
    enc, patches, info, kb = setup
    for how in ("mean", "cluster", "topk"):
        res = slow_search(info, enc, kb, phrases=["red"], store=patches, top_k=5, reduce=how)  # type: ignore[arg-type]
        top = res.hits[0]
        assert top.path == "slow" and top.region.box.intersection(RED_AT) > 0, how
        assert top.extra["label"] == "red" and top.extra["entry_id"] == "concept:red"
        assert str(top.extra["proxy"]).startswith({"mean": "mean", "cluster": "cluster:", "topk": "topk:"}[how])
        assert res.matches[0].entry_id == "concept:red" and res.matches[0].score > 0.9 and res.reason is None
        assert top.confidence >= res.threshold and res.index_version >= 0 and res.kb_version >= 0


def test_no_label_passes_the_threshold(setup) -> None:  # type: ignore[no-untyped-def]
    enc, patches, info, kb = setup
    res = slow_search(info, enc, kb, phrases=["xylophone"], store=patches, label_threshold=0.95)
    assert res.hits == [] and res.matches == [] and "no concept label reached" in (res.reason or "")
    empty = KnowledgeBase(patches.store, enc, name="nothing-here")
    res = slow_search(info, enc, empty, phrases=["red"], store=patches)
    assert res.hits == [] and "no entries" in (res.reason or "")
    with pytest.raises(EncoderError):
        slow_search(info, TinyEncoder(seed=4), kb, phrases=["red"], store=patches)


def test_cascade_uses_the_slow_path_only_when_needed_and_fuses(setup) -> None:  # type: ignore[no-untyped-def]
    enc, patches, info, kb = setup
    res = cascade(info, enc, kb=kb, phrases=["red"], store=patches, top_k=5, threshold=0.5)
    assert not res.used_slow and res.slow is None and res.hits == res.fast.hits and res.path == "fast"
    assert res.sites and res.sites[0].region.box.intersection(RED_AT) > 0 and not res.candidates
    assert all(h in res.hits for s in res.sites for h in s.members)  # every confident window is kept, grouped
    fused = cascade(info, enc, kb=kb, phrases=["red"], store=patches, top_k=5, threshold=0.5, slow="always")
    assert fused.used_slow and fused.path == "fast+slow" and fused.hits[0].region.box.intersection(RED_AT) > 0
    assert set(str(fused.hits[0].extra["paths"]).split("+")) == {"fast", "slow"} and "rrf" in fused.hits[0].extra
    strict = cascade(info, enc, kb=kb, phrases=["red"], store=patches, top_k=5, threshold=1.0)
    assert strict.used_slow and "no fast-path hit reached" in strict.reason
    assert not strict.sites and strict.candidates and strict.candidates[0].confidence < 1.0
    none = cascade(info, enc, kb=None, phrases=["red"], store=patches, top_k=5, threshold=1.0)
    assert not none.used_slow and "no visual concept library" in none.reason


def test_reduce_functions() -> None:
    a, b = np.eye(4, dtype=np.float32)[0], np.eye(4, dtype=np.float32)[1]
    vecs = np.stack([a, a * 0.99 + b * 0.01, a, b])
    mean, names = reduce_vectors(vecs, "mean")
    assert names == ["mean"] and np.allclose(np.linalg.norm(mean, axis=1), 1)
    assert mean[0] @ a > mean[0] @ b
    clus, names = reduce_vectors(vecs, "cluster", clusters=2)
    assert names == ["cluster:3/4"] and clus[0] @ a > 0.99
    top, names = reduce_vectors(vecs, "topk", text=b, proxies=2)
    assert names == ["topk:1", "topk:2"] and np.allclose(top[0], b)
    with pytest.raises(QueryError):
        reduce_vectors(vecs, "median")  # type: ignore[arg-type]
    with pytest.raises(QueryError):
        reduce_vectors(np.zeros((0, 4)), "mean")
