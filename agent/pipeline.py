"""The fixed ImageRAG pipeline, as a baseline to the agent: the cascade (fast path -> slow path if needed,
fused) -> visual cues -> one VLM call.

It follows the paper's flow with rsrag's components: key phrases from the question, the one retrieval
cascade over the scene's patch index (the slow path runs when no fast hit is confident and the workspace
has a concept library; the two lists are fused), then the selected patches become *visual cues*: a line ``Sub-patch i at location [x1, y1, x2, y2]`` with
coordinates normalised to 0-1000 of the scene's width and height, plus the crop. One model call answers
from the question, the overview and the cues. There is no tool use and no iteration; the answer cites the
cues it was given.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage
from langgraph.runtime import Runtime
from PIL import Image
from typing_extensions import TypedDict

from rsrag.agent.context import AgentContext, resources_for
from rsrag.agent.evidence import Answer, Evidence, evidence_from_hit
from rsrag.agent.models.policy import RETRIEVAL_ONLY, RulePolicy
from rsrag.prompts import load_prompt
from rsrag.tools.calibration import Finding
from rsrag.tools.fastpath import extract_key_phrases
from rsrag.tools.rerank import merge_spatial
from rsrag.tools.raster import Scene

MAX_CUES = 5
CUE_SIDE = 448


class PipelineInput(TypedDict):
    question: str
    scene: str


class PipelineState(PipelineInput, total=False):
    """State of one pipeline run: phrases, the cue evidence (ids, small records) and the answer."""

    phrases: list[str]
    evidence: dict[str, Evidence]
    cues: list[str]
    path_used: str
    finding: Finding | None
    answer: Answer | None
    started_at: float


def find_key_phrases(state: PipelineState) -> dict[str, Any]:
    return {"phrases": extract_key_phrases(state["question"]), "started_at": time.time()}


def retrieve(state: PipelineState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """The one cascade (:func:`rsrag.tools.retrieval.cascade`): fast path, the slow path when no fast hit is
    confident (and the workspace has a concept library), fused; the confident places become the cues."""
    ctx = runtime.context
    workspace = resources_for(ctx).workspace
    scene = workspace.scene(state["scene"])
    result = workspace.retrieve(scene, state["phrases"], MAX_CUES, ctx.fast_threshold)
    evidence = [evidence_from_hit(h, "retrieve", "pipeline") for h in merge_spatial(result.confident)[:MAX_CUES]]
    return {"evidence": {e.id: e for e in evidence}, "cues": [e.id for e in evidence], "path_used": result.path,
            "finding": result.finding}


def visual_cues(state: PipelineState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Save a crop per cue (the state keeps only its path)."""
    if not state.get("cues"):
        return {}
    ctx = runtime.context
    scene = resources_for(ctx).workspace.scene(state["scene"])
    folder = Path(ctx.crop_dir) / "pipeline"
    folder.mkdir(parents=True, exist_ok=True)
    updated = dict(state.get("evidence") or {})
    for ev_id in state.get("cues") or []:
        ev = updated[ev_id]
        assert ev.region is not None
        box = ev.region.box
        crop = folder / f"{ev_id}.png"
        Image.fromarray(scene.read_display(box, out_size=box.fit_within(CUE_SIDE))).save(crop)
        updated[ev_id] = ev.model_copy(update={"crop": str(crop)})
    return {"evidence": updated}


def cue_lines(scene: Scene, cues: list[Evidence]) -> list[str]:
    """ImageRAG's cue lines: ``Sub-patch i at location [x1, y1, x2, y2]``, coordinates in 0-1000."""
    template = load_prompt("visual_cue").text.strip()
    lines = []
    for i, ev in enumerate(cues, start=1):
        assert ev.region is not None
        b = ev.region.box
        lines.append(template.format(
            i=i, x1=round(1000 * b.x0 / scene.width), y1=round(1000 * b.y0 / scene.height),
            x2=round(1000 * b.x1 / scene.width), y2=round(1000 * b.y1 / scene.height),
        ) + f" (evidence {ev.id})")
    return lines


def answer_with_cues(state: PipelineState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """One model call with the question, the cue lines and the cue crops."""
    ctx = runtime.context
    scene = resources_for(ctx).workspace.scene(state["scene"])
    ledger = state.get("evidence") or {}
    cues = [ledger[i] for i in state.get("cues") or []]
    lines = cue_lines(scene, cues)
    model = resources_for(ctx).chat_model()
    if isinstance(model, RulePolicy):
        if cues:
            text = f"Cues from the {state.get('path_used')} path: " + "; ".join(lines) + f". {RETRIEVAL_ONLY}"
        else:
            text = f"No patch passed the confidence threshold, so there is no visual cue. {RETRIEVAL_ONLY}"
    else:
        blocks: list[dict[str, Any]] = [{"type": "text", "text": state["question"] + "\n" + "\n".join(lines)}]
        for ev in cues:
            if ev.crop and Path(ev.crop).is_file():
                data = base64.b64encode(Path(ev.crop).read_bytes()).decode()
                blocks.append({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}})
        text = model.invoke([HumanMessage(content=blocks)]).text
    confidence = max((ev.confidence or 0.0) for ev in cues) if cues else 0.0
    finding = state.get("finding")
    answer = Answer(
        text=text, cited=[ev.id for ev in cues], confidence=confidence, supported=bool(cues),
        finding=finding, findings={", ".join(state.get("phrases") or []): finding} if finding else {},
        missing=None if cues else "no visual cue passed the threshold", evidence=cues, backend=resources_for(ctx).backend,
        steps=1, seconds=time.time() - float(state.get("started_at") or time.time()),
    )
    return {"answer": answer}

