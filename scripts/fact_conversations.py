"""The fact conversations of a split file: the input of `mlx_bluey data pairs` for on-policy fact pairs.

    .venv/bin/python scripts/fact_conversations.py data/bluey/train.jsonl --part 8 --part 14 --part 15 \\
        --extra data/bluey/drafts/part16.jsonl --output /tmp/onp/in-train/data.jsonl

Keeps a conversation of SPLIT when it is one of the raw fact parts' (data/bluey/raw/partN.jsonl, the same
messages) and its last reply answers a card fact (data_pairs.answer_fact: at most 25 words, the fact's answer
in the first 6 that the question does not name); `--extra` files are kept by the second rule alone. The raw
parts limit it to conversations written about the facts: elsewhere a short reply that names the family in
passing ("Super fast! I beat Bingo to the car.") would count as an answer. Prints the count by fact.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlx_bluey.character import load_card  # noqa: E402
from mlx_bluey.data_pairs import answer_fact, last_user_turn  # noqa: E402


def _key(row: dict) -> str:
    return json.dumps(row["messages"], sort_keys=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("split", type=Path)
    parser.add_argument("--part", type=int, action="append", default=[], help="a raw fact part's number")
    parser.add_argument("--extra", type=Path, action="append", default=[], help="a file kept by answer alone")
    parser.add_argument("--character", type=Path, default=ROOT / "data/bluey/character.yaml")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    card = load_card(args.character)
    parts = {_key(json.loads(line)) for n in args.part for line in open(ROOT / f"data/bluey/raw/part{n}.jsonl")}
    kept, facts = [], Counter()
    for path, need_part in [(args.split, True), *((extra, False) for extra in args.extra)]:
        for line in open(path):
            row = json.loads(line)
            if need_part and _key(row) not in parts:
                continue
            messages = row["messages"]
            if fact := answer_fact(messages[-1]["content"], last_user_turn(messages[:-1]), card):
                kept.append(line if line.endswith("\n") else line + "\n")
                facts[fact.id] += 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("".join(kept))
    print(f"{args.output}: {len(kept)} conversations; by fact {dict(facts.most_common())}")


if __name__ == "__main__":
    main()
