"""Needle benchmark for the agent: does the rule policy's answer cite the planted target?

Each trial (seeded) writes a GeoTIFF mosaic of ``--side`` x ``--side`` AID chips (150 px each) of a few
background classes with one chip of a target class planted at a random cell. Chips come only from the
encoder's fixed validation split (never trained on); the concept library for the slow path is built from
the training split. The question names the target by its class phrase or a synonym (``needle.SYNONYMS``).

For each question it runs, on the same scene and index (tiling ``grid:150``, aligned with the cells), both
through the one retrieval cascade (:func:`rsrag.tools.retrieval.cascade`):

* the analyst agent with the rule policy (search_patches: the cascade -> zoom on the best sites -> answer);
* the fixed ImageRAG pipeline graph (the cascade -> cues -> answer), as the baseline;

and reports recall@1 of the *cited* evidence (the first cited region covers the planted cell: a site's union
box may also cover touching cells), the share of answers whose ``finding`` is ``found``, model steps and
seconds per question. Same-run floor: a random cell, 1 / cells.

Run:  .venv/bin/python benchmarks/agent_needle.py [--trials 16] [--side 10] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from needle import BACKGROUND_POOL, SYNONYMS, TARGETS  # noqa: E402  (the knowledge benchmark's class sets)

from rsrag.agent.context import AgentContext  # noqa: E402
from rsrag.agent.interfaces.api import Analyst  # noqa: E402
from rsrag.agent.settings import load_settings  # noqa: E402  (imported after the sys.path set-up above)
from rsrag.graphs.imagerag import build_imagerag_graph  # noqa: E402
from rsrag.tools.captioned import class_phrase, read_chips, split_chips  # noqa: E402
from rsrag.tools.knowledge import build_concepts  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CELL = 150


def write_mosaic(path: Path, cells: list[Path], side: int) -> None:
    from tests.rasters import write_raster

    data = np.zeros((3, side * CELL, side * CELL), dtype=np.uint8)
    for i, chip in enumerate(cells):
        r, c = divmod(i, side)
        rgb = np.asarray(Image.open(chip).convert("RGB").resize((CELL, CELL)))
        data[:, r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL] = rgb.transpose(2, 0, 1)
    write_raster(path, data, overviews=(2, 4))


def first_region(answer) -> tuple[int, ...] | None:  # type: ignore[no-untyped-def]
    for ev in answer.evidence:
        if ev.region is not None and ev.path in ("fast", "slow", "similar", "zoom"):
            return tuple(ev.region.box.as_tuple())
    return None


def covers(box: tuple[int, ...] | None, planted: tuple[int, int, int, int]) -> bool:
    """Whether a cited box covers at least half of the planted cell."""
    if box is None:
        return False
    w = min(box[2], planted[2]) - max(box[0], planted[0])
    h = min(box[3], planted[3]) - max(box[1], planted[1])
    return w > 0 and h > 0 and w * h >= CELL * CELL // 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "aid-rsicd")
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--side", type=int, default=10, help="cells per mosaic side (10 -> 1,500 px)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-class", type=int, default=20, help="training chips per concept in the slow path's library")
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT))
    work = Path(tempfile.mkdtemp(prefix="rsrag-agent-needle-"))
    train, val = split_chips(read_chips(args.data))
    by_class: dict[str, list[Path]] = {}
    for chip in val:
        by_class.setdefault(str(chip.label), []).append(chip.image)
    settings = load_settings(overrides={"vlm.spec": "rule", "store.path": work / "store", "store.tiling": f"grid:{CELL}",
                                        "paths.sessions": work / "s.sqlite", "paths.crops": work / "crops",
                                        "trace.enabled": False})
    analyst = Analyst(settings)
    t0 = time.perf_counter()
    analyst.workspace.knowledge.add(
        build_concepts(args.data, per_class=args.per_class, exclude={c.image.resolve() for c in val}))
    print(f"concept library built in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    pipeline = build_imagerag_graph()
    ctx = AgentContext(settings)  # the pipeline shares the analyst's resources (injected in its config)

    rows = []
    for trial in range(args.trials):
        rng = random.Random(args.seed * 1000 + trial)
        target = TARGETS[trial % len(TARGETS)]
        backs = rng.sample([b for b in BACKGROUND_POOL if b != target], 3)
        cells = [rng.choice(by_class[rng.choice(backs)]) for _ in range(args.side**2)]
        spot = rng.randrange(args.side**2)
        cells[spot] = rng.choice(by_class[target])
        r, c = divmod(spot, args.side)
        planted = (c * CELL, r * CELL, (c + 1) * CELL, (r + 1) * CELL)
        path = work / f"mosaic_{trial}.tif"
        write_mosaic(path, cells, args.side)
        analyst.workspace.index(analyst.workspace.scene(path))  # index once, outside the timings
        queries = [class_phrase(target)] + SYNONYMS.get(target, [])
        for query in queries[:2]:
            question = f"where is the {query}?"
            t1 = time.perf_counter()
            answer = analyst.ask(path, question)
            agent_s = time.perf_counter() - t1
            t2 = time.perf_counter()
            base = pipeline.invoke({"question": question, "scene": str(path)}, analyst.resources.config(),
                                   context=ctx)["answer"]
            base_s = time.perf_counter() - t2
            rows.append({"target": target, "query": query, "agent_hit": covers(first_region(answer), planted),
                         "agent_exact": first_region(answer) == planted, "agent_finding": answer.finding,
                         "agent_steps": answer.steps, "agent_s": agent_s, "pipeline_hit": covers(first_region(base), planted),
                         "pipeline_has_cue": bool(base.cited), "pipeline_s": base_s,
                         "agent_used_slow": any(e.path == "slow" for e in answer.evidence)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    analyst.close()

    n = len(rows)
    summary = {
        "questions": n, "mosaic_px": args.side * CELL, "cells": args.side**2,
        "agent_recall@1": sum(r["agent_hit"] for r in rows) / n,
        "agent_first_box_is_the_cell": sum(r["agent_exact"] for r in rows) / n,
        "agent_found": sum(r["agent_finding"] == "found" for r in rows) / n,
        "agent_findings": {f: sum(r["agent_finding"] == f for r in rows) for f in ("found", "not_found", "uncertain", None)},
        "pipeline_recall@1": sum(r["pipeline_hit"] for r in rows) / n,
        "pipeline_questions_with_a_cue": sum(r["pipeline_has_cue"] for r in rows) / n,
        "random_recall@1": 1 / args.side**2,
        "agent_steps_mean": statistics.mean(r["agent_steps"] for r in rows),
        "agent_s_median": statistics.median(r["agent_s"] for r in rows),
        "pipeline_s_median": statistics.median(r["pipeline_s"] for r in rows),
        "agent_used_slow_path": sum(r["agent_used_slow"] for r in rows) / n,
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
