"""Peak memory of a LoRA step, one-pass vs two-pass NumPy head (config key two_pass), side by side.

Variants: one pass (the default), two pass, two pass + gradient checkpointing (grad_checkpoint).

    .venv/bin/python scripts/bench_memory.py --examples 12 --steps 6

Trains the embedded 270M (configs/bluey.yaml with batch 1 x accumulation 4, float32) on the LONGEST
conversations of data/bluey/train.jsonl, where activation memory peaks, once with each step kind,
alternating. Reports MLX's allocator peak (mx.get_peak_memory, what metrics.jsonl logs), the
training process's peak resident memory (ru_maxrss from os.wait4: everything the process held,
the NumPy head's buffers, Python and the libraries included, which MLX's allocator does not see)
and the median seconds per step. Results: benchmarks/memory_two_pass.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from mlx_bluey.bench_record import command_line, machine, table, timed_training, write_record  # noqa: E402 (after the checkout joins sys.path)


def run_measured(command: list[str]) -> float:
    """Run `command`; its peak resident memory in GB (Linux reports ru_maxrss in kilobytes)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command)
    return usage.ru_maxrss * 1024 / 1e9


def longest(source: Path, target: Path, count: int) -> list[int]:
    rows = [line for line in source.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda line: -sum(len(m["content"]) for m in json.loads(line)["messages"]))
    target.mkdir(parents=True, exist_ok=True)
    (target / "train.jsonl").write_text("\n".join(rows[:count]) + "\n")
    return [sum(len(m["content"]) for m in json.loads(line)["messages"]) for line in rows[:count]]


VARIANTS = {  # name -> extra `mlx_bluey train` flags
    "one pass": ["--no-two-pass", "--no-grad-checkpoint"],
    "two pass": ["--two-pass", "--no-grad-checkpoint"],
    "two pass + grad checkpoint": ["--two-pass", "--grad-checkpoint"],
}


def run(data: Path, output: Path, steps: int, flags: list[str]) -> dict:
    batches = ["--batch-size", "1", "--grad-accumulation", "4"]  # the batches its records measured (the config's then)
    command = timed_training(ROOT / "configs" / "bluey.yaml", output, steps, "--data", str(data), *batches, *flags)
    peak_rss = run_measured(command)
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    return {
        "peak_memory_gb": max(r["peak_memory_gb"] for r in rows),
        "peak_rss_gb": peak_rss,
        "seconds_per_step": statistics.median(r["seconds"] for r in rows[1:]),
        "trained_tokens_per_second": statistics.median(r["trained_tokens_per_second"] for r in rows[1:]),
        "losses": [r["train_loss"] for r in rows],
        "runtime": json.loads((output / "manifest.json").read_text())["runtime"],
    }  # device, BLAS, kernel, GFLOP/s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=12)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--output", default=str(ROOT / "benchmarks"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    chars = longest(ROOT / "data" / "bluey" / "train.jsonl", work / "data", args.examples)
    results = {name: [] for name in VARIANTS}
    for round_index in range(args.rounds):
        for name in results:
            figures = run(
                work / "data", work / f"variant{list(VARIANTS).index(name)}-{round_index}", args.steps, VARIANTS[name]
            )
            results[name].append(figures)
            print(
                f"round {round_index + 1} {name}: peak {figures['peak_memory_gb']:.2f} GB (MLX), "
                f"{figures['peak_rss_gb']:.2f} GB (process RSS), "
                f"{figures['seconds_per_step']:.2f} s/step, {figures['trained_tokens_per_second']:.1f} trained tok/s",
                flush=True,
            )
    summary = {
        "command": command_line(),
        "examples": args.examples,
        "machine": machine(),
        "training_runtime": results[next(iter(results))][0]["runtime"],
        "characters_per_conversation": chars,
        "runs": results,
        "peak_memory_gb": {k: max(r["peak_memory_gb"] for r in v) for k, v in results.items()},
        "peak_rss_gb": {k: max(r["peak_rss_gb"] for r in v) for k, v in results.items()},
        "trained_tokens_per_second": {
            k: statistics.median(r["trained_tokens_per_second"] for r in v) for k, v in results.items()
        },
    }
    cells = [
        [
            k,
            f"{summary['peak_memory_gb'][k]:.2f}",
            f"{summary['peak_rss_gb'][k]:.2f}",
            f"{summary['trained_tokens_per_second'][k]:.1f}",
            f"{statistics.median(r['seconds_per_step'] for r in v):.2f}",
        ]
        for k, v in results.items()
    ]
    header = ["step", "peak GB (MLX allocator)", "peak GB (process RSS)", "trained tok/s (median)", "s/step"]
    rows = table(header, cells, align="lrrrr")
    write_record(
        Path(args.output),
        "memory_two_pass",
        summary,
        "# Peak memory: one-pass vs two-pass NumPy head, with and without gradient checkpointing "
        "(270M LoRA, batch 1 x 4, float32)",
        f"The {args.examples} longest training conversations ({min(chars)}-{max(chars)} characters), "
        f"{args.steps} steps per run, {args.rounds} rounds.\n\n" + rows,
    )
    print(rows)


if __name__ == "__main__":
    from mlx_bluey.runtime import ensure_fast_blas

    ensure_fast_blas()  # the children inherit the kernel it picks
    main()
