"""Opener-flip preference pairs: a short dataset reply that opens with a yes-word or a no-word, chosen, against
the same reply with the opener turned the other way, rejected ("Yes! The clouds..." / "Nope! The clouds...").

    .venv/bin/python scripts/opener_flips.py data/bluey/train.jsonl --each-way 20 --output /tmp/onp/flips-train.jsonl
    .venv/bin/python scripts/opener_flips.py data/bluey/train.jsonl --yes-only 40 --output /tmp/onp/flips3-train.jsonl

Why: DPO on on-policy fact pairs (scripts/fact_conversations.py, then `mlx_bluey data pairs`) taught "Nope!" as
an opening, since a quarter of those pairs' chosen replies open with a no-word (wrong premises: "Do you live in
Sydney?" -> "Nope! ...") and their rejected ones with "Yep!": "Do you like ice cream?" -> "Nope!" (the top
README's "On-policy fact pairs"). The flips pull the other way at the opening word alone. Replies of at most 25
words whose first word is yes/yep/yeah (flipped to "Nope") or nope/no (to "Yep"; "No way" left out); `--each-way
N` samples N of each kind, `--yes-only N` N of the first kind only, seeded. The lines are pair-file lines with
source "flip", to append to a `data pairs` output.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlx_bluey.text import words as lower_words  # noqa: E402

YES, NO = ("yes", "yep", "yeah"), ("nope", "no")
MAX_WORDS = 25  # short replies only: the opening word is the answer there


def flips(path: Path, yes_only: bool) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {"yes": [], "no": []}
    for line in open(path):
        messages = json.loads(line)["messages"]
        chosen = messages[-1]["content"]
        words = lower_words(chosen)
        if not words or len(words) > MAX_WORDS or words[0] not in YES + NO:
            continue
        if words[0] == "no" and len(words) > 1 and words[1] == "way":
            continue
        first = re.match(r"\s*([\w']+)", chosen)
        flip = "Nope" if words[0] in YES else "Yep"
        if yes_only and flip != "Nope":
            continue
        groups["yes" if words[0] in YES else "no"].append(
            {
                "messages": messages[:-1],
                "chosen": chosen,
                "rejected": flip + chosen[first.end() :],
                "reason": f"opener flipped: {first.group(1)} -> {flip}",
                "source": "flip",
            }
        )
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("split", type=Path)
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--each-way", type=int, help="N yes-opened and N no-opened replies")
    how.add_argument("--yes-only", type=int, help="N yes-opened replies (at most all of them)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    groups = flips(args.split, yes_only=args.yes_only is not None)
    if args.yes_only is not None:
        rows = random.Random(args.seed).sample(groups["yes"], min(args.yes_only, len(groups["yes"])))
    else:
        rng = random.Random(args.seed)
        rows = rng.sample(groups["yes"], args.each_way) + rng.sample(groups["no"], args.each_way)
        rng.shuffle(rows)
    args.output.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"{args.output}: {len(rows)} pairs (of {len(groups['yes'])} yes-opened, {len(groups['no'])} no-opened)")


if __name__ == "__main__":
    main()
