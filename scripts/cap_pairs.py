"""The first N pairs of each card fact of a `data pairs` file, so no one fact's answer dominates the set.

    python3 scripts/cap_pairs.py data/bluey-pairs-onpolicy/train.jsonl /tmp/onp/cap-train.jsonl 8
    python3 scripts/cap_pairs.py data/bluey-pairs-onpolicy/train.jsonl /tmp/onp/neutral-train.jsonl 8 --same-polarity
    python3 scripts/cap_pairs.py data/bluey-pairs-onpolicy/train.jsonl /tmp/onp/fewno.jsonl 8 --same-polarity --max-no 2
    python3 scripts/cap_pairs.py /tmp/pp/pairs-e2.jsonl /tmp/pp/pressure-pairs.jsonl 100 --same-polarity \
        --reason "out of character" --reason contradicts

A pair's fact is the first "misses card fact X" of its reason, else the first "contradicts card fact X", else
"other"; lines are kept in file order. Own age was 28-31 of the 81 on-policy pairs, and DPO on them answered
age questions "Six!" (the top README, "On-policy fact pairs"). Prints the count per fact before the cap.

--same-polarity first drops the pairs whose chosen and rejected replies open with words of different polarity
(yes-words: yes, yep, yeah, yup; no-words: no, nope, neither, nah; anything else is neither), so no pair's margin
can sit on "Nope" against "Yep" or "Nope" against "I": DPO on all 81 opened 18 of 36 short replies with a no-word
(the same README bullet). Prints how many it dropped.

--max-no N then keeps only the first N pairs whose chosen reply opens with a no-word: 8 of the 45 pairs
--same-polarity keeps (18%) against 104 of the 1927 training replies (5.4%), and DPO on those 45 still opened 14
of 36 short replies with one ("Do you like ice cream?" -> "Nope! I love ice cream").

--reason PREFIX (repeatable) first keeps only the pairs whose reason starts with one of the prefixes: the adapter's
replies that talk like an assistant ("out of character: gpt") or say a card fact wrong ("contradicts card fact
own_age"), not its length misses or the template pairs of a pressure-prompt run (a fact-swap pair's reason starts
"contradicts" too: that run had none, --max-per-fact 0).
"""

import json
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlx_bluey.text import words  # noqa: E402 (after the checkout joins sys.path)

YES, NO = {"yes", "yep", "yeah", "yup"}, {"no", "nope", "neither", "nah"}


def polarity(reply: str) -> str:
    """yes, no or other, by the reply's first word (mlx_bluey.text's definition of a word)."""
    word = (words(reply) or [""])[0]
    return "yes" if word in YES else "no" if word in NO else "other"


def main() -> None:
    source, output, cap = sys.argv[1], sys.argv[2], int(sys.argv[3])
    same_polarity = "--same-polarity" in sys.argv[4:]
    max_no = int(sys.argv[sys.argv.index("--max-no") + 1]) if "--max-no" in sys.argv else None
    reasons = tuple(sys.argv[i + 1] for i, arg in enumerate(sys.argv) if arg == "--reason")
    seen: Counter = Counter()
    kept, dropped, no_openers = [], 0, 0
    for line in open(source):
        pair = json.loads(line)
        if reasons and not pair["reason"].startswith(reasons):
            continue
        if same_polarity and polarity(pair["chosen"]) != polarity(pair["rejected"]):
            dropped += 1
            continue
        if max_no is not None and polarity(pair["chosen"]) == "no":
            no_openers += 1
            if no_openers > max_no:
                dropped += 1
                continue
        reason = pair["reason"]
        found = re.search(r"misses card fact (\w+)", reason) or re.search(r"contradicts card fact (\w+)", reason)
        fact = found.group(1) if found else "other"
        seen[fact] += 1
        if seen[fact] <= cap:
            kept.append(line)
    open(output, "w").write("".join(kept))
    print(output, len(kept), dict(seen), f"dropped for polarity or no-openers: {dropped}" if dropped else "")


if __name__ == "__main__":
    main()
