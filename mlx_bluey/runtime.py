"""Where MLX runs and how fast: the BLAS it uses on Linux, the device, the default dtype.

MLX's Linux CPU wheel bundles the reference BLAS: float32 matmul measured ~8 GFLOP/s here, against
~255 GFLOP/s with OpenBLAS preloaded (1024x1024x1024, 2 cores). bf16 matmul does not go through
BLAS on the CPU at all (~7 GFLOP/s), so on a CPU we train and generate in float32; on Metal
(Apple Silicon) bf16 halves memory traffic and is the default.

`ensure_fast_blas()` runs before mlx is imported: when OpenBLAS is installed and not yet loaded, it
re-executes the command with LD_PRELOAD set, so MLX's cblas_sgemm calls resolve to OpenBLAS (and with
OPENBLAS_THREAD_TIMEOUT set: see below).
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

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


def ensure_fast_blas() -> None:
    """On Linux, re-exec once with OpenBLAS preloaded and its spin-wait short (no-op on macOS or when done)."""
    if platform.system() != "Linux" or os.environ.get(_REEXEC_FLAG):
        return
    os.environ[_REEXEC_FLAG] = "1"
    changes = {}
    library = find_openblas()
    if library is not None and "openblas" not in os.environ.get("LD_PRELOAD", ""):
        changes["LD_PRELOAD"] = " ".join(filter(None, [library, os.environ.get("LD_PRELOAD")]))
    if "OPENBLAS_THREAD_TIMEOUT" not in os.environ:
        changes["OPENBLAS_THREAD_TIMEOUT"] = OPENBLAS_THREAD_TIMEOUT
    if not changes or "mlx.core" in sys.modules:
        return
    os.environ.update(changes)
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


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


def describe() -> str:
    """One line for logs: device, BLAS, default dtype."""
    return f"device {device_name()}, BLAS {blas_in_use()}, default dtype {default_dtype_name()}"
