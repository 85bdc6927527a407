"""`mlx_bluey export`: a fused model directory -> ONNX variants for the browser, in the export environment.

    mlx_bluey fuse --adapter adapters/bluey-gemma-3-270m-embedded --output fused/bluey-270m
    mlx_bluey export fused/bluey-270m --output exports/bluey-270m --parity-data data/bluey/test.jsonl

Optimum and onnxruntime live in their own environment (optimum-onnx pins transformers < 4.58; mlx-lm
needs >= 5.7), built by `make export-env`. This command only finds that environment's Python and runs
the worker (onnx_export.py) there, streaming its progress; it imports nothing from it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # the checkout that holds mlx_bluey/ (editable install)
ENV_VARIABLE = "MLX_BLUEY_EXPORT_PYTHON"


class ExportError(Exception):
    pass


def export_python() -> Path:
    """$MLX_BLUEY_EXPORT_PYTHON, else the checkout's .venv-export (made by `make export-env`)."""
    configured = os.environ.get(ENV_VARIABLE)
    python = Path(configured) if configured else PACKAGE_ROOT / ".venv-export" / "bin" / "python"
    if not python.exists():
        raise ExportError(
            f"the export environment is missing ({python}): run `make export-env` in {PACKAGE_ROOT}, "
            f"or point {ENV_VARIABLE} at a Python with optimum-onnx[onnxruntime] and torch"
        )
    return python


def worker_command(
    fused: Path,
    output: Path,
    variants: str,
    parity_data: Path | None,
    parity_texts: int,
    greedy_prompts: int,
    greedy_tokens: int,
    keep_fp32: bool,
) -> list[str]:
    command = [
        str(export_python()),
        "-m",
        "mlx_bluey.onnx_export",
        str(fused),
        str(output),
        "--variants",
        variants,
        "--parity-texts",
        str(parity_texts),
        "--greedy-prompts",
        str(greedy_prompts),
        "--greedy-tokens",
        str(greedy_tokens),
    ]
    if parity_data is not None:
        command += ["--parity-data", str(parity_data)]
    if keep_fp32:
        command.append("--keep-fp32")
    return command


def run_export(
    fused: Path,
    output: Path,
    variants: str = "q8,q4,fp16",
    parity_data: Path | None = None,
    parity_texts: int = 8,
    greedy_prompts: int = 4,
    greedy_tokens: int = 32,
    keep_fp32: bool = False,
) -> None:
    if not (fused / "config.json").exists():
        raise ExportError(f"{fused}: not a model directory (no config.json); make one with `mlx_bluey fuse`")
    if parity_data is not None and not parity_data.exists():
        raise ExportError(f"{parity_data}: no such file (--parity-data)")
    command = worker_command(
        fused, output, variants, parity_data, parity_texts, greedy_prompts, greedy_tokens, keep_fp32
    )
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")])),
        TRANSFORMERS_NO_ADVISORY_WARNINGS="1",
        TOKENIZERS_PARALLELISM="false",
    )
    env.pop("LD_PRELOAD", None)  # the MLX process's OpenBLAS is not the export environment's business
    result = subprocess.run(command, env=env, stdout=sys.stdout, stderr=sys.stderr)
    if result.returncode:
        raise ExportError(f"export failed (exit {result.returncode}); {output} was left as it was")
