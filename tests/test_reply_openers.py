"""scripts/reply_openers.py: the openers and lengths of short replies and the fact questions missed, on a report."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parent.parent / "scripts" / "reply_openers.py"


def _row(kind: str, text: str, row_id: str = "short-01", fact: str | None = None, right: bool = False) -> dict:
    return {"id": row_id, "kind": kind, "text": text, "words": len(text.split()), "fact": fact, "fact_right": right}


ROWS = [
    _row("short", "Yep! I love it."),  # yes-word
    _row("short", "Nope, not today."),  # no-word
    _row("short", "Neither! " + "word " * 30),  # no-word, 31 words: not short
    _row("short", "I reckon so."),  # neither
    _row("long", "Yes! A long story."),  # not a short prompt: not counted
    _row("facts", "Six!", "facts-own_age-1", "own_age", True),
    _row("facts", "Four!", "facts-own_age-1", "own_age", False),
    _row("facts", "Brisbane!", "facts-home_city-1", "home_city", True),
]


def test_tally_of_a_report(tmp_path: Path) -> None:
    report = tmp_path / "eval-tiny"
    report.mkdir()
    (report / "results.json").write_text(json.dumps({"rows": ROWS}))
    done = subprocess.run([sys.executable, str(SCRIPT), str(report)], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == [
        f"{report}: short 4: yes-open 1 no-open 2 under25 3 | facts 2/3 under25 3",
        "    missed: facts-own_age-1 1/2",
    ]
