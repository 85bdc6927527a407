"""The first N pairs of each card fact of a `data pairs` file, so no one fact's answer dominates the set.

    python3 scripts/cap_pairs.py data/bluey-pairs-onpolicy/train.jsonl /tmp/onp/cap-train.jsonl 8

A pair's fact is the first "misses card fact X" of its reason, else the first "contradicts card fact X", else
"other"; lines are kept in file order. Own age was 28-31 of the 81 on-policy pairs, and DPO on them answered
age questions "Six!" (the top README, "On-policy fact pairs"). Prints the count per fact before the cap.
"""

import json
import re
import sys
from collections import Counter


def main() -> None:
    source, output, cap = sys.argv[1], sys.argv[2], int(sys.argv[3])
    seen: Counter = Counter()
    kept = []
    for line in open(source):
        reason = json.loads(line)["reason"]
        found = re.search(r"misses card fact (\w+)", reason) or re.search(r"contradicts card fact (\w+)", reason)
        fact = found.group(1) if found else "other"
        seen[fact] += 1
        if seen[fact] <= cap:
            kept.append(line)
    open(output, "w").write("".join(kept))
    print(output, len(kept), dict(seen))


if __name__ == "__main__":
    main()
