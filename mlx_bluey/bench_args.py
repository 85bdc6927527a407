"""What one `mlx_bluey bench` run is given: a typed record with a comment per field, no MLX import (the CLI's
options take their defaults from here before MLX may be loaded)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BenchArgs:
    # Models to measure: registry names, Hugging Face ids, directories; () = the embedded 270M and the 1B-shaped.
    models: tuple[str, ...] = ()
    # Weight dtypes, each measured with every model: auto (float32 on a CPU, bfloat16 on Metal), float32,
    # bfloat16, float16 or 4bit.
    dtypes: tuple[str, ...] = ("auto",)
    # Timed runs per figure, after one warm-up; the figures are their median, min and max.
    repeats: int = 3
    # Prompt length of the prompt-processing figure.
    prompt_tokens: int = 128
    # Tokens decoded in the decode figure.
    new_tokens: int = 32
    # Sequences per training step in the training figure.
    train_batch: int = 1
    # Tokens per training sequence.
    train_length: int = 128
    # Directory for bench.json, bench.md and bench.png.
    output: str = "benchmarks/bench"
    # The command line, recorded in bench.json and bench.md.
    command: str = ""
