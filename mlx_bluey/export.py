"""`mlx_bluey export`: a fused model directory -> ONNX variants for the browser (in the export environment) or
GGUF files (gguf_export.py); a LoRA adapter -> a PEFT adapter (peft_export.py).

    mlx_bluey fuse --adapter adapters/bluey-gemma-3-270m-embedded --output fused/bluey-270m
    mlx_bluey export fused/bluey-270m --output exports/bluey-270m --parity-data data/bluey/test.jsonl

Optimum and onnxruntime live in their own environment (optimum-onnx pins transformers < 4.58; mlx-lm
needs >= 5.7), built by `make export-env`. For ONNX this command only finds that environment's Python and
runs the worker (export_env/onnx_export.py) there with the ExportArgs as JSON, streaming its progress; it
imports nothing from it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .export_args import ExportArgs

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


def worker_command(args: ExportArgs) -> list[str]:
    return [str(export_python()), "-m", "mlx_bluey.export_env.onnx_export", args.to_json()]


def run(args: ExportArgs, log=print) -> None:
    """The export args.kind names; errors from any of them come out as ExportError."""
    if args.kind == "peft":
        from .peft_export import PeftExportError, export_peft

        try:
            log(f"PEFT adapter: {export_peft(args.source, args.output)}")
        except PeftExportError as error:
            raise ExportError(str(error)) from error
    elif args.kind == "gguf":
        from .gguf_export import GgufExportError, export_gguf

        try:
            export_gguf(args, log=log)
        except GgufExportError as error:
            raise ExportError(str(error)) from error
    else:
        run_onnx(args)


def run_onnx(args: ExportArgs) -> None:
    if not (args.source / "config.json").exists():
        raise ExportError(f"{args.source}: not a model directory (no config.json); make one with `mlx_bluey fuse`")
    for path, option in ((args.parity_data, "--parity-data"), (args.vocabulary_data, "--vocabulary-data")):
        if path is not None and not path.exists():
            raise ExportError(f"{path}: no such file ({option})")
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")])),
        TRANSFORMERS_NO_ADVISORY_WARNINGS="1",
        TOKENIZERS_PARALLELISM="false",
    )
    env.pop("LD_PRELOAD", None)  # the MLX process's OpenBLAS is not the export environment's business
    result = subprocess.run(worker_command(args), env=env, stdout=sys.stdout, stderr=sys.stderr)
    if result.returncode:
        raise ExportError(f"export failed (exit {result.returncode}); {args.output} was left as it was")
