"""How much of a CPU training step the output head takes, and what a head cut to the training data's token ids
would take instead: the figure that sizes the "cut vocabulary" idea before anyone builds it.

    .venv/bin/python scripts/bench_head.py --steps 8 --rounds 3

Each round, side by side in one machine state:
  1. `mlx_bluey train --config configs/bluey.yaml` for STEPS steps (bench_record.timed_training): per-step
     seconds and supervised (trained) tokens from its metrics.jsonl, step 1 left out (warm-up);
  2. in this process, the NumPy head of those same steps (head_loss._numpy_loss_and_grad: logits, softmax and
     the gradient matmul over all 262,144 ids) on random hidden states of each step's supervised-token count
     (its time does not depend on the values), and the same over only the ids that occur in the training data's
     texts (plus the special tokens): what a cut head would cost.
The head share is head seconds / step seconds, paired per round. Results: benchmarks/head_share.{json,md}.
The cut head is not a proposal as such: softmax over fewer ids is another objective (see the README).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from mlx_bluey.bench_record import command_line, machine, table, timed_training, write_record  # noqa: E402 (after the checkout joins sys.path)


def training_steps(config: str, steps: int, output: Path) -> list[dict]:
    """STEPS timed steps of CONFIG with the whole head (the share measured here is that head's; configs/bluey.yaml
    trains with head_ids: sampled since): each step's seconds and trained tokens, step 1 (warm-up) left out."""
    command = timed_training(config, output, steps, "--head-ids", "all")
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if "train_loss" in row and row["step"] > 1]


def head_seconds(weight: np.ndarray, counts: list[int], seed: int = 0) -> float:
    """Seconds of the NumPy head's loss and gradient for steps with these supervised-token counts."""
    from mlx_bluey.head_loss import _numpy_loss_and_grad

    rng = np.random.default_rng(seed)
    total = 0.0
    for n in counts:
        hidden = rng.standard_normal((n, weight.shape[1]), dtype=np.float32)
        targets = rng.integers(0, weight.shape[0], n)
        start = time.perf_counter()
        _numpy_loss_and_grad(hidden, targets, weight)
        total += time.perf_counter() - start
    return total


def data_ids(tokenizer, train_file: Path) -> np.ndarray:
    """Every id the tokenizer gives the training file's message texts, and the special tokens."""
    from mlx_bluey.data import read_jsonl

    ids = set(tokenizer.all_special_ids)
    for conversation in read_jsonl(train_file):
        for message in conversation.messages:
            ids.update(tokenizer.encode(message["content"], add_special_tokens=False))
    return np.array(sorted(ids))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/bluey.yaml")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default="benchmarks")
    args = parser.parse_args()

    from mlx_bluey.head_loss import head_weight
    from mlx_bluey.models import resolve_model
    from mlx_bluey.tuning import load_base

    model, tokenizer, _ = load_base(resolve_model(None), "float32")
    weight = np.array(head_weight(model), copy=False)
    ids = data_ids(tokenizer, ROOT / "data" / "bluey" / "train.jsonl")
    cut = np.ascontiguousarray(weight[ids])
    rounds = []
    for round_number in range(args.rounds):
        with tempfile.TemporaryDirectory() as scratch:
            steps = training_steps(args.config, args.steps, Path(scratch) / "run")
        counts = [row["trained_tokens"] for row in steps]
        step = sum(row["seconds"] for row in steps)
        full, part = head_seconds(weight, counts, round_number), head_seconds(cut, counts, round_number)
        rounds.append({"step_seconds": step, "head_seconds": full, "cut_head_seconds": part, "trained_tokens": counts})
        print(f"round {round_number + 1}: steps {step:.1f} s, head {full:.1f} s ({full / step:.0%}), cut {part:.1f} s")

    shares = [r["head_seconds"] / r["step_seconds"] for r in rounds]
    saved = [(r["head_seconds"] - r["cut_head_seconds"]) / r["step_seconds"] for r in rounds]
    record = {
        "command": command_line(),
        "machine": machine(),
        "vocabulary": int(weight.shape[0]),
        "data_ids": int(len(ids)),
        "rounds": rounds,
        "head_share": statistics.median(shares),
        "cut_saving_share": statistics.median(saved),
    }
    rows = [
        [i + 1, f"{r['step_seconds']:.1f}", sum(r["trained_tokens"]), f"{r['head_seconds']:.1f}", f"{s:.0%}",
         f"{r['cut_head_seconds']:.2f}", f"{v:.0%}"]
        for i, (r, s, v) in enumerate(zip(rounds, shares, saved))
    ]  # fmt: skip
    header = ["round", f"{args.steps - 1} steps, s", "trained tokens", "full head, s", "head share",
              f"head over {len(ids):,} data ids, s", "step time it would save"]  # fmt: skip
    body = table(header, rows, "rrrrrrr") + (
        f"\nMedian head share {record['head_share']:.0%} (rounds {min(shares):.0%}-{max(shares):.0%}); a head over the "
        f"{len(ids):,} ids of the training texts (of {weight.shape[0]:,}) would save a median "
        f"{record['cut_saving_share']:.0%} of step time (rounds {min(saved):.0%}-{max(saved):.0%}), before any cost "
        "it adds (gathering the rows, masking generation to the same ids).\n"
    )
    print(
        write_record(Path(args.output), "head_share", record, "# The output head's share of a CPU training step", body)
    )


if __name__ == "__main__":
    main()
