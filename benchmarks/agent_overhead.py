"""Benchmark: per-step overhead of the analyst graph and its tools, excluding model time.

A scripted chat model (no inference: it replays search -> zoom -> answer) drives the real graph, tools,
store and raster engine with SQLite sessions. For each graph step the script records the wall time between
streamed updates; the model's own time is ~0, so a step's time is the graph's and the tool's overhead.

Baseline in the same run: the same work without the graph (the fast-path search and the zoom read called
directly), so the ratio shows what LangGraph, the tool layer, evidence and checkpoints add.

Run:  .venv/bin/python benchmarks/agent_overhead.py [--encoder SPEC] [--questions 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from langchain_core.messages import AIMessage, ToolMessage

from rsrag.agent.interfaces.api import Analyst
from rsrag.agent.results import ToolResult
from rsrag.agent.settings import load_settings
from rsrag.tools.region import PixelBox


def scripted_model():  # type: ignore[no-untyped-def]
    from langchain_core.language_models import BaseChatModel
    from langchain_core.outputs import ChatGeneration, ChatResult

    class Replay(BaseChatModel):
        """search_patches -> zoom on the first hit -> answer citing the zoom, for every question."""

        @property
        def _llm_type(self) -> str:
            return "replay"

        def bind_tools(self, tools, **kwargs):  # type: ignore[no-untyped-def]
            return self

        def _generate(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[no-untyped-def]
            turn = messages[max(i for i, m in enumerate(messages) if m.type == "human" and not m.additional_kwargs):]
            tools = [m for m in turn if isinstance(m, ToolMessage)]
            if not tools:
                call = ("search_patches", {"phrases": ["buildings"], "top_k": 5})
            elif len(tools) == 1:
                call = ("zoom", {"evidence_id": ToolResult.of(tools[0]).ids[0]})
            else:
                call = ("answer", {"text": "done", "evidence_ids": ToolResult.of(tools[-1]).ids, "confidence": 0.5})
            msg = AIMessage(content="", tool_calls=[{"name": call[0], "args": call[1], "id": f"c{time.perf_counter_ns()}", "type": "tool_call"}])
            return ChatResult(generations=[ChatGeneration(message=msg)])

    return Replay()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default=None, help="encoder spec (default: the offline encoder)")
    parser.add_argument("--image", type=Path, default=Path("../shared/data/geotiff/RGB.byte.tif"))
    parser.add_argument("--questions", type=int, default=30)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rsrag-bench-agent-"))
    if args.encoder and args.encoder.startswith("rsrag-tiny-test"):
        from tests.tiny_encoder import register_tiny_model_config

        register_tiny_model_config()
    settings = load_settings(overrides={"encoder.spec": args.encoder, "store.path": work / "store", "store.tiling": "vit:224",
                                        "paths.sessions": work / "s.sqlite", "paths.crops": work / "crops"})
    analyst = Analyst(settings, model=scripted_model())
    analyst.ask(args.image, "warm-up: index the scene and load the encoder", thread_id="warm")

    steps: dict[str, list[float]] = {}
    for q in range(args.questions):
        last = time.perf_counter()
        for step in analyst.stream(args.image, f"question {q}: where are the buildings?", thread_id=f"t{q % 3}"):
            now = time.perf_counter()
            steps.setdefault(step.node, []).append((now - last) * 1e3)
            last = now
    all_steps = [t for ts in steps.values() for t in ts]

    # baseline: the same search and zoom read without the graph
    ws = analyst.workspace
    scene = ws.scene(args.image)
    direct = []
    for _ in range(args.questions):
        t0 = time.perf_counter()
        hits = ws.retrieve(scene, ["buildings"], 5, 0.5).hits
        box: PixelBox = hits[0].region.box
        scene.read_display(box, out_size=(box.height, box.width))
        direct.append((time.perf_counter() - t0) * 1e3)
    analyst.close()

    per_q_graph = sum(all_steps) / args.questions
    result = {
        "encoder": ws.encoder.id,
        "steps_per_question": len(all_steps) / args.questions,
        "step_ms_p50": statistics.median(all_steps),
        "step_ms_p95": float(np.percentile(all_steps, 95)),
        "by_node_ms_p50": {k: round(statistics.median(v), 2) for k, v in steps.items()},
        "question_ms_graph": per_q_graph,
        "question_ms_direct": statistics.mean(direct),
        "graph_over_direct": per_q_graph / statistics.mean(direct),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
