"""Text measures with one definition each, shared by data stats and split, generation, evaluation and the page.

- A word is a run of letters, digits and apostrophes, lower-cased: "G'day, Mum!" -> g'day, mum.
  (Before this module three counts disagreed on 129 of the 748 training replies: split() counts "—"
  and "..." as words, [a-z0-9']+ drops accented letters.)
- A reply is short under SHORT_WORDS words and long over LONG_WORDS, in the data card, data stats
  and the evaluation alike.
- A sentence ends at . ! ? or … followed by closing quotes or brackets, then a space or the end;
  the page's text.js has the same rule (tests/test_text.py runs both on the same cases).
- A marker (a voice or break-character phrase) matches as whole words, any case.
"""

from __future__ import annotations

import re
from collections import Counter

WORD = re.compile(r"[\w']+")
SHORT_WORDS = 25  # a reply under this many words is short
LONG_WORDS = 120  # a reply over this many words is long
SENTENCE_END = re.compile(r"""[.!?…]["'”’)\]]*(?=\s|$)""")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def word_count(text: str) -> int:
    return len(WORD.findall(text))


def last_sentence_end(text: str) -> int:
    """Index just past the last finished sentence in text, or 0 if there is none."""
    ends = [m.end() for m in SENTENCE_END.finditer(text)]
    return ends[-1] if ends else 0


def marker_pattern(marker: str) -> re.Pattern:
    return re.compile(r"(?<!\w)" + re.escape(marker.lower()) + r"(?!\w)")


def count_markers(text: str, markers: list[str]) -> Counter:
    """How often each marker occurs in text, as whole words, any case (markers that do not occur are left out)."""
    lowered = text.lower()
    found = Counter()
    for marker in markers:
        hits = len(marker_pattern(marker).findall(lowered))
        if hits:
            found[marker] = hits
    return found


def opening(text: str, count: int = 3) -> str:
    """The first `count` words, lower-cased: how a reply starts."""
    return " ".join(words(text)[:count])
