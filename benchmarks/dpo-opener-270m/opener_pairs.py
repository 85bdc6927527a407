"""Opener-swap pairs (session 35, 2026-12-05; run once, kept with its run for the record):

    python3 benchmarks/dpo-opener-270m/opener_pairs.py /tmp/s35/in/data.jsonl /tmp/s35/opener.jsonl

Of the fact conversations (scripts/fact_conversations.py), every one whose dataset reply opens with a yes-word and
as many, drawn with seed 0, that open with a no-word; the rejected reply is the dataset's with its opener swapped to
the other polarity ("Nope! We live in Brisbane." -> "Yep! We live in Brisbane."), so the pair's whole margin is the
opener, and as many pairs push towards "Yep" as towards "Nope".
"""

import json
import random
import re
import sys

YES = re.compile(r"^(yes|yep|yeah|yup)\b", re.I)
NO = re.compile(r"^(no|nope|nah)\b", re.I)

rows = [json.loads(line)["messages"] for line in open(sys.argv[1])]
yes = [m for m in rows if YES.match(m[-1]["content"])]
no = random.Random(0).sample([m for m in rows if NO.match(m[-1]["content"])], len(yes))
pairs = []
for messages in yes + no:
    chosen = messages[-1]["content"]
    found = YES.match(chosen) or NO.match(chosen)
    word = "Nope" if YES.match(chosen) else "Yep"
    pairs.append(
        {
            "messages": messages[:-1],
            "chosen": chosen,
            "rejected": word + chosen[found.end() :],
            "reason": f"opener swapped: {found.group(0)} -> {word}",
            "source": "opener",
        }
    )
open(sys.argv[2], "w").write("".join(json.dumps(p) + "\n" for p in pairs))
print(len(yes), "yes-openers,", len(no), "no-openers of", len(rows))
