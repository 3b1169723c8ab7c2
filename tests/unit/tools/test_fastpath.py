"""The fast path: phrase extraction, template averaging, confidence, NMS, end to end (Python and CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rsrag.tools.errors import EncoderError, IndexNotFoundError, QueryError
from rsrag.tools.fastpath import embed_phrases, extract_key_phrases, fast_search, find_index, load_templates
from rsrag.tools.hit import Hit
from rsrag.tools.indexing import index_scene
from rsrag.tools.region import PixelBox, Region
from rsrag.tools.rerank import merge_spatial
from rsrag.tools.retrieval import Calibration, rank_by_confidence
from rsrag.tools.store import IndexInfo, PatchStore, index_key, open_store
from tests.index_doubles import TinyEncoder

MULTISCALE = "grid:32:overlap=0.5:scales=1,2,4"


def _red_square_scene(make_raster, size: int = 256, at: tuple[int, int] = (160, 64)):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    data = (rng.integers(100, 140, (3, size, size))).astype(np.uint8)  # grey noise
    x, y = at
    data[:, y:y + 32, x:x + 32] = np.array([220, 30, 30], dtype=np.uint8)[:, None, None]
    return make_raster(data)


@pytest.mark.parametrize("question", ["", "   ", " ?! ", None])
def test_empty_question_is_a_query_error(question, make_raster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(QueryError, match="empty"):
        extract_key_phrases(question)  # type: ignore[arg-type]
    enc = TinyEncoder()
    report = index_scene(_red_square_scene(make_raster), enc, "grid:64", tmp_path / "s")
    with pytest.raises(QueryError):
        fast_search(report.info, enc, question=question, phrases=["  "], store=tmp_path / "s")


def test_key_phrase_fallback() -> None:
    assert extract_key_phrases("How many airplanes are parked next to the terminal building?")[:2] == ["terminal building", "airplanes"]
    assert extract_key_phrases("Is there a bridge over the river?") == ["bridge", "river"]
    assert extract_key_phrases("storage tanks") == ["storage tanks"]


def test_templates_are_averaged_and_versioned() -> None:
    templates = load_templates()
    assert len(templates) >= 5 and all("{}" in t for t in templates)
    enc = TinyEncoder()
    q = embed_phrases(enc, ["harbour", "red"], ["a photo of {}.", "{} from above"])
    assert q.shape == (2, 16) and np.allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    expected = enc.encode_texts(["a photo of harbour.", "harbour from above"]).mean(axis=0)
    assert np.allclose(q[0], expected / np.linalg.norm(expected), atol=1e-5)


def _box(x0: int, y0: int, x1: int, y1: int, scale: int = 0) -> Region:
    return Region(scene="s", box=PixelBox(x0=x0, y0=y0, x1=x1, y1=y1), scale=scale)


def test_nms_merges_overlaps_across_scales_and_phrases() -> None:
    hits = [
        Hit(region=_box(0, 0, 64, 64, 1), score=0.3, confidence=0.6, path="fast", query="ship", queries=("ship",)),
        Hit(region=_box(16, 16, 48, 48, 0), score=0.4, confidence=0.9, path="fast", query="boat", queries=("boat",)),
        Hit(region=_box(200, 200, 232, 232, 0), score=0.2, confidence=0.3, path="fast", query="ship", queries=("ship",)),
        Hit(region=_box(40, 0, 72, 32, 0), score=0.2, confidence=0.5, path="fast", query="ship", queries=("ship",)),
    ]
    merged = merge_spatial(rank_by_confidence(hits), max_overlap=0.5)
    assert [h.region.box.as_tuple() for h in merged] == [(16, 16, 48, 48), (40, 0, 72, 32), (200, 200, 232, 232)]
    assert merged[0].merged == 1 and set(merged[0].queries) == {"boat", "ship"}
    assert merged[1].merged == 0  # overlaps the 64 px box by 24/32 of its area, but that box was merged away


def _synthetic_index(ps: PatchStore, name: str, vectors: np.ndarray) -> IndexInfo:
    n, dim = vectors.shape
    info = IndexInfo(key=index_key(name, "t", "enc"), scene=name, tiling="t", encoder="enc", dim=dim, patch_table="",
                     source=name, width=10_000, height=10_000, n_patches=n, chunk_size=4096, status="building", updated=0)
    info = ps.begin(info)
    regions = [_box(i, 0, i + 1, 1) for i in range(n)]
    for c in range(0, n, 4096):
        ps.add_chunk(info, c // 4096, list(range(c, min(n, c + 4096))), regions[c:c + 4096], vectors[c:c + 4096])
    return ps.finish(info)


def test_confidence_does_not_depend_on_patch_count(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = rng.standard_normal((200, 32)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    ps = PatchStore(open_store(tmp_path / "s"))
    small = _synthetic_index(ps, "small", base)
    large = _synthetic_index(ps, "large", np.concatenate([base] * 8))  # same scene content, 8x the patches
    query = base[17] + 0.3 * base[5]
    query /= np.linalg.norm(query)
    cal = Calibration()
    confs = []
    for info in (small, large):
        res = ps.search(info, query, k=1)
        assert res.rows[0]["patch"] % 200 == 17
        confs.append(float(cal.confidence(ps.stats(info).zscores(query, np.array(res.scores)))[0]))
    assert confs[0] == pytest.approx(confs[1], abs=1e-4) and confs[0] > 0.5
    # for contrast: ImageRAG's softmax over all patches (logit scale 100) shrinks with the patch count
    scores_small = (base @ query).astype(np.float64)
    softmax = lambda s: 1.0 / np.exp(100 * (s - s.max())).sum()  # noqa: E731
    assert softmax(np.concatenate([scores_small] * 8)) < softmax(scores_small) / 4


def test_end_to_end_finds_the_planted_object(make_raster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    enc, image = TinyEncoder(), _red_square_scene(make_raster)
    report = index_scene(image, enc, MULTISCALE, tmp_path / "s")
    ps = PatchStore(open_store(tmp_path / "s"))
    info = find_index(ps, report.info.scene, enc.id)
    result = fast_search(info, enc, question="Where is the red roof?", store=ps, top_k=5)
    top = result.hits[0]
    assert result.phrases == ["red roof"] and top.path == "fast" and top.query == "red roof"
    assert top.region.box.intersection(PixelBox(x0=160, y0=64, x1=192, y1=96)) > 0
    assert top.confidence > result.threshold and top in result.confident
    assert top.region.map_box is not None and top.region.map_box.crs == "EPSG:32633"
    assert top.index_version == result.index_version and top.encoder == enc.id
    for i, a in enumerate(result.hits):  # NMS: no two returned hits cover the same place
        for b in result.hits[i + 1:]:
            inter = a.region.box.intersection(b.region.box)
            assert inter <= 0.5 * min(a.region.box.area, b.region.box.area)
    # searching again does not touch the encoder's image side
    enc.encode_image_tensors = None  # type: ignore[assignment,method-assign]
    again = fast_search(info, enc, phrases=["red"], store=ps, top_k=5)
    assert again.hits[0].region.box == top.region.box


def test_wrong_encoder_and_missing_index(make_raster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    enc = TinyEncoder()
    report = index_scene(_red_square_scene(make_raster), enc, "grid:64", tmp_path / "s")
    with pytest.raises(EncoderError, match="built with encoder"):
        fast_search(report.info, TinyEncoder(seed=5), phrases=["red"], store=tmp_path / "s")
    with pytest.raises(IndexNotFoundError, match="rsrag index"):
        find_index(PatchStore(open_store(tmp_path / "s")), report.info.scene, "other-encoder")


def test_geotiff_end_to_end_from_the_cli(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    import rsrag.agent.interfaces.cli.index as index_cli
    from rsrag.agent.interfaces.cli import main

    monkeypatch.setattr(index_cli, "load_cli_encoder", lambda settings: TinyEncoder())
    image, store = shared_data / "geotiff" / "RGB.byte.tif", str(tmp_path / "store")
    assert main(["index", str(image), "--tiling", "grid:128:overlap=0.25:scales=1,2", "--store", store, "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["encoded"] == first["info"]["n_patches"] > 0
    assert main(["index", str(image), "--tiling", "grid:128:overlap=0.25:scales=1,2", "--store", store, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["no_op"] is True
    assert main(["search", str(image), "blue water", "--tiling", "grid:128:overlap=0.25:scales=1,2", "--store", store,
                 "--top-k", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["hits"]) == 3 and out["phrases"] == ["blue water"]
    assert out["hits"][0]["region"]["map_box"]["crs"] == "EPSG:32618"
    assert main(["search", str(image), "   ", "--store", store, "--tiling", "grid:128:overlap=0.25:scales=1,2"]) == 2
    assert "empty" in capsys.readouterr().err  # bad input: one line on stderr
