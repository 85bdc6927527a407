"""runtime.ensure_fast_blas: one re-exec sets the OpenBLAS preload and a short thread spin-wait."""

import os
import subprocess
import sys

import pytest

from mlx_bluey import runtime

SHOW = ("from mlx_bluey import runtime; runtime.ensure_fast_blas(); import os; "
        "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'), 'openblas' in os.environ.get('LD_PRELOAD', ''))")


def _run(**extra) -> str:
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_PRELOAD", "OPENBLAS_THREAD_TIMEOUT", "MLX_BLUEY_BLAS_CHECKED")}
    return subprocess.run([sys.executable, "-c", SHOW], env={**env, **extra}, capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.skipif(sys.platform != "linux" or runtime.find_openblas() is None, reason="Linux with OpenBLAS")
def test_reexec_sets_preload_and_timeout_keeping_the_users():
    assert _run() == "4 True"
    assert _run(OPENBLAS_THREAD_TIMEOUT="12") == "12 True"  # the user's value wins
