"""The ONNX export worker: code that runs in the export environment (.venv-export, `make export-env`: torch CPU,
optimum-onnx, onnxruntime), never in the MLX one, and never imports MLX (optimum-onnx pins transformers < 4.58,
mlx-lm needs >= 5.7, so the two cannot share an environment).

    onnx_export.py     the worker `mlx_bluey export` starts (export.py): Optimum export, variants, report
    onnx_graph.py      graph rewrites: the tied embedding stored once, in every variant
    parity_harness.py  an ONNX decoder fed as Transformers.js feeds it, against transformers fp32

From the package it may import only what needs no MLX: atomic, export_args, parity. tests/export_env is its
test suite, run with .venv-export's Python.
"""
