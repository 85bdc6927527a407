"""Where a decode step's time goes, on this machine: the profile behind the decode figures.

    .venv/bin/python scripts/profile_decode.py                 # the embedded 270M, float32
    .venv/bin/python scripts/profile_decode.py --model fused/bluey-270m --steps 40

Times, each the median of --repeats runs after a warm-up, for one new token with a warm KV cache:
the transformer body in MLX (embedding, every block, final norm), the tied output head as MLX
computes it (one thread on a CPU) and as NumPy/BLAS computes it (every core), a whole step both
ways, and the bytes each part reads per token, so GB/s can be set against the machine's
matrix-vector ceilings (`mlx_bluey bench`). Results: benchmarks/decode_profile.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="registry name or directory (default: the embedded 270M)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks")
    args = parser.parse_args()
    from mlx_bluey import runtime

    runtime.ensure_fast_blas()
    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_flatten
    from mlx_lm.models.cache import make_prompt_cache

    from mlx_bluey.bench import median_ms
    from mlx_bluey.bench_record import command_line, machine, table, write_record
    from mlx_bluey.decode_head import LastPositionNumpyHead
    from mlx_bluey.generation import load_for_generation
    from mlx_bluey.head_loss import head_weight

    model, tokenizer, model_dir = load_for_generation(args.model, None, log=lambda _: None)
    fast = LastPositionNumpyHead(model)
    cache = make_prompt_cache(model)
    mx.eval(model(mx.array(tokenizer.encode("G'day Bluey! What are you playing today?"))[None], cache=cache))
    token = mx.array([[42]])

    # Each timed call appends one position to the cache: 20 repeats grow a 12-token context to ~100,
    # which changes attention's share of the work by little at this size.
    hidden = model.model(token, cache)[:, -1:, :]
    mx.eval(hidden)
    weight = head_weight(model)
    parts = {
        "body (MLX)": median_ms(lambda: mx.eval(model.model(token, cache)[:, -1:, :]), args.repeats),
        "head (MLX)": median_ms(lambda: mx.eval(model.model.embed_tokens.as_linear(hidden)), args.repeats),
        "head (NumPy/BLAS)": median_ms(lambda: np.array(hidden, copy=False) @ fast.weight.T, args.repeats),
        "step, MLX head (mlx_lm.generate's)": median_ms(lambda: mx.eval(model(token, cache=cache)), args.repeats),
        "step, NumPy head (mlx_bluey's)": median_ms(lambda: mx.eval(fast(token, cache=cache)), args.repeats),
    }
    total = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    head_bytes = weight.nbytes
    read = {
        "body (MLX)": total - head_bytes,
        "head (MLX)": head_bytes,
        "head (NumPy/BLAS)": head_bytes,
        "step, MLX head (mlx_lm.generate's)": total,
        "step, NumPy head (mlx_bluey's)": total,
    }
    rows = [
        {"part": name, "ms": ms, "mb_read": read[name] / 1e6, "gb_per_s": read[name] / ms / 1e6}
        for name, ms in parts.items()
    ]
    summary = {
        "command": command_line(),
        "model": str(model_dir),
        "machine": machine(),
        "dtype": str(weight.dtype),
        "repeats": args.repeats,
        "rows": rows,
    }
    cells = [[r["part"], f"{r['ms']:.1f}", f"{r['mb_read']:.0f}", f"{r['gb_per_s']:.1f}"] for r in rows]
    print(
        write_record(
            args.output,
            "decode_profile",
            summary,
            "# Where a decode step goes",
            f"{model_dir.name}, {summary['dtype']}, median of {args.repeats} after a warm-up, one new token, "
            f"warm KV cache.\n\n" + table(["part", "ms", "MB read", "GB/s"], cells, align="lrrr"),
        )
    )


if __name__ == "__main__":
    main()
