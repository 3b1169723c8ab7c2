"""Benchmark: the CPU runtime of the image encoder's forward pass (allocator, batch shapes, threads).

Each arm runs in a fresh process (so allocator settings and peak RSS are its own), arms alternate over
``--rounds`` rounds so that the load of other jobs hits them alike, and every process reports:

* windows/s over ``--repeats`` passes through the batch sizes ``--sizes`` (e.g. ``32`` for a flat index's
  full batches, ``9,22,4,17`` for the partial batches a pyramid descent produces), every shape warmed first;
* user and system CPU seconds, CPU milliseconds per window (less sensitive than windows/s to the load of
  other jobs) and minor page faults per window (``getrusage``): glibc hands buffers over
  its mmap threshold (at most 32 MiB) back to the kernel at every free, so each forward pass of a batch of
  32 re-faults and re-zeroes its 50-150 MiB activation buffers (system time);
* VmHWM (peak RSS) of the process.

Arms:

* ``system``: torch's and glibc's defaults (:func:`rsrag.tools.encoders.runtime.keep_system_allocator`);
* ``tuned``: the encoder runtime as users get it (:func:`rsrag.tools.encoders.runtime.tune_cpu_runtime`,
  applied by ``load_encoder`` on CPU: transparent huge pages for torch's large buffers);
* ``spin``: tuned, but OpenMP's default wait policy (idle intra-op threads spin ~300,000 iterations before they
  sleep; :func:`rsrag.tools.encoders.runtime.keep_spinning_threads`): the same-run baseline of the sleeping
  threads ``tuned`` has since the seventh session (here, the forward pass alone on otherwise idle cores);
* ``heap``: tuned, and glibc keeps large blocks in the heap (``mallopt``: ``M_MMAP_MAX=0``, a 1 GiB
  ``M_TRIM_THRESHOLD``; measured, not used: see the runtime module);
* ``heap+trim``: heap, with ``malloc_trim(0)`` after every pass;
* ``unprepared``: tuned, but the image trunk as it ran before :func:`rsrag.tools.encoders.effnet_lite.prepare_for_inference`
  (batch norms not folded, weights in the default layout; the batches are channels-last in both): the same-run
  baseline of that step.
* ``timm``: tuned, and building the image trunk also pays what building it through timm cost (timm imported,
  its ``tf_efficientnet_lite*`` created and loaded, then dropped; :func:`timm_build`): the same-run baseline of
  the plain-torch trunk (:mod:`rsrag.tools.encoders.effnet_lite`), which computes the same numbers bit for bit;
* ``dynpad``: tuned, but the stride-2 convolutions pad a copy of their input at every call, as timm's
  ``Conv2dSame`` does (:func:`rsrag.tools.encoders.effnet_lite.static_same_padding` skipped): the same-run baseline of
  padding in place.

``--thread worker`` runs the passes in a worker thread (a server's request thread, the background filler)
instead of the main thread.

``--preprocess`` times the bundled encoder's per-window preprocessing instead, against the same values
computed with torch element-wise ops (as it was): on a reader thread, torch splits each small op over its
intra-op threads, which on two busy cores waits on the scheduler for every op.

``--padding`` times the stride-2 convolutions of the trunk with and without their padded copy, layer by layer and
whole, in one process (:func:`padding`).

Run:  .venv/bin/python benchmarks/encoder_runtime.py --arms system tuned heap --sizes 32 --rounds 3
      .venv/bin/python benchmarks/encoder_runtime.py --padding --sizes 8 --repeats 10 --rounds 2
      .venv/bin/python benchmarks/encoder_runtime.py --preprocess --rounds 3
      .venv/bin/python benchmarks/encoder_runtime.py --arms system tuned --sizes 9,22,4,17 --thread worker
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


ARMS = ("system", "tuned", "spin", "heap", "heap+trim", "unprepared", "dynpad", "timm")
TRIM_THRESHOLD = 1 << 30


def run_on(thread: str, work: Any) -> None:
    """Run ``work`` on the main thread, or (``thread == "worker"``) on a new thread, as the indexer's readers
    run; returns when it is done."""
    if thread == "worker":
        t = threading.Thread(target=work)
        t.start()
        t.join()
    else:
        work()


def heap_buffers() -> None:
    """The arm ``heap``: glibc keeps large blocks in the heap (``M_MMAP_MAX = 0``) and up to 1 GiB of freed
    memory at its top (``M_TRIM_THRESHOLD``), so activation buffers are reused without page faults."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_max = -1, -4
    assert libc.mallopt(m_mmap_max, 0) == 1 and libc.mallopt(m_trim_threshold, TRIM_THRESHOLD) == 1


def unprepared_trunk() -> None:
    """The arm ``unprepared`` (and ``pyramid.py measure --trunk unprepared``): image trunks built from now on skip
    :func:`rsrag.tools.encoders.effnet_lite.prepare_for_inference`, as they ran before it existed."""
    from rsrag.tools.encoders import lit

    lit.prepare_for_inference = lambda trunk: trunk  # type: ignore[assignment]


def dynamic_padding() -> None:
    """The arm ``dynpad`` (and ``pyramid.py measure --trunk dynpad``): image trunks prepared from now on keep
    :class:`~rsrag.tools.encoders.effnet_lite.SameConv2d`, which pads a copy of its input at every call, as
    before padding was done in place."""
    from rsrag.tools.encoders import effnet_lite

    effnet_lite.static_same_padding = lambda trunk: 0  # type: ignore[assignment]


def timm_build() -> None:
    """The arm ``timm`` (and ``pyramid.py measure --trunk timm``): image trunks built from now on also import
    timm and build its ``tf_efficientnet_lite*`` with the same weights, as the encoder did before it built the
    network itself (:mod:`rsrag.tools.encoders.effnet_lite`); the trunk that runs is the product's (the two
    compute the same numbers bit for bit, ``tests/unit/tools/test_effnet_lite.py``), so the arm differs in what
    loading costs: time and resident memory."""
    from rsrag.tools.encoders import lit

    plain = lit.build_image_trunk

    def through_timm(tower: Any, **kwargs: Any) -> Any:
        import timm

        trunk = plain(tower, **kwargs)
        timm.create_model(tower.timm_name, pretrained=False, num_classes=0).load_state_dict(trunk.state_dict(), strict=False)
        return trunk

    lit.build_image_trunk = through_timm  # type: ignore[assignment]


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One arm in this (fresh) process."""
    from rsrag.tools.encoders import runtime

    arm = args.child
    if arm not in ARMS:
        raise SystemExit(f"unknown arm {arm!r}; known: {', '.join(ARMS)}")
    if arm == "system":
        runtime.keep_system_allocator()
    else:
        if arm == "spin":
            runtime.keep_spinning_threads()
        runtime.tune_cpu_runtime()
    if arm.startswith("heap"):
        heap_buffers()
    if arm == "unprepared":
        unprepared_trunk()
    if arm == "dynpad":
        dynamic_padding()
    if arm == "timm":
        timm_build()
    import numpy as np
    import torch

    from rsrag.tools.encoders import load_encoder
    from rsrag.tools.pyramid import release_freed_memory

    torch.set_num_threads(args.threads)
    enc = load_encoder(None, batch_size=32)
    rng = np.random.default_rng(0)
    batch = torch.stack([enc.preprocess(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)) for _ in range(32)])
    sizes = [int(s) for s in args.sizes.split(",")]
    result: dict[str, Any] = {}

    def work() -> None:
        for s in sorted(set(sizes)):
            enc.encode_image_tensors(batch[:s])
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        n = 0
        for _ in range(args.repeats):
            for s in sizes:
                enc.encode_image_tensors(batch[:s])
                n += s
                if arm.endswith("+trim"):
                    release_freed_memory()
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        user, sys_ = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
        result.update(per_s=n / wall, wall_s=wall, user_s=user, sys_s=sys_, cpu_ms_per_window=1000 * (user + sys_) / n,
                      minflt_per_window=(r1.ru_minflt - r0.ru_minflt) / n)

    run_on(args.thread, work)
    return {"arm": arm, "sizes": args.sizes, "thread": args.thread, **result, "peak_rss_mib": _hwm_mib()}


def preprocess(args: argparse.Namespace) -> None:
    """Milliseconds per window of the bundled encoder's preprocessing (numpy) against the same values computed
    with torch element-wise ops (what it was), on the main thread or (``--thread worker``) a worker thread as
    the indexer's readers run it, rounds alternating."""
    import numpy as np
    import torch
    from PIL import Image

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from pyramid import _torch_op_transform  # the preprocessing before (the pyramid benchmark's baseline arm)

    from rsrag.tools.encoders import load_encoder

    torch.set_num_threads(args.threads)
    enc = load_encoder(None)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8))
    arms = {"numpy (now)": enc.preprocess, "torch ops (before)": _torch_op_transform(enc)}
    assert torch.equal(arms["numpy (now)"](image), arms["torch ops (before)"](image))  # the same values
    times: dict[str, list[float]] = {k: [] for k in arms}

    def work() -> None:
        for _ in range(args.rounds):
            for name, fn in arms.items():
                t0 = time.perf_counter()
                for _ in range(50):
                    fn(image)
                times[name].append((time.perf_counter() - t0) / 50 * 1000)

    run_on(args.thread, work)
    print(json.dumps({"threads": args.threads, "thread": args.thread, "load_avg": round(os.getloadavg()[0], 1),
                      "ms_per_window_median": {k: round(statistics.median(v), 2) for k, v in times.items()}}))


def padding(args: argparse.Namespace) -> None:
    """Milliseconds per call of each stride-2 "same" convolution of the bundled image trunk at its real input
    (224 px windows, batch ``--sizes``' first), :class:`~rsrag.tools.encoders.effnet_lite.SameConv2d` (pads a
    copy) against the module :func:`rsrag.tools.encoders.effnet_lite.static_same_padding` puts in its place,
    alternating; then the whole trunk both ways in this one process (fresh processes per arm do not resolve a
    10-20% change on this machine)."""
    import torch

    from rsrag.tools.encoders import effnet_lite, runtime, towers
    from rsrag.tools.encoders.effnet_lite import SameConv2d

    runtime.tune_cpu_runtime()
    torch.set_num_threads(args.threads)
    batch = int(args.sizes.split(",")[0])
    trunk = towers.build_image_trunk(towers.IMAGE_TOWERS["effnet-lite0"])
    effnet_lite.fold_batchnorm(trunk)
    trunk.to(memory_format=torch.channels_last)
    inputs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, name=name: inputs.setdefault(name, a[0].clone()))
             for name, m in trunk.named_modules() if isinstance(m, SameConv2d)]
    x = (torch.rand(batch, 3, 224, 224) * 2 - 1).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        trunk(x)
    for h in hooks:
        h.remove()
    static = effnet_lite.StaticSameConv2d
    modules = dict(trunk.named_modules())
    layers: dict[str, dict[str, float]] = {}
    with torch.inference_mode():
        for name, inp in inputs.items():
            conv = modules[name]
            arms = {"pad copy": conv, "in place": static(conv).to(memory_format=torch.channels_last)}
            assert torch.equal(arms["pad copy"](inp), arms["in place"](inp))  # the same numbers
            times: dict[str, list[float]] = {k: [] for k in arms}
            for _ in range(args.rounds * 10):
                for arm, f in arms.items():
                    f(inp)
                    t0 = time.perf_counter()
                    for _ in range(5):
                        f(inp)
                    times[arm].append((time.perf_counter() - t0) / 5 * 1000)
            layers[f"{name} {tuple(inp.shape[1:])}"] = {k: round(statistics.median(v), 2) for k, v in times.items()}
        replaced = [(parent, child_name, child) for parent in trunk.modules()
                    for child_name, child in parent.named_children() if isinstance(child, SameConv2d)]
        swaps = [(parent, child_name, child, static(child).to(memory_format=torch.channels_last))
                 for parent, child_name, child in replaced if effnet_lite.pads_in_place(child)]
        whole: dict[str, list[float]] = {"pad copy": [], "in place": []}
        for r in range(args.rounds * 8):
            for arm in ("pad copy", "in place") if r % 2 else ("in place", "pad copy"):
                for parent, child_name, conv, new in swaps:
                    setattr(parent, child_name, conv if arm == "pad copy" else new)
                trunk(x)
                t0 = time.perf_counter()
                for _ in range(args.repeats):
                    trunk(x)
                whole[arm].append((time.perf_counter() - t0) / args.repeats * 1000)
    print(json.dumps({"batch": batch, "threads": args.threads, "load_avg": round(os.getloadavg()[0], 1),
                      "layer_ms_median": layers,
                      "trunk_ms_per_batch": {k: {"median": round(statistics.median(v), 1), "mean": round(statistics.mean(v), 1)}
                                             for k, v in whole.items()}}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preprocess", action="store_true", help="time the preprocessing instead (see preprocess())")
    ap.add_argument("--padding", action="store_true", help="time the stride-2 convolutions' padding instead (see padding())")
    ap.add_argument("--arms", nargs="+", default=["system", "tuned"])
    ap.add_argument("--sizes", default="32", help="batch sizes of one pass, comma-separated")
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--thread", choices=["main", "worker"], default="main")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    if args.preprocess:
        preprocess(args)
        return
    if args.padding:
        padding(args)
        return
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    runs: dict[str, list[dict[str, Any]]] = {a: [] for a in args.arms}
    loads = [os.getloadavg()[0]]
    for _ in range(args.rounds):
        for arm in args.arms:
            cmd = [sys.executable, __file__, "--child", arm, "--sizes", args.sizes, "--repeats", str(args.repeats),
                   "--threads", str(args.threads), "--thread", args.thread]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, check=True)
            rec = json.loads(proc.stdout.strip().splitlines()[-1])
            runs[arm].append(rec)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in rec.items()}), file=sys.stderr)
        loads.append(os.getloadavg()[0])
    base = statistics.median(r["per_s"] for r in runs[args.arms[0]])
    summary = {}
    for arm, recs in runs.items():
        med = {k: statistics.median(r[k] for r in recs)
               for k in ("per_s", "cpu_ms_per_window", "user_s", "sys_s", "minflt_per_window", "peak_rss_mib")}
        summary[arm] = {**{k: round(v, 2) for k, v in med.items()}, "vs_first_arm": round(med["per_s"] / base, 2)}
    print(json.dumps({"sizes": args.sizes, "thread": args.thread, "rounds": args.rounds, "repeats": args.repeats,
                      "load_avg": [round(x, 1) for x in loads], "arms": summary}, indent=1))


if __name__ == "__main__":
    main()
