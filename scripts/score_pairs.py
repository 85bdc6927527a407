"""Which reply of each held-out pair do adapters prefer? Per origin (template, fact, adapter), for each adapter.

    .venv/bin/python scripts/score_pairs.py --pairs data/bluey-pairs/valid.jsonl \\
        --adapter adapters/bluey-270m-sft --adapter adapters/bluey-270m-simpo --output reports/pairs-270m

A pair is ranked right when the chosen reply's log-probability is above the rejected one's: summed over
the reply's tokens (what DPO's reward moves; for a fact swap, which differs in one or two tokens, it is
the question "which fact does the model say") and per token (SimPO's reward). The same reply masking as
training (mlx_bluey.preference.encode_reply). Writes OUTPUT/pairs.json and OUTPUT/pairs.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlx_bluey.bench_record import command_line, machine, table, write_record  # noqa: E402  (after the path)
from mlx_bluey.generation import load_for_generation  # noqa: E402 (after the path, as above)
from mlx_bluey.preference import encode_reply, read_pairs, reply_logprobs  # noqa: E402 (after the path, as above)


def score(adapter: str, pairs) -> dict:
    model, tokenizer, _ = load_for_generation(None, adapter, log=lambda _: None)
    model.eval()
    by_origin: dict[str, dict] = {}
    for pair in pairs:
        rows = [encode_reply(tokenizer, pair.messages, reply) for reply in (pair.chosen, pair.rejected)]
        sums, counts = reply_logprobs(model, rows)
        (chosen, rejected), (n_chosen, n_rejected) = sums.tolist(), counts.tolist()
        for origin in (pair.origin or "unnamed", "all"):
            figures = by_origin.setdefault(origin, {"pairs": 0, "right_by_sum": 0, "right_per_token": 0})
            figures["pairs"] += 1
            figures["right_by_sum"] += chosen > rejected
            figures["right_per_token"] += chosen / n_chosen > rejected / n_rejected
    for figures in by_origin.values():
        figures["share_by_sum"] = figures["right_by_sum"] / figures["pairs"]
        figures["share_per_token"] = figures["right_per_token"] / figures["pairs"]
    return by_origin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", required=True)
    parser.add_argument("--adapter", action="append", required=True, help="repeat for each adapter")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    pairs = read_pairs(args.pairs)
    results = {adapter: score(adapter, pairs) for adapter in args.adapter}
    origins = list(next(iter(results.values())))
    header = ["adapter", *(f"{o} ({results[args.adapter[0]][o]['pairs']})" for o in origins)]
    rows = [
        [adapter, *(f"{figures[o]['share_by_sum']:.2f} / {figures[o]['share_per_token']:.2f}" for o in origins)]
        for adapter, figures in results.items()
    ]
    record = {"command": command_line(), "machine": machine(), "pairs": args.pairs, "results": results}
    text = write_record(
        Path(args.output),
        "pairs",
        record,
        f"# Held-out pairs ranked right ({args.pairs}, {len(pairs)} pairs)",
        "Share of pairs whose chosen reply is more likely than the rejected one: summed over the reply's "
        "tokens / per token.\n\n" + table(header, rows),
    )
    print(text)


if __name__ == "__main__":
    main()
