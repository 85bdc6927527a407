"""Per evaluation report: how the replies to short prompts open, and the fact questions right per question.

    python3 scripts/reply_openers.py reports/eval-270m-bluey-sft-part15-short3 reports/eval-270m-bluey-sft-part15-facts5

For each report directory (its results.json), one line: the replies to the short prompts (kind "short"), how many
open with a yes-word and a no-word (scripts/cap_pairs.py's lists and polarity, by mlx_bluey.text's words) and how
many are under 25 words (mlx_bluey.text.SHORT_WORDS, the evaluation's short-answer bound); then the fact replies
right, of all, and under 25 words. A second line names each fact question with a miss, right of asked. The
README's opener counts ("3 yes-word and 3 no-word openings of 36") come from this script: a preference stage on
pairs whose chosen replies open with "Nope" opened 18 of 36 short replies with a no-word (the top README,
"On-policy fact pairs").
"""

import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # cap_pairs, beside this script
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # mlx_bluey, from the checkout

from cap_pairs import polarity  # noqa: E402 (after the folders join sys.path)

from mlx_bluey.text import SHORT_WORDS  # noqa: E402


def tally(report: Path) -> tuple[str, str]:
    """The report's two lines: openers and lengths of the short replies, then the fact questions with a miss."""
    rows = json.loads((report / "results.json").read_text())["rows"]
    short = [row for row in rows if row["kind"] == "short"]
    openers = Counter(polarity(row["text"]) for row in short)
    facts = [row for row in rows if row.get("fact")]
    right, asked = Counter(), Counter()
    for row in facts:
        asked[row["id"]] += 1
        right[row["id"]] += bool(row["fact_right"])
    first = (
        f"{report}: short {len(short)}: yes-open {openers['yes']} no-open {openers['no']} "
        f"under{SHORT_WORDS} {sum(row['words'] < SHORT_WORDS for row in short)} | facts {sum(right.values())}/"
        f"{len(facts)} under{SHORT_WORDS} {sum(row['words'] < SHORT_WORDS for row in facts)}"
    )
    misses = ", ".join(f"{key} {right[key]}/{asked[key]}" for key in sorted(asked) if right[key] < asked[key])
    return first, f"    missed: {misses or 'none'}"


def main() -> None:
    for report in sys.argv[1:]:
        print(*tally(Path(report)), sep="\n")


if __name__ == "__main__":
    main()
