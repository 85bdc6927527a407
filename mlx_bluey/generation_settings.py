"""The sampling defaults, in one place: the CLI's options, generation, evaluation and the benchmarks
read them from here (no MLX import, so the CLI can build its options before MLX loads)."""

from __future__ import annotations

from dataclasses import dataclass

# The repetition penalty looks at this many latest tokens of the reply, the prompt left out (sampling.py
# says why); the page uses the same window (web/worker.js), and bench_decode_peers.py gives it to mlx-lm's
# sampler too (whose window takes in the prompt: a speed comparison, not the same replies).
REPETITION_CONTEXT_TOKENS = 64


@dataclass
class GenerationSettings:
    max_new_tokens: int = 256  # hard limit on reply length in tokens
    min_new_tokens: int = 0  # stop ids are impossible before this many tokens
    temperature: float = 0.7  # 0 = greedy
    top_p: float = 0.95  # nucleus over the top-k candidates (mlx_bluey/sampling.py); 1.0 = off
    top_k: int = 64  # 0 = off
    min_p: float = 0.0  # drop tokens below min_p * p(top token); 0 = off
    repetition_penalty: float = 1.1  # >1 discourages repeating the reply's last 64 tokens; 1.0 = off
    seed: int | None = None  # fixes the sampling noise


# GenerationSettings fields under their Hugging Face generation_config.json names: `mlx_bluey fuse` writes
# the defaults there, so transformers' generate(), Transformers.js and the chat page (whose sampling inputs
# carry these names as ids and start from the file) start from the CLI's defaults without a copy of them.
GENERATION_CONFIG_KEYS = ("temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens", "min_new_tokens")


def generation_config_defaults(settings: GenerationSettings | None = None) -> dict:
    """The sampling defaults as generation_config.json keys (do_sample follows the temperature)."""
    settings = settings or GenerationSettings()
    values = {key: getattr(settings, key) for key in GENERATION_CONFIG_KEYS}
    return {"do_sample": settings.temperature > 0, **values}
