"""Start-up of the ``rsrag`` command, measured as whole processes (what a user waits for).

Each command runs ``--repeat`` times in a fresh interpreter, interleaved with the baseline
``python -c "import typer, rich.console, pydantic"`` (the libraries any typer/rich/pydantic CLI loads), and
the medians are compared in the same run:

* ``rsrag --help`` against the baseline (goal: within 5x);
* ``rsrag index IMAGE`` of an indexed image (a no-op) against ``rsrag describe IMAGE`` (goal: within 1.5x);
* ``rsrag ask IMAGE QUESTION`` on an indexed scene with the rule policy and the bundled encoder, whole
  process (goal: within 3 s on 2 cores).

Also a process's first write to a fresh store, as the product does it and with lancedb imported as before
(every validator of its REST client built up front; ``rsrag.tools.store._lancedb``).

Two floors are measured with them, to show what an ``ask`` cannot go below: ``python -c pass`` (the
interpreter) and ``python -c "import rsrag.agent.interfaces.api"`` (the analyst API: langgraph,
langchain-core and the graph, which every ``ask`` needs).

Usage::

    .venv/bin/python benchmarks/startup.py [--image ../shared/data/geotiff/RGB.byte.tif] [--repeat 5] [--json]

The store, sessions and crops live under ``benchmarks/out/startup`` (the first run indexes the image once,
outside the timings). Also reported: the load average during the run (other processes on the machine slow
every figure alike; the ratios are the point).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BASELINE = [sys.executable, "-c", "import typer, rich.console, pydantic"]
STORE_FIRST_WRITE = (
    "import sys, tempfile\n"
    "if sys.argv[1] == 'eager':  # the baseline: lancedb's REST-client validators built on import, as before\n"
    "    from rsrag.tools.store import _lancedb\n"
    "    _lancedb._deferred = lambda original: original\n"
    "from rsrag.tools.store import FieldType, ScalarField, TableSchema, VectorField, open_store\n"
    "schema = TableSchema(name='t', key='id', fields=(ScalarField('id', FieldType.STR),), vectors=(VectorField('v', 2),))\n"
    "open_store(tempfile.mkdtemp()).table(schema).add({'id': ['a'], 'v': [[1.0, 0.0]]})\n"
)
"""A process's first write to a fresh embedded store (what ``rsrag index`` and a first ``ask`` on a new scene pay
once): ``deferred`` as the product does it, ``eager`` with every validator of lancedb's REST client built on
import, as before ``rsrag.tools.store._lancedb``."""


def timed(cmd: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one run of ``cmd`` (which must succeed)."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, default=ROOT.parent / "shared" / "data" / "geotiff" / "RGB.byte.tif")
    parser.add_argument("--question", default="where are the clouds?")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    work = ROOT / "benchmarks" / "out" / "startup"
    work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RSRAG_")}
    env.update({"RSRAG_HOME": str(work / "home"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    rsrag = str(BIN / "rsrag")
    image = str(args.image.resolve())
    commands = {
        "baseline": BASELINE,
        "help": [rsrag, "--help"],
        "describe": [rsrag, "describe", image],
        "index_noop": [rsrag, "index", image],
        "ask": [rsrag, "ask", image, args.question, "--quiet"],
        "python": [sys.executable, "-c", "pass"],
        "store_first_write": [sys.executable, "-c", STORE_FIRST_WRITE, "deferred"],
        "store_first_write_eager": [sys.executable, "-c", STORE_FIRST_WRITE, "eager"],
        "graph_imports": [sys.executable, "-c", "import rsrag.agent.interfaces.api"],
    }
    setup = time.perf_counter()
    timed([rsrag, "index", image], env)  # index once (every pyramid level), outside the timings
    timed(commands["ask"], env)  # and one question, so caches (bytecode, the OS page cache) are warm
    setup_s = time.perf_counter() - setup

    runs: dict[str, list[float]] = {name: [] for name in commands}
    load_before = os.getloadavg()[0]
    for _ in range(args.repeat):
        for name, cmd in commands.items():  # interleaved: a burst of load slows every command alike
            runs[name].append(timed(cmd, env))
    load_after = os.getloadavg()[0]

    med = {name: statistics.median(values) for name, values in runs.items()}
    report = {
        "image": image, "repeat": args.repeat, "cores": os.cpu_count(), "setup_s": round(setup_s, 1),
        "load_average": [round(load_before, 2), round(load_after, 2)],
        "median_s": {k: round(v, 3) for k, v in med.items()},
        "min_s": {k: round(min(v), 3) for k, v in runs.items()},
        "help_over_baseline": round(med["help"] / med["baseline"], 2),
        "index_noop_over_describe": round(med["index_noop"] / med["describe"], 2),
        "ask_s": round(med["ask"], 2),
        "store_first_write_over_eager": round(med["store_first_write"] / med["store_first_write_eager"], 3),
        "goals": {"help_over_baseline <= 5": med["help"] / med["baseline"] <= 5,
                  "index_noop_over_describe <= 1.5": med["index_noop"] / med["describe"] <= 1.5,
                  "ask_s <= 3": med["ask"] <= 3.0},
    }
    if args.json:
        print(json.dumps(report))
        return
    print(f"{args.repeat} runs each, {os.cpu_count()} cores, load average {load_before:.2f} -> {load_after:.2f}")
    for name, value in med.items():
        print(f"  {name:<11} median {value:6.3f} s   min {min(runs[name]):6.3f} s")
    print(f"rsrag --help / baseline: {report['help_over_baseline']}x (goal <= 5)")
    print(f"no-op index / describe:  {report['index_noop_over_describe']}x (goal <= 1.5)")
    print(f"ask, whole process:      {report['ask_s']} s (goal <= 3); floors: python {med['python']:.2f} s, "
          f"graph imports {med['graph_imports']:.2f} s")


if __name__ == "__main__":
    main()
