"""Where MLX runs and how fast: the BLAS it uses on Linux, the device, the default dtype.

MLX's Linux CPU wheel bundles the reference BLAS: float32 matmul measured ~8 GFLOP/s here, against
~255 GFLOP/s with OpenBLAS preloaded (1024x1024x1024, 2 cores). bf16 matmul does not go through
BLAS on the CPU at all (~7 GFLOP/s), so on a CPU we train and generate in float32; on Metal
(Apple Silicon) bf16 halves memory traffic and is the default.

`ensure_fast_blas()` runs before mlx is imported: when OpenBLAS is installed and not yet loaded, it
re-executes the command with LD_PRELOAD set, so MLX's cblas_sgemm calls resolve to OpenBLAS (and with
OPENBLAS_THREAD_TIMEOUT set: see below). When OpenBLAS picked a generic fallback kernel for this CPU,
the re-exec also sets OPENBLAS_CORETYPE to the best kernel that passes its check (openblas.py).
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

from . import openblas

OPENBLAS_CANDIDATES = [
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
]
_REEXEC_FLAG = "MLX_BLUEY_BLAS_CHECKED"
# Two OpenBLAS thread pools share this process: MLX's (the preloaded library) and NumPy's own
# (scipy-openblas, used by the NumPy output head). After each call OpenBLAS' idle threads spin for
# 2^28 cycles (~0.1 s) by default, taking the cores from the other pool's next call: decode with the
# NumPy head ran at 9.6 tok/s instead of 21. 2^4 cycles (the minimum) sends them to sleep at once.
OPENBLAS_THREAD_TIMEOUT = "4"


def find_openblas() -> str | None:
    for candidate in OPENBLAS_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    return None


def ensure_fast_blas(before_exec=None) -> None:
    """On Linux, re-exec once with OpenBLAS preloaded, its spin-wait short and its kernel checked.

    A no-op on macOS, in a process that already went through it (or a child of one), and once mlx is
    imported (a re-exec then would lose the work done). `before_exec` runs just before an exec only.
    """
    if platform.system() != "Linux" or os.environ.get(_REEXEC_FLAG):
        return
    os.environ[_REEXEC_FLAG] = "1"
    if "mlx.core" in sys.modules:
        return
    changes = blas_environment(os.environ, find_openblas())
    if not changes:
        return
    os.environ.update(changes)
    if before_exec is not None:
        before_exec()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


# glibc's malloc serves a request over its mmap threshold (128 KB at first, raised as such blocks are freed,
# at most 32 MB) with a fresh mapping, and gives memory at the heap's top back past its trim threshold: both
# make the next array of that size page-fault on every 4 KB page it touches, and the kernel zero each page.
# MLX on the CPU allocates each op's output with malloc (it keeps no cache of its own there), NumPy each
# temporary (numpy_gelu.py makes several per layer). A LoRA step of the 270M frees its micro-batch's activations
# at once, so the heap's free top passed the old 1 GB trim threshold and was given back, twice in 8 steps (strace of
# configs/bluey.yaml: the heap grew from 0.75 to 1.9 GB and was cut by 1.2-1.5 GB, then grew again, paging it all in
# afresh; benchmarks/make-train-allocator-270m/strace-heap.txt).
# So trimming is off (-1: mallopt's "never"); the resident size stays at the run's peak, which it reaches
# anyway. make train's SFT stage, the same day and machine, the adapter byte for byte the same: 7.84M -> 1.30M
# minor page faults, 26 min 32 s -> 25 min 38 s (benchmarks/make-train-allocator-270m/time.txt); its first 16
# steps, paired: 1.06x, rounds 1.04-1.09 (benchmarks/allocator-configured.md; without the system message 1.20x,
# rounds 1.06-1.41, benchmarks/allocator.md).
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
TRIM_THRESHOLD = -1  # never give the heap's top back (mallopt(3): -1 disables trimming)


def tune_allocator() -> bool:
    """Fixed malloc thresholds on Linux with glibc (see above); False where there is no mallopt (macOS, musl)."""
    import ctypes

    if platform.system() != "Linux":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols, libc's among them
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, MMAP_THRESHOLD)) and bool(mallopt(m_trim_threshold, TRIM_THRESHOLD))


def blas_environment(env, library: str | None, flags=None, check=None, note=None) -> dict[str, str]:
    """The variables to add to `env` before MLX loads: preload, thread timeout, a better kernel."""
    changes = {}
    if library is not None and "openblas" not in env.get("LD_PRELOAD", ""):
        changes["LD_PRELOAD"] = " ".join(filter(None, [library, env.get("LD_PRELOAD")]))
    if "OPENBLAS_THREAD_TIMEOUT" not in env:
        changes["OPENBLAS_THREAD_TIMEOUT"] = OPENBLAS_THREAD_TIMEOUT
    if library is not None and not env.get("OPENBLAS_CORETYPE"):
        # Loading the library here reads the kernel it picks by itself; exec replaces this process anyway.
        detected = openblas.loaded_kernel(library)
        flags = openblas.cpu_flags() if flags is None else flags
        check = check or (lambda kernel: openblas.check_kernel(library, kernel))
        note = note or (lambda text: print(text, file=sys.stderr))
        better = openblas.choose_kernel(detected, flags, check, note)
        if better is not None:
            changes["OPENBLAS_CORETYPE"] = better
            changes[openblas.CHOSEN_FROM_ENV] = detected
    return changes


def blas_in_use() -> str:
    """'OpenBLAS', 'Accelerate' (macOS) or 'reference BLAS (slow)', read from the loaded libraries."""
    if platform.system() == "Darwin":
        return "Accelerate"
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    if "libopenblas" in maps:
        return "OpenBLAS"
    return "reference BLAS (slow: install libopenblas0-pthread)"


def device_name() -> str:
    import mlx.core as mx

    return "gpu (Metal)" if mx.default_device() == mx.gpu else "cpu"


def default_dtype_name() -> str:
    """float32 on a CPU (the only dtype that uses BLAS there), bfloat16 on Metal."""
    import mlx.core as mx

    return "bfloat16" if mx.default_device() == mx.gpu else "float32"


def resolve_dtype(name: str):
    import mlx.core as mx

    if name == "auto":
        name = default_dtype_name()
    dtypes = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}
    if name not in dtypes:
        raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, not {name!r}")
    return dtypes[name]


def blas_kernel() -> str | None:
    """The OpenBLAS kernel this process computes with (None when OpenBLAS is not loaded)."""
    library = find_openblas()
    if library is None or blas_in_use() != "OpenBLAS":
        return None
    return openblas.loaded_kernel(library)


def matmul_gflops(size: int = 1024, repeats: int = 5) -> float:
    """MLX float32 size^3 matmul on the CPU, GFLOP/s (2 * size^3 flops), median of `repeats` after a warm-up."""
    import statistics
    import time

    import mlx.core as mx

    with mx.stream(mx.cpu):
        a, b = mx.random.normal((size, size)), mx.random.normal((size, size))
        mx.eval(a @ b)
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            mx.eval(a @ b)
            seconds.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(seconds) / 1e9


def blas_facts(measure: bool = True) -> dict:
    """BLAS, its kernel and how it was chosen, and a float32 matmul measured now: for info, manifests, benchmarks."""
    kernel = blas_kernel()
    facts = {"blas": blas_in_use(), "kernel": kernel, "kernel_source": openblas.kernel_source() if kernel else None}
    if measure:
        facts["matmul_gflops"] = round(matmul_gflops(), 1)
    return facts


def describe_cpu(cpuinfo: str | None = None) -> str:
    """'AMD EPYC, 2 cores, avx2 fma (no AVX-512)': what a log needs to tell one machine of a kind from another."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    model = next((line.partition(":")[2].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    flags = openblas.cpu_flags(cpuinfo)
    simd = [name for name in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if name in flags]
    return f"{model or platform.machine()}, {os.cpu_count()} cores, {' '.join(simd) or 'no AVX2'}" + (
        "" if "avx512f" in flags else " (no AVX-512)"
    )


def machine_facts() -> dict:
    """What a benchmark record says about the machine it ran on: platform, CPUs, device, BLAS facts."""
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "device": device_name(), **blas_facts()}


def describe_blas(facts: dict) -> str:
    """'OpenBLAS, kernel SkylakeX (detected by OpenBLAS), 74.1 GFLOP/s float32 matmul'"""
    text = facts["blas"]
    if facts.get("kernel"):
        text += f", kernel {facts['kernel']} ({facts['kernel_source']})"
    if "matmul_gflops" in facts:
        text += f", {facts['matmul_gflops']} GFLOP/s float32 matmul"
    return text


def describe() -> str:
    """One line for logs: device, BLAS and its kernel, default dtype."""
    return (
        f"device {device_name()}, BLAS {describe_blas(blas_facts(measure=False))}, default dtype {default_dtype_name()}"
    )
