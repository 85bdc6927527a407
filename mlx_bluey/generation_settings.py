"""The sampling defaults, in one place: the CLI's options, generation, evaluation and the benchmarks
read them from here (no MLX import, so the CLI can build its options before MLX loads)."""

from __future__ import annotations

from dataclasses import dataclass

# The repetition penalty looks at this many latest tokens (prompt included); the page uses the same
# window (web/worker.js), and bench_decode_peers.py gives it to mlx-lm's sampler too.
REPETITION_CONTEXT_TOKENS = 64


@dataclass
class GenerationSettings:
    max_new_tokens: int = 256  # hard limit on reply length in tokens
    min_new_tokens: int = 0  # stop ids are impossible before this many tokens
    temperature: float = 0.7  # 0 = greedy
    top_p: float = 0.95  # nucleus over the top-k candidates (mlx_bluey/sampling.py); 1.0 = off
    top_k: int = 64  # 0 = off
    min_p: float = 0.0  # drop tokens below min_p * p(top token); 0 = off
    repetition_penalty: float = 1.1  # >1 discourages repeating the last 64 tokens; 1.0 = off
    seed: int | None = None  # fixes the sampling noise
