"""One sampling call on Gemma-sized logits: mlx_bluey's sampler vs mlx-lm's, and the sort behind the gap.

    .venv/bin/python scripts/bench_sampler.py               # 262,144 logits, the chat defaults

Temperature 0.7, top-p 0.95, top-k 64 (the chat's defaults) on random log-probabilities [1, vocab];
median milliseconds of --repeats calls after a warm-up, each evaluated. mlx-lm's make_sampler applies
top-p first, which sorts the whole vocabulary; mlx_bluey.sampling takes the top k with an argpartition
and sorts k values. In a decode step part of this overlaps with the model (benchmarks/decode_vs_peers.md
shows what is left of it per token).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=262_144)
    parser.add_argument("--top-k", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    import mlx.core as mx
    from mlx_lm.sample_utils import make_sampler as mlx_lm_sampler

    from mlx_bluey.bench import median_ms  # warm-up, then the median of --repeats calls
    from mlx_bluey.sampling import make_sampler

    mx.random.seed(0)
    logits = 3 * mx.random.normal((1, args.vocab))
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    mx.eval(logprobs)
    k = args.top_k
    rows = {
        "mlx_bluey.sampling": make_sampler(0.7, 0.95, k, 0.0),
        "mlx_lm make_sampler": mlx_lm_sampler(temp=0.7, top_p=0.95, top_k=k),
        f"argsort of all {args.vocab}": lambda x: mx.argsort(x, axis=-1),
        f"argpartition, top {k}": lambda x: mx.argpartition(-x, kth=k - 1, axis=-1)[..., :k],
    }
    print(f"| one call, [1, {args.vocab}] logits | ms (median of {args.repeats}) |\n|---|---:|")
    for name, fn in rows.items():
        print(f"| {name} | {median_ms(lambda fn=fn: mx.eval(fn(logprobs)), args.repeats):.2f} |")


if __name__ == "__main__":
    from mlx_bluey.runtime import ensure_fast_blas

    ensure_fast_blas()
    main()
