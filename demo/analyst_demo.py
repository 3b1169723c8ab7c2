"""The main job, end to end (``make demo``): an analyst scene, described, indexed and questioned.

Without ``--image`` it builds, once, a georeferenced analyst scene from the validation chips of the shared
AID/RSICD folder (:func:`rsrag.tools.mosaic.build_scene`: four land-cover quadrants, storage tanks planted at
three sites and an airport at two, no stadium; chips the bundled encoder was not trained on), then runs what
an analyst would: ``rsrag describe``, ``rsrag index``, and a short conversation on one thread (where, is
there, how many, a follow-up, an absent class, a relation between two objects) with the offline rule policy. Each answer is printed with its cited sites (as
``rsrag ask`` prints them, with what was planted there when the scene is the built one); the answers go to
``OUT/answers.json`` and the thread's audit trace to ``OUT/trace.html``. With ``--image`` (``make demo
SAMPLE=...``) the same runs on any image, with ``--question`` (``QUESTION=...``) as the one question.

Everything it writes (scene, store, sessions, crops) stays under ``--out``; a second run reuses the scene
and the index.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHIPS = REPO.parent / "shared" / "data" / "aid-rsicd"
SCENE = {"backgrounds": ["Forest", "Farmland", "Meadow", "Desert"], "present": {"StorageTanks": 3, "Airport": 2},
         "absent": ["Stadium"], "seed": 11, "side": 12}
CONVERSATION = ["where are the storage tanks?", "is there an airport?", "how many storage tanks are there?",
                "zoom closer on the second one", "are there any stadiums?",
                "which storage tank is nearest to the airport?"]


def build_analyst_scene(out: Path, chips_folder: Path) -> tuple[Path, object]:
    """The demo's analyst scene (built once; reused while its truth file matches)."""
    from rsrag.tools.captioned import read_chips, select_split
    from rsrag.tools.errors import DataError
    from rsrag.tools.mosaic import build_scene, read_truth

    path = out / "analyst-scene.tif"
    truth_path = path.with_name(path.stem + ".truth.json")
    if path.is_file() and truth_path.is_file():
        try:
            truth = read_truth(truth_path)
            if truth.seed == SCENE["seed"] and truth.width == SCENE["side"] * truth.cell_px:
                print(f"analyst scene: {path} (built earlier)")
                return path, truth
        except DataError:
            pass
    if not (chips_folder / "captions.jsonl").is_file():
        sys.exit(f"error: the chip folder {chips_folder} has no captions.jsonl; pass --image IMAGE or --chips DIR")
    chips = select_split(read_chips(chips_folder), "val", 0.1)
    scene = build_scene(chips, path, **SCENE)  # type: ignore[arg-type]
    print(f"analyst scene: {path} ({scene.truth.width} x {scene.truth.height} px, {scene.truth.crs}), "
          f"built from {len(chips)} validation chips")
    return path, scene.truth


def truth_note(truth: object, evidence: list) -> str:
    """Which planted sites the cited places cover, per class (only for the built scene)."""
    parts = []
    for label, boxes in truth.present.items():  # type: ignore[attr-defined]
        hit = sum(any(e.region is not None and e.region.box.intersection(b) > 0 for e in evidence) for b in boxes)
        parts.append(f"{label}: {len(boxes)} planted, {hit} covered by cited places")
    absent = ", ".join(truth.absent)  # type: ignore[attr-defined]
    return "ground truth: " + "; ".join(parts) + (f"; absent: {absent}" if absent else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, help="any image (default: the analyst scene, built once)")
    parser.add_argument("--question", action="append", help="a question (repeatable; default: the conversation)")
    parser.add_argument("--tiling", help="index tiling (default: the settings', a pyramid)")
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    parser.add_argument("--chips", type=Path, default=CHIPS, help="captioned chip folder the scene is built from")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ["RSRAG_HOME"] = str(out / "home")  # sessions, crops, caches: all under --out
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from rich.console import Console
    from rich.markup import escape

    from rsrag.agent.interfaces.cli import main as rsrag
    from rsrag.agent.interfaces.cli.display import print_answer
    from rsrag.agent.settings import load_settings

    console = Console()
    truth = None
    if args.image is not None:
        image = args.image.resolve()
    else:
        image, truth = build_analyst_scene(out, args.chips)
    store = out / "store"
    tiling = ["--tiling", args.tiling] if args.tiling else []

    def run(*command: str) -> None:
        console.rule(f"rsrag {' '.join(command)}", style="dim")
        status = rsrag(list(command))
        if status:
            sys.exit(status)

    run("describe", str(image), "--thumbnail", str(out / "thumbnail.png"))
    run("index", str(image), "--store", str(store), *tiling)

    questions = args.question or CONVERSATION
    settings = load_settings(overrides={"store.path": store, "store.tiling": args.tiling, "vlm.spec": "rule"})
    answers = []
    thread = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"  # a new conversation each run
    with settings.analyst() as analyst:
        for question in questions:
            console.rule(f"you> {question}", style="bold")
            started = time.monotonic()
            answer = None
            for step in analyst.stream(image, question, thread_id=thread):
                if step.update.get("answer") is not None:
                    answer = step.update["answer"]
                elif step.text != step.node:
                    console.print(f"  [dim]{step.node:>6}[/] {escape(step.text)}", highlight=False, soft_wrap=True)
            assert answer is not None
            answer = answer.model_copy(update={"thread_id": thread})
            print_answer(answer, console)
            if truth is not None:
                console.print(truth_note(truth, answer.evidence), highlight=False)
            answers.append({"question": question, "seconds": round(time.monotonic() - started, 1), **answer.to_json()})
    (out / "answers.json").write_text(json.dumps(answers, indent=1) + "\n")
    run("trace", "export", thread, "-f", "html", "-o", str(out / "trace.html"))
    console.rule("written", style="dim")
    console.print(f"answers with cited sites (JSON): {out / 'answers.json'}\naudit trace (HTML): {out / 'trace.html'}\n"
                  f"thumbnail: {out / 'thumbnail.png'}\nlook at it in the browser: rsrag serve {image}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
