"""Training step time of this checkout against another commit of mlx-bluey, side by side on the same batches.

    .venv/bin/python scripts/bench_train_step.py --baseline e8eb2ac --steps 8 --rounds 3 \\
        --variant current --variant "current --no-numpy-gelu" --output benchmarks/cpu_ops

Each variant is a `mlx_bluey train` run of --steps steps of --config on this checkout's data (the same
seed, so the same batches in the same order): `baseline` runs the commit given (a git worktree in a
temporary directory), `current` this checkout, anything after it extra train flags. Runs alternate
within a round (baseline, current, ..., then the next round rotated by one), so drift in the machine's
speed hits all. The first step of every run is left out (warm-up). Figures per run: the seconds of the
timed steps together (configs/bluey.yaml's first steps hold 170 to 961 trained tokens, in
benchmarks/sft-facts-270m/metrics.jsonl, so a median step would say little about an epoch) and trained
tokens per second; ratios are paired: the variant's trained tokens per second over the baseline's within a
round (the baseline's seconds over the variant's when both train the same batches; a variant that batches
differently, `--batch-size 4 --grad-accumulation 1`, trains other tokens in its steps), then the median and
range over rounds. The training losses of every step are kept, and their largest difference
from the baseline's is reported (a speed change that changes the losses beyond float32 rounding is not
one).

Every tree trains the conversations as the data has them (the training system message off), so a baseline from
before that message trains the same batches. --as-configured trains every tree as --config says, the message
included (make train's own batches; benchmarks/allocator-configured.md); the baseline must know the message.

    .venv/bin/python scripts/bench_train_step.py --summarise benchmarks/cpu_ops.json

writes a record's tables again from its runs with this script's summary (the record keeps the command
that measured them and adds the one that summarised them).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from mlx_bluey.bench_record import command_line, machine, table, timed_training, write_record  # noqa: E402 (after the checkout joins sys.path)


def worktree(ref: str, parent: Path) -> Path:
    """A detached checkout of `ref` (removed with the temporary directory; git forgets it at prune)."""
    path = parent / "baseline"
    command = ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), ref]
    subprocess.run(command, check=True, capture_output=True)
    return path


def same_conversations(tree: Path) -> list[str]:
    """Flags that train `tree` on the conversations as the data has them: a tree that knows the training system
    message (configs/bluey.yaml turns it on) runs without it, so it trains the same batches as one from before."""
    knows = "system_from_card" in (tree / "mlx_bluey" / "config.py").read_text(encoding="utf-8")
    return ["--no-system-from-card"] if knows else []


def run_once(tree: Path, flags: list[str], args, output: Path) -> dict:
    """One timed training run in `tree`; its per-step seconds, trained tokens and losses."""
    data = ["--data", str(ROOT / args.data), *([] if args.as_configured else same_conversations(tree))]
    command = timed_training(args.config, output, args.steps, *data, *flags)
    # -m from the tree's root imports the tree's mlx_bluey (the current directory is first on sys.path).
    done = subprocess.run(command, cwd=tree, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{shlex.join(command)} (in {tree}) failed:\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    rows = [row for row in rows if "train_loss" in row and row["step"] > 1]  # step 1: warm-up
    seconds = [row["seconds"] for row in rows]
    tokens = sum(row["trained_tokens"] for row in rows)
    return {
        "trained_tokens_per_second": tokens / sum(seconds),
        "step_seconds": seconds,
        "losses": [row["train_loss"] for row in rows],
    }


def summarise(runs: dict[str, list[dict]], baseline: str) -> tuple[list[list], list[str], dict]:
    """Table rows, ratio lines and the ratios per variant (baseline seconds / variant seconds, per round)."""
    rows, lines, ratios = [], [], {}
    for name, results in runs.items():
        seconds = [sum(r["step_seconds"]) for r in results]
        tokens = [r["trained_tokens_per_second"] for r in results]
        drift = max(abs(a - b) for r, base in zip(results, runs[baseline]) for a, b in zip(r["losses"], base["losses"]))
        rows.append([name, f"{statistics.median(seconds):.1f}", f"{statistics.median(tokens):.1f}", f"{drift:.2g}"])
        if name == baseline:
            continue
        paired = [
            r["trained_tokens_per_second"] / b["trained_tokens_per_second"] for r, b in zip(results, runs[baseline])
        ]
        ratios[name] = paired
        shown = ", ".join(f"{x:.2f}" for x in paired)
        lines.append(
            f"- {name} vs {baseline}: **{statistics.median(paired):.2f}x** as fast "
            f"(rounds {min(paired):.2f}-{max(paired):.2f}: {shown})"
        )
    return rows, lines, ratios


def write(output: Path, record: dict) -> str:
    """NAME.json and NAME.md of `record` (whose runs are summarised here); the Markdown."""
    baseline = next(iter(record["runs"]))
    rows, lines, record["ratios"] = summarise(record["runs"], baseline)
    header = ["variant", "seconds of the timed steps (median of runs)", "trained tokens/s", "largest loss difference"]
    body = table(header, rows, "lrrr") + "\n" + "\n".join(lines) + "\n"
    if "summarised_by" in record:
        body += f"\nSummarised from the record's runs by `{record['summarised_by']}`.\n"
    title = "# Training step time against a baseline commit"
    return write_record(output.parent, output.name, record, title, body)


def main() -> None:
    from mlx_bluey.runtime import ensure_fast_blas

    ensure_fast_blas()  # the record's BLAS facts are then those of the runs (each `mlx_bluey train` does the same)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", help="git commit (or ref) to compare against (required unless --summarise)")
    parser.add_argument("--variant", action="append", default=[], help="'current' plus optional train flags")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--config", default="configs/bluey.yaml")
    parser.add_argument("--data", default="data/bluey")
    parser.add_argument("--output", default="benchmarks/cpu_ops")
    parser.add_argument("--summarise", type=Path, help="a record (NAME.json) to summarise again; nothing is run")
    parser.add_argument(
        "--as-configured",
        action="store_true",
        help="train every tree as --config says (its system message too); both trees must know system_from_card",
    )
    args = parser.parse_args()
    if args.summarise:
        record = json.loads(args.summarise.read_text())
        record["summarised_by"] = command_line()
        print(write(args.summarise.with_suffix(""), record))
        return
    if not args.baseline:
        parser.error("--baseline is required")
    baseline = f"baseline ({args.baseline})"
    variants = [baseline, *(args.variant or ["current"])]
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as scratch:
        base_tree = worktree(args.baseline, Path(scratch))
        try:
            if args.as_configured and not same_conversations(base_tree):
                parser.error(f"--as-configured: {args.baseline} predates system_from_card (it trains other batches)")
            for round_ in range(args.rounds):
                order = variants[round_ % len(variants) :] + variants[: round_ % len(variants)]
                for name in order:
                    tree, flags = (base_tree, []) if name == baseline else (ROOT, shlex.split(name)[1:])
                    result = run_once(tree, flags, args, Path(scratch) / "run")
                    runs[name].append(result)
                    print(f"round {round_ + 1} {name}: {sum(result['step_seconds']):.1f} s", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_tree)], check=False)
    record = {
        "command": command_line(),
        "machine": machine(),
        "steps_timed_per_run": args.steps - 1,
        "config": args.config,
        "runs": runs,
    }
    print(write(Path(args.output), record))


if __name__ == "__main__":
    main()
