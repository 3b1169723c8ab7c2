"""The fixed ImageRAG baseline graph: cues in ImageRAG's format, one model call, citations."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rsrag.agent.context import AgentContext, Resources
from rsrag.graphs.imagerag import build_imagerag_graph
from tests.configured import settings_for
from tests.rasters import write_raster
from tests.scripted import ScriptedChatModel


def test_pipeline_builds_cues_and_calls_the_model_once(tmp_path: Path) -> None:
    from langchain_core.messages import AIMessage

    rng = np.random.default_rng(1)
    path = write_raster(tmp_path / "s.tif", rng.integers(0, 255, (3, 200, 400), dtype=np.uint8))
    model = ScriptedChatModel(steps=[AIMessage(content="Two fields, see the cues.")])
    settings = settings_for(tmp_path, **{"store.tiling": "grid:100", "retrieval.fast_threshold": 0.0})
    resources = Resources(settings, model=model)
    out = build_imagerag_graph().invoke({"question": "where are the fields?", "scene": str(path)},
                                        context=AgentContext(settings), config=resources.config())
    answer = out["answer"]
    assert answer.text == "Two fields, see the cues." and answer.supported
    assert answer.finding == "uncertain" and answer.findings == {"fields": "uncertain"}  # the tiny encoder: no calibration
    assert 1 <= len(answer.cited) <= 5 and all(Path(e.crop).is_file() for e in answer.evidence)
    (prompt,) = model.prompts
    text = prompt[0].content[0]["text"]
    first = answer.evidence[0].region.box
    expected = f"Sub-patch 1 at location [{round(first.x0 / 0.4)}, {round(first.y0 / 0.2)}, {round(first.x1 / 0.4)}, {round(first.y1 / 0.2)}]"
    assert expected in text
    assert sum(1 for block in prompt[0].content if block["type"] == "image_url") == len(answer.cited)


def test_pipeline_without_confident_hits_says_so(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    path = write_raster(tmp_path / "s.tif", rng.integers(0, 255, (3, 200, 200), dtype=np.uint8))
    settings = settings_for(tmp_path, **{"store.tiling": "grid:100", "retrieval.fast_threshold": 1.0, "vlm.spec": "rule"})
    answer = build_imagerag_graph().invoke({"question": "any ships?", "scene": str(path)}, context=AgentContext(settings),
                                           config=Resources(settings).config())["answer"]
    assert not answer.supported and "no visual cue" in answer.text and answer.cited == []
