"""The pressure conversations of a split file, each N times: the input of `mlx_bluey data pairs` for
on-policy pressure pairs.

    .venv/bin/python scripts/pressure_conversations.py data/bluey/train.jsonl --repeat 4 --output /tmp/pp/data.jsonl

Keeps a conversation when its last user turn names one of the card's pressure_markers (data_pairs.pressure_hits,
the rule of its template pairs) and writes it --repeat times in a row: `data pairs` samples conversation i with
seed + i, so the copies get different samples of the adapter. Prints the count.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlx_bluey.character import load_card  # noqa: E402
from mlx_bluey.data_pairs import pressure_hits  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("split", type=Path)
    parser.add_argument("--repeat", type=int, default=1, help="copies of each conversation kept")
    parser.add_argument("--character", type=Path, default=ROOT / "data/bluey/character.yaml")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    card = load_card(args.character)
    kept = []
    for line in open(args.split):
        messages = json.loads(line)["messages"]
        if pressure_hits(messages[:-1], card):
            kept.append(line if line.endswith("\n") else line + "\n")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("".join(line for line in kept for _ in range(args.repeat)))
    print(f"{args.output}: {len(kept)} conversations, {len(kept) * args.repeat} rows")


if __name__ == "__main__":
    main()
