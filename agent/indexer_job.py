"""Indexing as a graph node, so a LangGraph server can run it (see :mod:`rsrag.graphs.indexer`)."""

from __future__ import annotations

from typing import Any

from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from rsrag.agent.context import AgentContext, resources_for
from rsrag.tools.indexing import IndexProgress, index_scene
from rsrag.tools.pyramid import build_index


class IndexJobInput(TypedDict):
    """Which scene to index (the encoder, store and tiling come from the run's context)."""

    scene: str


class IndexJobState(IndexJobInput, total=False):
    report: dict[str, Any]


def run_index_job(state: IndexJobState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Fill the scene's index ahead of time (every pyramid level, or the flat tiling; resumable, a no-op when
    done), streaming progress as custom events (with the pyramid level being filled)."""
    workspace = resources_for(runtime.context).workspace
    write = get_stream_writer()

    def on_progress(p: IndexProgress) -> None:
        write({"done": p.done, "total": p.total, "rate": round(p.rate, 2), "eta_s": p.eta_s, "stage": p.stage,
               "level": p.level, "levels": p.levels})

    scene = workspace.scene(state["scene"])
    if workspace.uses_pyramid:
        pyramid = workspace.pyramid(scene)
        report = build_index(scene, workspace.encoder, pyramid.tiling, workspace.patches,
                             batch_size=workspace.batch_size, progress=on_progress, sample=pyramid.sample)
        return {"report": report.model_dump(mode="json")}
    flat = index_scene(scene, workspace.encoder, workspace.tiling, workspace.patches, wait=True, progress=on_progress)
    return {"report": flat.model_dump(mode="json")}
