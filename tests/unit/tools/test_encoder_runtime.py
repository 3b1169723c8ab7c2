"""The encoder's CPU runtime: a CPU encoder gives torch's large buffers transparent huge pages, its idle threads
sleep, and numpy's BLAS stays on one thread."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

_CHILD = """
import json, os, resource, sys
from rsrag.tools.encoders import runtime
if sys.argv[1] == "system":
    runtime.keep_system_allocator()
from rsrag.tools.encoders import load_encoder
from tests.tiny_encoder import register_tiny_model_config
enc = load_encoder(f"{register_tiny_model_config()}:random", device="cpu", batch_size=8)
import torch
enc.encode_image_tensors(torch.zeros(2, 3, enc.image_size, enc.image_size))
faults = []
for _ in range(3):  # an activation-sized buffer, allocated and freed as a forward pass does
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(40_000_000)
    del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
print(json.dumps({"applied": runtime.tuned(), "env": os.environ.get("THP_MEM_ALLOC_ENABLE"), "faults": faults}))
"""


_RUNTIME_VARIABLES = ("THP_MEM_ALLOC_ENABLE", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OPENBLAS_NUM_THREADS",
                      "GOTO_NUM_THREADS")


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without the runtime's variables (an earlier test's encoder may have set them here)."""
    return {**{k: v for k, v in os.environ.items() if k not in _RUNTIME_VARIABLES}, **extra}


def _run(arm: str) -> dict:  # type: ignore[type-arg]
    env = _clean_env()
    out = subprocess.run([sys.executable, "-c", _CHILD, arm], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _thp_available() -> bool:
    path = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return path.is_file() and "[never]" not in path.read_text()


def test_a_cpu_encoder_backs_large_buffers_with_huge_pages() -> None:
    tuned, system = _run("tuned"), _run("system")
    assert tuned["applied"] == {"THP_MEM_ALLOC_ENABLE": "1", "OPENBLAS_NUM_THREADS": "1"} and tuned["env"] == "1"
    assert system["applied"] == {} and system["env"] is None
    if not _thp_available():
        pytest.skip("transparent huge pages are off on this machine: the setting is applied but changes nothing")
    # a 160 MB buffer: ~39,000 page faults in 4 KiB pages, a few hundred in 2 MiB ones. How many huge pages the
    # kernel can hand out at that moment depends on its memory's fragmentation (CI saw 8,404 / 4,316 / 1,250),
    # so the check is on the three allocations together: several times fewer faults, and one mostly huge-paged.
    assert min(system["faults"]) > 20_000
    assert sum(tuned["faults"]) < sum(system["faults"]) / 3
    assert min(tuned["faults"]) < 10_000


def test_a_value_the_user_set_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    from rsrag.tools.encoders import runtime

    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "0")
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)  # restored afterwards (tune_cpu_runtime may set it)
    monkeypatch.setattr(runtime, "_applied", None)
    monkeypatch.setattr(runtime, "_blas", True)  # leave this process's BLAS alone (its own test runs a child)
    assert runtime.tune_cpu_runtime()["THP_MEM_ALLOC_ENABLE"] == "0"
    assert runtime.tuned()["THP_MEM_ALLOC_ENABLE"] == "0"  # type: ignore[index]


# --- idle OpenMP threads sleep (OMP_WAIT_POLICY) ------------------------------------------------------------

_RUNTIME_CHILD = """
import json, sys
from rsrag.tools.encoders import runtime
arm = sys.argv[1]
if arm == "spin":
    runtime.keep_spinning_threads()
if arm == "baseline":
    runtime.keep_blas_threads()
if arm == "torch-first":
    import torch
if arm == "numpy-first":
    import numpy
if arm == "cli":
    from rsrag.agent.interfaces.cli import main
    main(["--help"])
elif arm != "plain":
    from rsrag.tools.encoders import load_encoder
    load_encoder(None, device="cpu", batch_size=8)  # the bundled encoder: nothing before it loads torch
import numpy as np
import torch
from threadpoolctl import threadpool_info
torch.ones(64, 64) @ torch.ones(64, 64)
np.ones((256, 256)) @ np.ones((256, 256))
blas = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
print(json.dumps({"applied": runtime.tuned(), "blas_threads": blas}))
"""


def _child(script: str, *args: str, **env_extra: str) -> tuple[dict, str]:  # type: ignore[type-arg]
    """Run ``script`` in a fresh interpreter without the runtime's variables; its last stdout line (JSON) and stderr."""
    out = subprocess.run([sys.executable, "-c", script, *args], cwd=REPO_ROOT, env=_clean_env(**env_extra),
                         capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def _omp_run(arm: str, **env_extra: str) -> tuple[dict, str]:  # type: ignore[type-arg]
    result, stderr = _child(_RUNTIME_CHILD, arm, OMP_DISPLAY_ENV="VERBOSE", **env_extra)
    spin = [ln.split("=", 1)[1].strip().strip("'") for ln in stderr.splitlines() if "GOMP_SPINCOUNT" in ln]
    assert spin, f"OpenMP printed no environment (is torch built with OpenMP?): {stderr[-500:]}"
    return result["applied"], spin[0]


def test_a_cpu_encoder_makes_idle_openmp_threads_sleep() -> None:
    applied, spin = _omp_run("tuned")
    assert applied["OMP_WAIT_POLICY"] == "PASSIVE" and spin == "0"
    applied, spin = _omp_run("spin")  # the benchmarks' baseline arm: OpenMP's default
    assert "OMP_WAIT_POLICY" not in applied and int(spin) > 0


def test_every_rsrag_command_gets_sleeping_threads() -> None:
    applied, spin = _omp_run("cli")
    assert applied["OMP_WAIT_POLICY"] == "PASSIVE" and spin == "0"


def test_the_wait_policy_is_not_claimed_once_torch_is_loaded_and_a_users_value_is_kept() -> None:
    applied, spin = _omp_run("torch-first")  # libgomp already read its environment: nothing to apply
    assert "OMP_WAIT_POLICY" not in applied and int(spin) > 0
    applied, spin = _omp_run("tuned", OMP_WAIT_POLICY="ACTIVE")
    assert applied["OMP_WAIT_POLICY"] == "ACTIVE" and int(spin) > 300_000


# --- numpy's BLAS on one thread ---------------------------------------------------------------------------

def _blas_run(arm: str, **env_extra: str) -> tuple[dict | None, list[int]]:  # type: ignore[type-arg]
    result, _ = _child(_RUNTIME_CHILD, arm, **env_extra)
    assert result["blas_threads"], "numpy loaded no BLAS library that threadpoolctl knows"
    return result["applied"], result["blas_threads"]


def test_numpys_blas_runs_on_one_thread_beside_a_cpu_encoder_and_in_every_command() -> None:
    """Its worker thread would spin on the cores the forward pass and the readers need (runtime module)."""
    _, default = _blas_run("plain")
    for arm in ("tuned", "numpy-first", "cli"):  # before numpy loads (the variable) and after (the limit)
        applied, threads = _blas_run(arm)
        assert applied is not None and applied["OPENBLAS_NUM_THREADS"] == "1" and threads == [1], arm
    applied, threads = _blas_run("baseline")  # the benchmarks' baseline arm: BLAS's own default
    assert applied is not None and "OPENBLAS_NUM_THREADS" not in applied and threads == default


def test_blas_threads_the_user_chose_are_kept() -> None:
    applied, threads = _blas_run("tuned", OPENBLAS_NUM_THREADS="2")
    assert applied is not None and "OPENBLAS_NUM_THREADS" not in applied and threads == [2]


_BULK_CHILD = """
import json
from rsrag.tools.encoders import runtime
runtime.tune_cpu_runtime()
import numpy as np
from threadpoolctl import threadpool_info
from rsrag.tools.encoders import lit_text
from rsrag.tools.encoders.lit import DEFAULT_HEADS
seen = []
plain = lit_text.LitTextEncoder._pooled
def pooled(self, ids):
    seen.append([pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"])
    return plain(self, ids)
lit_text.LitTextEncoder._pooled = pooled
enc = lit_text.LitTextEncoder(DEFAULT_HEADS, batch_size=256)
enc.features(["storage tanks"])  # a question's phrase
enc.features([f"many white storage tanks number {i} beside a road and some green trees" for i in range(200)])
seen.append([pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"])
print(json.dumps({"seen": seen, "bulk": runtime.bulk_blas_threads()}))
"""


def test_a_large_text_batch_gets_the_blas_threads_back() -> None:
    """The numpy text tower is BLAS alone: a bulk batch (captions, a knowledge base) runs on BLAS's usual threads,
    a question's phrases on one, and the limit is back afterwards."""
    _, default = _blas_run("plain")
    result, _ = _child(_BULK_CHILD)
    assert result["bulk"] == default[0]
    assert result["seen"] == [[1], default, [1]]
