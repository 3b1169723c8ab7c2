"""Indexing as a graph node, so a LangGraph server can run it (see :mod:`rsrag.graphs.indexer`)."""

from __future__ import annotations

from typing import Any

from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from rsrag.agent.context import AgentContext
from rsrag.tools.indexing import IndexProgress, index_scene


class IndexJobInput(TypedDict):
    """Which scene to index (the encoder, store and tiling come from the run's context)."""

    scene: str


class IndexJobState(IndexJobInput, total=False):
    report: dict[str, Any]


def run_index_job(state: IndexJobState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Index the scene (resumable, a no-op when done), streaming progress as custom events."""
    workspace = runtime.context.workspace
    write = get_stream_writer()

    def on_progress(p: IndexProgress) -> None:
        write({"done": p.done, "total": p.total, "rate": round(p.rate, 2), "eta_s": p.eta_s})

    report = index_scene(workspace.scene(state["scene"]), workspace.encoder, workspace.tiling, workspace.patches,
                         wait=True, progress=on_progress)
    return {"report": report.model_dump(mode="json")}
