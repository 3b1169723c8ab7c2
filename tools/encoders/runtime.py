"""Process-wide CPU runtime settings for encoder forward passes.

A CNN forward pass over a batch of 32 windows at 224 px allocates activation buffers of 50-150 MiB and frees
them a moment later. glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh
``mmap`` and gives it back at ``free``, so every pass page-faults and zeroes all its activations again, one
4 KiB page at a time (~10,000 page faults per window; a quarter to a third of the encoder's CPU time is
system time). :func:`tune_cpu_runtime` asks torch's CPU allocator to back its buffers of 2 MiB and more with
transparent huge pages (``THP_MEM_ALLOC_ENABLE=1``, torch's own switch: ``madvise(MADV_HUGEPAGE)``), so the
same buffers take 512 times fewer faults; nothing else in the process allocates differently, and the peak
RSS is unchanged. Measured on the bundled encoder (BENCHMARKS.md, "Pyramid index", follow-up): 27-30x
fewer page faults and a quarter less system time for the forward pass alone (1.01-1.13x windows/s, within
the shared machine's noise).

Keeping the buffers in the heap instead (``mallopt(M_MMAP_MAX, 0)`` with a high ``M_TRIM_THRESHOLD``) removes
the faults altogether and is faster for the forward pass alone (1.2-1.5x), but it is process-wide: in the
pyramid pipeline it raised peak RSS by 200-700 MiB (the store's and GDAL's large buffers then also come
from the fragmented heap) and the system time it saved did not show in wall times, so it is not used (``benchmarks/
encoder_runtime.py`` keeps it as an arm, ``heap``).

torch reads ``THP_MEM_ALLOC_ENABLE`` once, at its first CPU allocation: :func:`tune_cpu_runtime` must run
before that (:func:`rsrag.tools.encoders.loader.load_encoder` calls it before it builds a CPU model). A value
the user set is kept.

**Idle OpenMP threads sleep** (``OMP_WAIT_POLICY=PASSIVE``). torch's intra-op threads are OpenMP threads, and
by default (libgomp) a thread that finishes its share of an operation spins for about 300,000 iterations
before it sleeps. Alone on the cores that is what makes the forward pass fast; in rsrag's pipeline the
cores are shared with the window readers, the hub keys and the store writer, and the spinning thread takes
the core a reader needs, while each operation then waits for the descheduled thread. With idle threads
sleeping at once (measured on 2 cores, BENCHMARKS.md, "Pyramid index", seventh session): a flat index of a
20k scene 46.0 -> 39.8 s, the pyramid's first answer on it 15.1 -> 14.2 s (its four questions 34.4 -> 30.5 s),
on the 100k COG 23.5 -> 19.3 s, a fifth less CPU for the same windows; a small scene (2,400 px, 224 px
windows read without resampling) shows no difference, and the forward pass alone on idle cores is ~0.85x
as fast. libgomp reads the variable once, when torch loads it, so it is applied only while torch is not
loaded yet (:func:`tuned` says whether it was); the ``rsrag`` command applies it at start, so every command
gets it.

**numpy's BLAS runs on one thread** (``OPENBLAS_NUM_THREADS=1``, and threadpoolctl's limit when numpy is
loaded already). Between forward passes the pipeline calls numpy's OpenBLAS for small products (the hub keys of
each batch, statistics, scores); OpenBLAS then wakes its worker thread, which spins for a while after every
call, on a core the forward pass and the window reader need. Measured on 2 cores (BENCHMARKS.md, "Pyramid
index", eighth session): that worker burned 5.4-5.8 s of CPU during a 20k pyramid first answer of 8-10 s
(a flat index of the same scene: 14 s of 43 s CPU), for products that take microseconds on one thread. torch's
own kernels do not use this library. Work that is BLAS alone (large text batches through the numpy text tower)
asks for the threads back (:func:`bulk_blas_threads`). A value the user set (``OPENBLAS_NUM_THREADS``,
``GOTO_NUM_THREADS``) is kept.

**Image forward passes in bfloat16, on request** (``encoder.precision = "bfloat16"``, :func:`image_dtype`). On
a processor with AVX512-BF16 or AMX (:func:`native_bf16`), oneDNN runs the image tower's convolutions in
bfloat16 about 1.6-1.8x faster than in float32 (the bundled encoder on this project's 2-core AMD EPYC), and the
window vectors stay within a cosine of 0.996 of the float32 ones (0.9991 on average). It is not the default: the
presence calibration was fitted on float32 vectors, and through the analyst benchmark bfloat16 windows cost
0.005-0.034 of precision on each of three scene sets (BENCHMARKS.md, "Encoder", bfloat16), so ``auto`` is
float32 on CPU. Elsewhere bfloat16 is emulated and slower (a warning says so). Only image forward passes change:
texts are encoded in float32, and the vectors are stored as float32.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

THP_VARIABLE = "THP_MEM_ALLOC_ENABLE"
WAIT_VARIABLE = "OMP_WAIT_POLICY"
BLAS_VARIABLE = "OPENBLAS_NUM_THREADS"
_BLAS_USER_VARIABLES = (BLAS_VARIABLE, "GOTO_NUM_THREADS")

_lock = threading.Lock()
_BF16_PROBES = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
_applied: dict[str, str] | None = None
_spin = False
_blas = False
_blas_default: int | None = None


def tune_cpu_runtime() -> dict[str, str]:
    """Apply the CPU runtime settings for forward passes, once per process (see the module docstring).

    Returns:
        The environment settings this process runs with, by name (the same mapping on every later call):
        ``THP_MEM_ALLOC_ENABLE``, ``OMP_WAIT_POLICY`` when torch was not loaded yet (later it cannot take
        effect), and ``OPENBLAS_NUM_THREADS`` unless the user set the BLAS threads; empty when
        :func:`keep_system_allocator` ran first. Values the user set are kept.
    """
    global _applied
    with _lock:
        if _applied is None:
            os.environ.setdefault(THP_VARIABLE, "1")
            applied = {THP_VARIABLE: os.environ[THP_VARIABLE]}
            if not _spin and "torch._C" not in sys.modules:  # libgomp reads it when torch loads it
                os.environ.setdefault(WAIT_VARIABLE, "PASSIVE")
                applied[WAIT_VARIABLE] = os.environ[WAIT_VARIABLE]
            if not _blas and _single_thread_blas():
                applied[BLAS_VARIABLE] = os.environ[BLAS_VARIABLE]
            _applied = applied
        return dict(_applied)


def _single_thread_blas() -> bool:
    """Put numpy's BLAS on one thread (see the module docstring): the variable for libraries loaded from now
    on, threadpoolctl's limit for those loaded already. ``False`` when the user chose the BLAS threads."""
    global _blas_default
    if any(name in os.environ for name in _BLAS_USER_VARIABLES):
        return False
    os.environ[BLAS_VARIABLE] = "1"
    if "numpy" in sys.modules:  # its OpenBLAS read the environment when it loaded: limit it in place
        from threadpoolctl import threadpool_info, threadpool_limits

        loaded = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
        threadpool_limits(1, user_api="blas")
        _blas_default = max(loaded, default=1)
    else:  # OpenBLAS's own default: OMP_NUM_THREADS, else one thread per available core
        omp = os.environ.get("OMP_NUM_THREADS", "")
        _blas_default = int(omp) if omp.isdigit() and int(omp) > 0 else len(os.sched_getaffinity(0))
    return True


def bulk_blas_threads() -> int | None:
    """Threads for numpy BLAS work that is the whole job (a large batch of texts through the numpy text
    tower): what BLAS would have run on had :func:`tune_cpu_runtime` not put it on one thread, or ``None``
    (leave it as configured) when it did not."""
    return _blas_default


def tuned() -> dict[str, str] | None:
    """What :func:`tune_cpu_runtime` applied in this process (``None`` before it ran)."""
    return None if _applied is None else dict(_applied)


def keep_system_allocator() -> None:
    """Leave torch's and glibc's allocation defaults in place for the rest of the process: a later
    :func:`tune_cpu_runtime` applies nothing (a benchmark's baseline arm; call it before any encoder is built)."""
    global _applied
    with _lock:
        if _applied is None:
            _applied = {}


def keep_spinning_threads() -> None:
    """Leave OpenMP's default wait policy (idle threads spin before they sleep) for the rest of the process: a
    later :func:`tune_cpu_runtime` does not set the wait policy (a benchmark's baseline arm; call it first)."""
    global _spin
    with _lock:
        _spin = True


def keep_blas_threads() -> None:
    """Leave numpy's BLAS on its default threads for the rest of the process: a later :func:`tune_cpu_runtime`
    does not limit them (a benchmark's baseline arm; call it first)."""
    global _blas
    with _lock:
        _blas = True


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX tiles), as torch's own probes say."""
    import torch

    return any(bool(getattr(torch.cpu, probe, lambda: False)()) for probe in _BF16_PROBES)


def image_dtype(precision: str, device: str) -> torch.dtype:
    """The dtype image forward passes run in on ``device`` for an ``encoder.precision`` value.

    Args:
        precision: one of :data:`rsrag.tools.encoders.spec.PRECISIONS`.
        device: a torch device string.

    Returns:
        ``auto``: float16 on CUDA, float32 elsewhere. ``float32`` and ``bfloat16``: that dtype (bfloat16 on a
        CPU without :func:`native_bf16` is emulated, and a warning says it will be slower).

    Raises:
        EncoderError: an unknown precision.
    """
    import torch

    from rsrag.tools.encoders.spec import PRECISIONS
    from rsrag.tools.errors import EncoderError

    if precision not in PRECISIONS:
        raise EncoderError(f"unknown encoder precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "float32":
        return torch.float32
    kind = torch.device(device).type
    if precision == "bfloat16":
        if kind == "cpu" and not native_bf16():
            warnings.warn("encoder.precision = 'bfloat16' on a CPU without AVX512-BF16 or AMX: bfloat16 is emulated "
                          "there and image forward passes will be slower than in float32", RuntimeWarning,
                          stacklevel=1)  # one place: shown once per process, however many callers resolve it
        return torch.bfloat16
    return torch.float16 if kind == "cuda" else torch.float32
