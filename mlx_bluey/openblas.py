"""Which OpenBLAS kernel runs MLX's float32 matmuls on Linux, and a better one when OpenBLAS fell back.

Debian 12's OpenBLAS 0.3.21 (DYNAMIC_ARCH) picks a kernel from the CPU's family and model when it
loads. On some CPUs of the machines we run on ("Intel(R) Xeon(R) Processor", AVX-512) it does not
know the model and falls back to `Prescott`, an SSE3 kernel; `scripts/bench_blas_kernels.py`
measures each kernel on the spot (benchmarks/blas_kernels.md). Setting OPENBLAS_CORETYPE before the
library loads picks another kernel, so `runtime.ensure_fast_blas()` does that when it re-executes:

- only when the kernel OpenBLAS chose is one written for CPUs without AVX2 (`PRE_AVX2_KERNELS`) while
  this CPU has more, and only when the user has not set OPENBLAS_CORETYPE themselves;
- the candidates are the kernels this CPU's flags can run (`KERNELS`, best first): a kernel the CPU
  lacks is never chosen;
- each candidate is tried in a child process first: the installed OpenBLAS must accept the name
  (`openblas_get_corename()` reads it back) and its sgemm must agree with NumPy's float64 product to
  float32 rounding on every shape of CHECK_SHAPES, without crashing. The first that passes is used;
  each one that fails is reported.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# Best first. The flags are /proc/cpuinfo's names for what each kernel's code uses.
AVX512 = frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})
KERNELS: list[tuple[str, frozenset[str]]] = [
    ("Cooperlake", AVX512 | {"avx512_bf16"}),
    ("SkylakeX", AVX512),
    ("Haswell", frozenset({"avx2", "fma"})),
]
# OpenBLAS's x86 kernels for CPUs without AVX2: on a CPU with AVX2 one of these is a fallback.
PRE_AVX2_KERNELS = frozenset(
    {
        "Katmai",
        "Coppermine",
        "Northwood",
        "Prescott",
        "Banias",
        "Atom",
        "Core2",
        "Penryn",
        "Dunnington",
        "Nehalem",
        "Sandybridge",
        "Athlon",
        "Opteron",
        "Opteron_SSE3",
        "Barcelona",
        "Nano",
        "Bobcat",
        "Bulldozer",
        "Piledriver",
    }
)
# Set by ensure_fast_blas when it chose the kernel, so the re-executed process (and its children) can
# tell "mlx_bluey replaced OpenBLAS's fallback X" from "the user set OPENBLAS_CORETYPE".
CHOSEN_FROM_ENV = "MLX_BLUEY_BLAS_REPLACED_KERNEL"

# A float32 dot product of length k carries a rounding error of at most ~k * 2^-24 of |a| . |b|
# (1024 * 6e-8 = 6e-5 for the longest product below); 1e-4 leaves room for any summation order and still
# catches a kernel that computes something else (a wrong result is off by O(1)).
CHECK_TOLERANCE = 1e-4
# The products the check runs, (m, n, k, B transposed): a square one, and the shapes training and decoding
# give MLX's sgemm (one row against a 640-wide layer, B transposed as in x @ W.T, and odd small sizes that
# take OpenBLAS's small-matrix and edge paths). A kernel that crashes on any of them is not used.
CHECK_SHAPES = [
    (256, 256, 256, False),
    (1, 1024, 640, True),
    (7, 33, 5, False),
    (96, 640, 1024, True),
    (1, 1, 3, False),
]

# Runs in a child with OPENBLAS_CORETYPE set: loads the library, reads the kernel's name back, runs
# cblas_sgemm on CHECK_SHAPES and compares each with NumPy's float64 product. Prints one JSON line.
_PROBE = r"""
import ctypes, json, sys
import numpy as np
lib = ctypes.CDLL(sys.argv[1])
lib.openblas_get_corename.restype = ctypes.c_char_p
p = ctypes.POINTER(ctypes.c_float)
# cblas_sgemm(RowMajor=101, TransA, TransB (111 no, 112 yes), M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)
lib.cblas_sgemm.argtypes = [ctypes.c_int] * 6 + [ctypes.c_float, p, ctypes.c_int, p, ctypes.c_int,
                                                 ctypes.c_float, p, ctypes.c_int]
rng = np.random.default_rng(0)
worst = 0.0
for m, n, k, transposed in json.loads(sys.argv[2]):
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if transposed else (k, n), dtype=np.float32)
    c = np.zeros((m, n), dtype=np.float32)
    lib.cblas_sgemm(101, 111, 112 if transposed else 111, m, n, k, 1.0, a.ctypes.data_as(p), k,
                    b.ctypes.data_as(p), k if transposed else n, 0.0, c.ctypes.data_as(p), n)
    full = b.T if transposed else b
    exact = a.astype(np.float64) @ full.astype(np.float64)
    scale = np.abs(a).astype(np.float64) @ np.abs(full).astype(np.float64)
    worst = max(worst, float(np.max(np.abs(c - exact) / scale)))
print(json.dumps({"kernel": lib.openblas_get_corename().decode(), "error": worst}))
"""


@dataclass
class KernelCheck:
    kernel: str  # the name asked for
    ok: bool
    detail: str  # why not, or the measured error


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The `flags` of the first processor in /proc/cpuinfo (empty where there is none)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def loaded_kernel(library: str) -> str | None:
    """The kernel of the OpenBLAS at `library` as loaded in this process (loading it if need be)."""
    try:
        lib = ctypes.CDLL(library)
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return lib.openblas_get_corename().decode()
    except (OSError, AttributeError):
        return None


def check_kernel(library: str, kernel: str, timeout: float = 60.0) -> KernelCheck:
    """Load OpenBLAS with OPENBLAS_CORETYPE=kernel in a child; it must name that kernel and compute right."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env["OPENBLAS_CORETYPE"] = kernel
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, library, json.dumps(CHECK_SHAPES)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return KernelCheck(kernel, False, f"no answer in {timeout:.0f} s")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return KernelCheck(kernel, False, f"the check crashed (exit {done.returncode}: {last})")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    if found["kernel"] != kernel:
        return KernelCheck(kernel, False, f"this OpenBLAS does not have it (it loaded {found['kernel']})")
    if not found["error"] <= CHECK_TOLERANCE:
        return KernelCheck(kernel, False, f"its sgemm disagrees with NumPy (relative error {found['error']:.1e})")
    return KernelCheck(kernel, True, f"relative error {found['error']:.1e}")


def candidates(detected: str | None, flags: frozenset[str]) -> list[str]:
    """Kernels to try instead of `detected`, best first; empty when `detected` is no fallback."""
    if detected not in PRE_AVX2_KERNELS:
        return []
    return [name for name, needs in KERNELS if needs <= flags]


def choose_kernel(detected: str | None, flags: frozenset[str], check, note=lambda _: None) -> str | None:
    """The best candidate that passes `check(kernel) -> KernelCheck`, or None to keep `detected`."""
    tried = candidates(detected, flags)
    for kernel in tried:
        result = check(kernel)
        if result.ok:
            return kernel
        note(f"mlx_bluey: OpenBLAS kernel {kernel} failed its check: {result.detail}")
    if tried:
        note(f"mlx_bluey: keeping OpenBLAS's {detected} kernel (slow): no faster kernel passed its check")
    return None


def kernel_source(env: dict | None = None) -> str:
    """How the kernel in use was chosen, for `info`, manifests and benchmark records."""
    env = os.environ if env is None else env
    if env.get(CHOSEN_FROM_ENV):
        return f"chosen by mlx_bluey: OpenBLAS fell back to {env[CHOSEN_FROM_ENV]} on this CPU"
    if env.get("OPENBLAS_CORETYPE"):
        return "OPENBLAS_CORETYPE set in the environment"
    return "detected by OpenBLAS"
