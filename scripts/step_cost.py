"""Milliseconds of step time per input token, by the size of the step, for training runs' metrics.jsonl.

    .venv/bin/python scripts/step_cost.py benchmarks/make-train-part15-270m benchmarks/sft-batch4-270m \\
        --bins 300,600,1000,1400 > benchmarks/step_cost_batch4.md

A step's input tokens are its seconds x input_tokens_per_second (the real tokens fed; padding excluded).
Steps are grouped by that count, so runs that batch the same conversations differently (1 x 4 micro-batches
against one of 4) can be read side by side: what a step of short conversations costs per token, and what
a step of long ones does. The runs are whole runs of their own (not paired, maybe not on one machine):
the table says where a difference sits, the runs' own time.txt say how large the whole is. The last column is
the training loss over the epoch per trained token (with head_ids: sampled, the sampled head's loss).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def metric_rows(run: Path) -> list[dict]:
    """The training steps' rows of run/metrics.jsonl."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return [r for r in rows if "train_loss" in r]


def step_rows(rows: list[dict]) -> list[tuple[float, float]]:
    """(input tokens, seconds) of every training step."""
    return [(r["seconds"] * r["input_tokens_per_second"], r["seconds"]) for r in rows]


def mean_train_loss(rows: list[dict]) -> float:
    """The training loss per trained token over all the steps (each step's mean weighted by its tokens)."""
    return sum(r["train_loss"] * r["trained_tokens"] for r in rows) / sum(r["trained_tokens"] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories holding metrics.jsonl")
    parser.add_argument("--bins", default="300,600,1000,1400", help="input-token edges of the step groups")
    args = parser.parse_args()
    edges = [0, *(int(e) for e in args.bins.split(",")), None]
    groups = [(lo, hi) for lo, hi in zip(edges, edges[1:])]
    names = [f"{lo}-{hi - 1}" if hi else f"{lo}+" for lo, hi in groups]
    print("# Step time per input token, by the step's input tokens\n")
    print("`python scripts/step_cost.py " + " ".join(str(r) for r in args.runs) + f" --bins {args.bins}`\n")
    print(
        "Each cell: ms per input token over the steps in the group (their seconds summed over their tokens"
        " summed), and how many steps.\n"
    )
    head = " | all steps | seconds of the steps | training loss per token |"
    print("| run | " + " | ".join(f"{n} tokens" for n in names) + head)
    print("| --- |" + " ---: |" * (len(names) + 3))
    for run in args.runs:
        metrics = metric_rows(run)  # read once: the step groups and the loss both come from it
        rows = step_rows(metrics)
        cells = []
        for lo, hi in groups:
            chosen = [(t, s) for t, s in rows if t >= lo and (hi is None or t < hi)]
            tokens, seconds = sum(t for t, _ in chosen), sum(s for _, s in chosen)
            cells.append(f"{1000 * seconds / tokens:.2f} ({len(chosen)})" if chosen else "-")
        tokens, seconds = sum(t for t, _ in rows), sum(s for _, s in rows)
        whole = f" | {1000 * seconds / tokens:.2f} ({len(rows)}) | {seconds:.0f} | {mean_train_loss(metrics):.3f} |"
        print(f"| {run} | " + " | ".join(cells) + whole)


if __name__ == "__main__":
    main()
