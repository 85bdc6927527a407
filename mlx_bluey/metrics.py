"""Personality metrics on generated replies: pure functions, each tested on hand-made inputs.

Words are runs of letters, digits and apostrophes, lower-cased ("G'day, Mum!" -> g'day, mum).
"""

from __future__ import annotations

import re
import statistics
from itertools import combinations

from .data_stats import count_markers
from .generate import last_sentence_end

WORD = re.compile(r"[\w']+")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> list[tuple]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def is_complete(text: str, finish_reason: str) -> bool:
    """The model ended its turn itself, and the reply ends on a finished sentence."""
    stripped = text.rstrip()
    return finish_reason == "stop" and bool(stripped) and last_sentence_end(stripped) == len(stripped)


def markers_per_100_words(texts: list[str], markers: list[str]) -> float:
    total = sum(len(words(t)) for t in texts)
    hits = sum(sum(count_markers(t, markers).values()) for t in texts)
    return 100 * hits / total if total else 0.0


def breaks_character(text: str, markers: list[str]) -> bool:
    """Any marker, whole words only like the voice markers: "ai" is "AI", never the "ai" of "said"."""
    return bool(count_markers(text, markers))


def distinct_n(texts: list[str], n: int) -> float:
    """Unique n-grams / all n-grams over every text (1.0 = nothing repeats)."""
    grams = [g for t in texts for g in ngrams(words(t), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_within(text: str, n: int = 3) -> float:
    """Share of a reply's word n-grams that repeat an earlier one in the same reply."""
    grams = ngrams(words(text), n)
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def jaccard_ngrams(a: str, b: str, n: int = 3) -> float:
    x, y = set(ngrams(words(a), n)), set(ngrams(words(b), n))
    return len(x & y) / len(x | y) if x or y else 1.0


def cross_sample_similarity(samples: list[str], n: int = 3) -> float:
    """Mean word n-gram Jaccard between every pair of samples for one prompt (1.0 = identical)."""
    pairs = list(combinations(samples, 2))
    return statistics.mean(jaccard_ngrams(a, b, n) for a, b in pairs) if pairs else 0.0


class VerbatimIndex:
    """Longest run of words a reply shares verbatim with any training reply.

    overlap >= k exactly when one of the reply's k-grams occurs in the training replies, so a
    binary search over k needs one k-gram set per probed k (each built once and kept).
    """

    def __init__(self, training_texts: list[str]):
        self._texts = [words(t) for t in training_texts]
        self._sets: dict[int, set] = {}

    def _grams(self, k: int) -> set:
        if k not in self._sets:
            self._sets[k] = {g for t in self._texts for g in ngrams(t, k)}
        return self._sets[k]

    def longest_overlap(self, text: str) -> int:
        tokens = words(text)
        low, high = 0, len(tokens)
        while low < high:
            k = (low + high + 1) // 2
            if any(g in self._grams(k) for g in ngrams(tokens, k)):
                low = k
            else:
                high = k - 1
        return low
