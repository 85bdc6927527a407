"""Decode speed, side by side: mlx_bluey's generation vs `mlx_lm.generate` vs transformers (PyTorch) vs onnxruntime.

    .venv/bin/python scripts/bench_decode_peers.py --model fused/bluey-270m --export exports/bluey-270m \
        --export exports/bluey-270m-fp32     # mlx_bluey export ... --variants fp32

Same model (a fused directory; its ONNX export for onnxruntime), same prompt, greedy, exactly
--new-tokens tokens (every stop id blocked, so no run ends early), float32 for MLX. The two MLX
runtimes also run with the chat's default sampling, each library's own sampler ("(sampled)" rows). Runs alternate
(ours, mlx_lm, PyTorch, ort-q8, ..., ours, ...) for --rounds rounds so drift in the machine hits all.
Ratios are paired: each round's figure over mlx_lm.generate's in the same round, then the median and
range of those per-round ratios (not a ratio of medians, which pairs a fast round with a slow one).
Greedy tokens: ours and mlx_lm.generate must emit the same N tokens (the script fails otherwise);
for the other runtimes the position of the first token that differs from ours is recorded.
PyTorch and onnxruntime run in the export environment (`make export-env`).

Decode tokens/s = (N - 1) / (time for N tokens - time for the first token): the prompt is left out.
MLX: measured as two runs, max_tokens = 1 and = N (the same prompt, cache warm), the difference
being the decode of N - 1 tokens (the same for transformers' generate). onnxruntime: the export
environment's OrtDecoder.greedy, timed from the first generated token (the same quantity).
Results: benchmarks/decode_vs_peers.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from mlx_bluey.bench_record import command_line, machine, table, write_record  # noqa: E402 (after the checkout joins sys.path)

PROMPT = [{"role": "user", "content": "G'day Bluey! What's your favourite game to play with Bingo and Dad?"}]


def time_mlx(generate, tokens: int) -> float:
    started = time.perf_counter()
    generate(tokens)
    return time.perf_counter() - started


SAMPLED = "{} (sampled)"


def mlx_runners(model_dir: str):
    import mlx.core as mx
    from mlx_lm.generate import stream_generate
    from mlx_lm.sample_utils import make_logits_processors, make_sampler

    from mlx_bluey.chat_format import prompt_ids
    from mlx_bluey.generation import (
        REPETITION_CONTEXT_TOKENS,
        GenerationSettings,
        block_stops_until,
        generate_reply,
        load_for_generation,
        stop_token_ids,
    )

    model, tokenizer, path = load_for_generation(model_dir, None, dtype="float32", log=lambda _: None)
    stops = stop_token_ids(path, tokenizer)
    prompt = prompt_ids(tokenizer, PROMPT)

    def ours(n: int) -> list[int]:  # the chat path: streaming callback on, as `mlx_bluey generate` runs it
        settings = GenerationSettings(max_new_tokens=n, min_new_tokens=n, temperature=0.0, repetition_penalty=1.0)
        reply = generate_reply(model, tokenizer, PROMPT, settings, stops, on_text=lambda _: None)
        assert len(reply.tokens) == n, len(reply.tokens)
        return list(reply.tokens)

    def theirs(n: int) -> list[int]:
        tokens = [
            response.token
            for response in stream_generate(
                model,
                tokenizer,
                mx.array(prompt),
                max_tokens=n,
                sampler=make_sampler(temp=0.0),
                logits_processors=[block_stops_until(n, len(prompt), stops)],
            )
        ]
        assert len(tokens) == n, len(tokens)
        return tokens

    # The chat defaults (temperature 0.7, top-p 0.95, top-k 64, repetition penalty 1.1 over 64 tokens),
    # each library sampling its own way: mlx_bluey.sampling vs mlx-lm's make_sampler.
    defaults = GenerationSettings()

    def ours_sampled(n: int) -> None:
        settings = GenerationSettings(max_new_tokens=n, min_new_tokens=n, seed=0)
        reply = generate_reply(model, tokenizer, PROMPT, settings, stops, on_text=lambda _: None)
        assert len(reply.tokens) == n, len(reply.tokens)

    def theirs_sampled(n: int) -> None:
        mx.random.seed(0)
        sampler = make_sampler(temp=defaults.temperature, top_p=defaults.top_p, top_k=defaults.top_k)
        processors = [
            *make_logits_processors(
                repetition_penalty=defaults.repetition_penalty, repetition_context_size=REPETITION_CONTEXT_TOKENS
            ),
            block_stops_until(n, len(prompt), stops),
        ]
        count = sum(
            1
            for _ in stream_generate(
                model, tokenizer, mx.array(prompt), max_tokens=n, sampler=sampler, logits_processors=processors
            )
        )
        assert count == n, count

    return {
        "mlx_bluey": ours,
        "mlx_lm.generate": theirs,
        SAMPLED.format("mlx_bluey"): ours_sampled,
        SAMPLED.format("mlx_lm.generate"): theirs_sampled,
    }, len(prompt)


ORT_CHILD = r"""
import json, sys, time
from pathlib import Path
from mlx_bluey.export_env.parity_harness import OrtDecoder
path, prompt, config, n = Path(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
decoder = OrtDecoder(path, config=config)  # the variant's session_config (int8: fold its weights at load)
decoder.greedy(prompt, 4, set())  # warm-up
tokens, speed = decoder.greedy(prompt, n, set())
assert len(tokens) == n
print(json.dumps({"decode_tokens_per_s": speed, "tokens": [int(t) for t in tokens]}))
"""


# transformers' generate, greedy, every stop blocked by min_new_tokens; timed like MLX: N tokens minus 1 token.
TORCH_CHILD = r"""
import json, os, sys, time
import torch
from transformers import AutoModelForCausalLM
torch.set_num_threads(os.cpu_count())
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float32).eval()
ids = torch.tensor([json.loads(sys.argv[2])])
n = int(sys.argv[3])
def timed(k):
    started = time.perf_counter()
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=k, min_new_tokens=k,
                             do_sample=False, repetition_penalty=1.0, pad_token_id=0)  # fuse's config says 1.1
    assert out.shape[1] - ids.shape[1] == k
    return time.perf_counter() - started, out[0, ids.shape[1]:].tolist()
timed(4)  # warm-up
(first, _), (full, tokens) = timed(1), timed(n)
print(json.dumps({"decode_tokens_per_s": (n - 1) / (full - first), "tokens": tokens}))
"""


def export_env_runner(code: str, *args: str):
    """(decode tok/s, greedy tokens) measured by `code` in the export environment (onnxruntime, PyTorch)."""
    from mlx_bluey.export import export_python

    def run(n: int) -> tuple[float, list[int]]:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env.pop("LD_PRELOAD", None)  # MLX's OpenBLAS is not theirs
        out = subprocess.run(
            [str(export_python()), "-c", code, *args, str(n)], capture_output=True, text=True, env=env, check=True
        )
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        return figures["decode_tokens_per_s"], figures["tokens"]

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="fused model directory (mlx_bluey fuse)")
    parser.add_argument(
        "--export",
        action="append",
        default=[],
        help="an export directory of the same model (mlx_bluey export), for onnxruntime; repeatable",
    )
    parser.add_argument(
        "--torch",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also transformers' generate in the export environment (PyTorch CPU, fp32)",
    )
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", default=str(ROOT / "benchmarks"))
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from mlx_bluey.chat_format import prompt_ids

    runners, prompt_length = mlx_runners(args.model)
    others = {}
    prompt = prompt_ids(AutoTokenizer.from_pretrained(args.model), PROMPT)
    if args.torch:
        others["transformers (PyTorch fp32)"] = export_env_runner(TORCH_CHILD, args.model, json.dumps(prompt))
    for export in map(Path, args.export):
        for v in json.loads((export / "export.json").read_text())["variants"]:
            others[f"onnxruntime {v['variant']}"] = export_env_runner(
                ORT_CHILD, str(export / v["file"]), json.dumps(prompt), json.dumps(v.get("session_config", {}))
            )
    for runner in runners.values():
        runner(4)  # warm-up: kernels compiled, caches filled
    # greedy tokens: ours is the reference; mlx_lm.generate runs the same MLX graph and must agree exactly
    greedy = {"mlx_bluey": runners["mlx_bluey"](args.new_tokens), "mlx_lm.generate": None}
    greedy["mlx_lm.generate"] = runners["mlx_lm.generate"](args.new_tokens)
    if greedy["mlx_lm.generate"] != greedy["mlx_bluey"]:
        sys.exit(
            f"greedy tokens differ from mlx_lm.generate's at position "
            f"{first_difference(greedy['mlx_bluey'], greedy['mlx_lm.generate'])}: the comparison is void"
        )
    results: dict[str, list[float]] = {name: [] for name in [*runners, *others]}
    for round_index in range(args.rounds):
        for name, runner in runners.items():
            first = time_mlx(runner, 1)
            full = time_mlx(runner, args.new_tokens)
            results[name].append((args.new_tokens - 1) / (full - first))
        for name, runner in others.items():
            speed, greedy[name] = runner(args.new_tokens)
            results[name].append(speed)
        print(f"round {round_index + 1}: " + "  ".join(f"{k} {v[-1]:.1f}" for k, v in results.items()), flush=True)

    medians = {name: statistics.median(values) for name, values in results.items()}
    # paired per round: sampled rows over mlx_lm.generate sampled, the rest over its greedy decode
    peer = lambda name: SAMPLED.format("mlx_lm.generate") if "(sampled)" in name else "mlx_lm.generate"  # noqa: E731 (one line, used twice below)
    paired = {name: [a / b for a, b in zip(values, results[peer(name)])] for name, values in results.items()}
    ratios = {
        name: {"median": statistics.median(r), "min": min(r), "max": max(r), "per_round": r}
        for name, r in paired.items()
    }
    agreement = {name: first_difference(greedy["mlx_bluey"], tokens) for name, tokens in greedy.items()}
    summary = {
        "command": command_line(),
        "machine": machine(),
        "setup": {
            "model": args.model,
            "export": args.export,
            "prompt_tokens": prompt_length,
            "new_tokens": args.new_tokens,
            "rounds": args.rounds,
            "mlx_dtype": "float32",
            "sampling": "greedy, except the (sampled) rows: temperature 0.7, top-p 0.95, top-k 64, "
            "repetition penalty 1.1, seed 0",
        },
        "decode_tokens_per_s": results,
        "median": medians,
        "paired_ratio_over_mlx_lm_generate": ratios,
        "greedy_tokens": {"mlx_bluey": greedy["mlx_bluey"], "first_difference_from_mlx_bluey": agreement},
    }
    same = lambda name: "all" if agreement[name] is None else f"first {agreement[name]}"  # noqa: E731 (one line, used below)
    cells = [
        [
            name,
            f"{medians[name]:.1f}",
            f"{min(v):.1f}-{max(v):.1f}",
            f"{ratios[name]['median']:.2f}x ({ratios[name]['min']:.2f}-{ratios[name]['max']:.2f})",
            same(name) if name in agreement else "-",
        ]
        for name, v in results.items()
    ]
    header = ["runtime", "decode tok/s (median)", "range", "paired ratio vs mlx_lm.generate (range)"]
    rows = table([*header, "greedy tokens equal to ours"], cells, align="lrrrr")
    write_record(
        Path(args.output),
        "decode_vs_peers",
        summary,
        "# Decode speed: mlx_bluey vs mlx_lm.generate vs transformers vs onnxruntime",
        f"{summary['setup']}\n\nRatios: each round's figure over mlx_lm.generate's in the same round (same "
        f"sampling), median and range over {args.rounds} rounds. Greedy tokens equal to ours: of "
        f"{args.new_tokens}.\n\n" + rows,
    )
    print(rows)


def first_difference(reference: list[int], tokens: list[int] | None) -> int | None:
    """Index of the first token that differs (None: all equal)."""
    if tokens is None:
        return None
    for i, (a, b) in enumerate(zip(reference, tokens)):
        if a != b:
            return i
    return None if len(reference) == len(tokens) else min(len(reference), len(tokens))


if __name__ == "__main__":
    from mlx_bluey.runtime import ensure_fast_blas

    ensure_fast_blas()
    main()
