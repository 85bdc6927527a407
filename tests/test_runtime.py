"""runtime.ensure_fast_blas: one re-exec sets the OpenBLAS preload and a short thread spin-wait."""

import os
import platform
import subprocess
import sys

import pytest
from conftest import run_cli

from mlx_bluey import openblas, runtime

SHOW = (
    "from mlx_bluey import runtime; runtime.ensure_fast_blas(); import os; "
    "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'), 'openblas' in os.environ.get('LD_PRELOAD', ''))"
)


def _run(**extra) -> str:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LD_PRELOAD", "OPENBLAS_THREAD_TIMEOUT", "MLX_BLUEY_BLAS_CHECKED")
    }
    return subprocess.run(
        [sys.executable, "-c", SHOW], env={**env, **extra}, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.mark.skipif(sys.platform != "linux" or runtime.find_openblas() is None, reason="Linux with OpenBLAS")
def test_reexec_sets_preload_and_timeout_keeping_the_users():
    assert _run() == "4 True"
    assert _run(OPENBLAS_THREAD_TIMEOUT="12") == "12 True"  # the user's value wins


# ------------------------------------------------------------------ the OpenBLAS kernel

SAPPHIRE = openblas.AVX512 | {"avx2", "fma", "avx512_bf16", "avx512_fp16"}
SKYLAKE = openblas.AVX512 | {"avx2", "fma"}
HASWELL = frozenset({"avx", "avx2", "fma", "sse4_2"})
NEEDS_OPENBLAS = pytest.mark.skipif(
    sys.platform != "linux" or runtime.find_openblas() is None, reason="Linux with OpenBLAS"
)


def _passes(*bad):
    return lambda kernel: openblas.KernelCheck(kernel, kernel not in bad, "bad" if kernel in bad else "ok")


@pytest.mark.parametrize(
    ("detected", "flags", "expected"),
    [
        ("Prescott", SAPPHIRE, "Cooperlake"),  # the fallback seen on AVX-512 Xeons
        ("Prescott", SKYLAKE, "SkylakeX"),  # no avx512_bf16: Cooperlake's code would not run
        ("Core2", HASWELL, "Haswell"),
        ("Sandybridge", HASWELL, "Haswell"),
        ("Prescott", frozenset({"sse3", "avx"}), None),  # nothing better that this CPU can run
        ("SkylakeX", SAPPHIRE, None),  # not a fallback: left as OpenBLAS chose
        ("Zen", SAPPHIRE, None),
        (None, SAPPHIRE, None),  # OpenBLAS without openblas_get_corename
    ],
)
def test_a_fallback_kernel_is_replaced_by_the_best_one_the_cpu_runs(detected, flags, expected):
    assert openblas.choose_kernel(detected, flags, _passes()) == expected


def test_a_kernel_that_fails_its_check_is_skipped_and_reported():
    notes = []
    assert openblas.choose_kernel("Prescott", SAPPHIRE, _passes("Cooperlake"), notes.append) == "SkylakeX"
    assert notes == ["mlx_bluey: OpenBLAS kernel Cooperlake failed its check: bad"]
    notes.clear()
    assert openblas.choose_kernel("Prescott", SKYLAKE, _passes("SkylakeX", "Haswell"), notes.append) is None
    assert notes[-1] == "mlx_bluey: keeping OpenBLAS's Prescott kernel (slow): no faster kernel passed its check"


def test_cpu_flags_come_from_proc_cpuinfo_text():
    text = "processor\t: 0\nflags\t\t: fpu sse3 avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu\n"
    assert openblas.cpu_flags(text) == {"fpu", "sse3", "avx2", "fma"}
    assert openblas.cpu_flags("") == frozenset()


def test_the_users_coretype_is_left_alone():
    def never(_):
        raise AssertionError("no kernel is checked when the user chose one")

    env = {"OPENBLAS_CORETYPE": "Prescott", "LD_PRELOAD": "/x/libopenblas.so.0", "OPENBLAS_THREAD_TIMEOUT": "4"}
    assert runtime.blas_environment(env, "/x/libopenblas.so.0", SAPPHIRE, never) == {}


@NEEDS_OPENBLAS
def test_the_check_reads_the_kernel_back_and_compares_with_numpy():
    library = runtime.find_openblas()
    result = openblas.check_kernel(library, "Haswell")
    assert result.ok == ({"avx2", "fma"} <= openblas.cpu_flags()), result.detail
    missing = openblas.check_kernel(library, "NoSuchKernel")
    assert not missing.ok and missing.detail.startswith("this OpenBLAS does not have it (it loaded ")


REEXEC = (
    "import ctypes, os, sys; from mlx_bluey import openblas, runtime; "
    "openblas.loaded_kernel = lambda library: 'Prescott'; runtime.ensure_fast_blas(); "
    "lib = ctypes.CDLL(runtime.find_openblas()); lib.openblas_get_corename.restype = ctypes.c_char_p; "
    "print(os.environ.get('OPENBLAS_CORETYPE'), lib.openblas_get_corename().decode(), openblas.kernel_source())"
)


@NEEDS_OPENBLAS
def test_a_fallback_detected_at_start_up_is_replaced_in_the_re_executed_process():
    """OpenBLAS's detection is stubbed to say Prescott; the re-exec must then run the best checked kernel."""
    best = openblas.choose_kernel("Prescott", openblas.cpu_flags(), _passes())
    if best is None:
        pytest.skip("this CPU has no kernel better than Prescott")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LD_PRELOAD", "OPENBLAS_CORETYPE", "MLX_BLUEY_BLAS_CHECKED", openblas.CHOSEN_FROM_ENV)
    }
    out = subprocess.run([sys.executable, "-c", REEXEC], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"{best} {best} chosen by mlx_bluey: OpenBLAS fell back to Prescott on this CPU"


@NEEDS_OPENBLAS
def test_info_names_the_kernel_how_it_was_chosen_and_its_speed():
    import re

    env = {k: v for k, v in os.environ.items() if k not in ("MLX_BLUEY_BLAS_CHECKED", openblas.CHOSEN_FROM_ENV)}
    env["OPENBLAS_CORETYPE"] = "Haswell"
    out = run_cli("info", env=env, check=True).stdout
    assert re.search(
        r"^BLAS: OpenBLAS, kernel Haswell \(OPENBLAS_CORETYPE set in the environment\), "
        r"\d+\.\d GFLOP/s float32 matmul$",
        out,
        re.M,
    ), out


def test_cpu_line_names_the_model_cores_and_simd():
    cpuinfo = "model name\t: Intel(R) Xeon(R) Processor\nflags\t\t: sse2 avx2 fma avx512f avx512_bf16 amx_tile\n"
    assert runtime.describe_cpu(cpuinfo) == (
        f"Intel(R) Xeon(R) Processor, {os.cpu_count()} cores, avx2 fma avx512f avx512_bf16 amx_tile"
    )
    amd = "model name\t: AMD EPYC\nflags\t\t: sse2 avx avx2 fma\n"
    assert runtime.describe_cpu(amd) == f"AMD EPYC, {os.cpu_count()} cores, avx2 fma (no AVX-512)"


@pytest.mark.parametrize("preloaded", [True, False], ids=["no re-exec", "re-exec"])
def test_pytest_progress_reaches_the_terminal_with_and_without_the_re_exec(preloaded, tmp_path):
    """The conftest's re-exec must not leave pytest's capture on: CI's log then lost every line of the run
    (progress dots, and faulthandler's traceback of a crash) up to the summary."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLX_BLUEY_BLAS_CHECKED", openblas.CHOSEN_FROM_ENV)}
    if not preloaded:
        env = {k: v for k, v in env.items() if k not in ("LD_PRELOAD", "OPENBLAS_THREAD_TIMEOUT")}
    tests = os.path.dirname(__file__)
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", os.path.join(tests, "test_atomic.py")],
        env=env,
        capture_output=True,
        text=True,
        cwd=os.path.dirname(tests),
    ).stdout
    assert "test session starts" in out and "tests/test_atomic.py ..." in out, out
    assert out.count("test session starts") == 1, out


NEEDS_GLIBC = pytest.mark.skipif(
    platform.system() != "Linux" or not platform.libc_ver()[0] == "glibc", reason="glibc's mallopt"
)


@NEEDS_GLIBC
def test_allocator_thresholds_are_set_on_glibc():
    assert runtime.tune_allocator() and runtime.tune_allocator()  # accepted, and again (idempotent)


KEEPS_THE_HEAP = """
import ctypes
from mlx_bluey import runtime


class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = Mallinfo2
assert runtime.tune_allocator()
blocks = [libc.malloc(1 << 20) for _ in range(1200)]  # 1.2 GB of 1 MB blocks: heap, under the mmap threshold
grown = libc.mallinfo2().arena
for block in reversed(blocks):
    libc.free(block)
print(grown >> 20, libc.mallinfo2().arena >> 20)
"""


@NEEDS_GLIBC
def test_the_heap_keeps_freed_memory_past_a_gigabyte():
    # 1.2 GB freed at once is what a LoRA step of the 270M gives back; a 1 GB trim threshold gave it to the
    # kernel and the next micro-batch faulted it in again (runtime.py). The blocks are never written, so the
    # heap's 1.2 GB is address space only.
    out = subprocess.run([sys.executable, "-c", KEEPS_THE_HEAP], capture_output=True, text=True, check=True)
    grown, after = map(int, out.stdout.split())
    assert grown >= 1200 and after == grown, out.stdout
