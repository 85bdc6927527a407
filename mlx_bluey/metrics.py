"""Personality metrics on generated replies: pure functions, each tested on hand-made inputs.

Words, markers and sentence ends are defined once, in text.py.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Sequence
from functools import lru_cache
from itertools import combinations

import numpy as np

from .text import count_markers, last_sentence_end, marker_pattern, words


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
    grams = [g for t in texts for g in _text_ngrams(t, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


@lru_cache(maxsize=4096)
def _text_ngrams(text: str, n: int) -> tuple:
    # cached: the bootstrap asks for the same replies' n-grams a thousand times
    return tuple(ngrams(words(text), n))


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


def _words_and_pairs(text: str) -> list[str]:
    tokens = words(text)
    return tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]


def similar_reply_words(prompts: Sequence[str], pairs: Sequence[tuple[str, str]], k: int = 5) -> list[list[int]]:
    """For each prompt, the word counts of the training replies to its k most similar training prompts.

    Similarity is TF-IDF cosine over words and word pairs (scikit-learn). The training data carries no
    kinds, so "the training replies of the same kind" are those to prompts like it: "tell me a really
    long story" finds the training story requests (~200-word replies), "do you like ice cream?" the
    "do you like ...?" questions (~20 words). Nothing here is specific to one character.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    if not pairs or not prompts:
        return [[] for _ in prompts]
    vectorizer = TfidfVectorizer(analyzer=_words_and_pairs, sublinear_tf=True)
    training = vectorizer.fit_transform([prompt for prompt, _ in pairs])
    similarity = (vectorizer.transform(list(prompts)) @ training.T).toarray()
    reply_words = [len(words(reply)) for _, reply in pairs]
    # stable sort, highest first: ties keep file order, so the result does not depend on the machine
    return [[reply_words[i] for i in np.argsort(-row, kind="stable")[:k]] for row in similarity]


# ---------------------------------------------------------------------------------------------
# Figures that cannot be won by accident (issue "Personality you can trust")

# Assistant and LLM talk that no character card needs to list: model and company names, the
# assistant's stock phrases and refusals, and code. Matched as whole words, case-insensitively, like
# the card's own break_character_markers, which add the persona's specific ones. Bare "llama",
# "gemma", "claude" and "gemini" are left out: an animal, names and a star sign a child may talk about.
ASSISTANT_LEXICON = [
    "gpt",
    "chatgpt",
    "openai",
    "anthropic",
    "deepmind",
    "meta ai",
    "mistral ai",
    "llama model",
    "gemma model",
    "llama 2",
    "llama 3",
    "gemma 3",
    "google's gemma",
    "large language model",
    "language model",
    "ai model",
    "ai assistant",
    "virtual assistant",
    "assistant mode",
    "i'm an assistant",
    "i am an assistant",
    "the assistant",
    "as an ai",
    "i'm an ai",
    "i am an ai",
    "artificial intelligence",
    "i can't help with that",
    "i cannot help with that",
    "i'm not able to help",
    "i'm unable to",
    "as a language model",
    "my training data",
    "i was trained",
    "neural network",
    "chatbot",
    "how can i assist",
    "how can i help you today",
    "i'd be happy to help",
]
CODE = re.compile(
    r"```|^\s*(def |class |import |from \S+ import |SELECT |#include|function |const |public )|</?\w+>", re.MULTILINE
)


def assistant_phrases(text: str, extra_markers: Sequence[str] = ()) -> list[str]:
    """The assistant/LLM phrases a reply uses (the lexicon plus the card's markers), and "code" for code."""
    found = sorted(count_markers(text, [*ASSISTANT_LEXICON, *extra_markers]))
    return found + (["code"] if CODE.search(text) else [])


def states_fact(
    text: str, accept: Sequence[str], reject: Sequence[str], answers: Sequence[str] = (), question: str = ""
) -> bool:
    """Right on a card fact: names an accepted answer and no rejected one (whole words, any case), and, when
    the card lists other `answers`, names an accepted one first (of those the question does not say itself).

    "Bingo is four" is right; "Bingo is four or five" is not, so listing guesses cannot score. With answers
    [yes, Sydney] to "Do you live in Sydney?": "Yep! ... Brisbane" is wrong, "No, not Sydney! Brisbane" right.
    """
    if not count_markers(text, list(accept)) or count_markers(text, list(reject)):
        return False
    said = count_markers(question, [*accept, *answers])
    lowered = text.lower()
    starts = {
        marker: match.start()
        for marker in [*accept, *answers]
        if marker not in said and (match := marker_pattern(marker).search(lowered))
    }
    return not answers or not starts or min(starts, key=starts.get) in accept


def marker_rates(pairs: Sequence[tuple[str, str]], markers: Sequence[str]) -> dict[str, float]:
    """Per marker, uses per 100 reply words, over the (prompt, reply) pairs whose prompt lacks it.

    A reply that repeats the prompt's "Bingo" says nothing about the voice, so such pairs are left
    out of that marker's rate (its numerator and its word count).
    """
    counted = [
        (count_markers(prompt, list(markers)), count_markers(reply, list(markers)), len(words(reply)))
        for prompt, reply in pairs
    ]
    rates = {}
    for marker in markers:
        kept = [(hits[marker], n) for in_prompt, hits, n in counted if not in_prompt[marker]]
        total = sum(n for _, n in kept)
        rates[marker] = 100 * sum(h for h, _ in kept) / total if total else 0.0
    return rates


def voice_distance(rates: dict[str, float], reference: dict[str, float]) -> float:
    """Sum over markers of |rate - reference rate| (uses per 100 words): 0 is the training voice.

    Too few markers and too many both move it away from 0; one marker said 3 times per 100 words
    more than in training adds 3.
    """
    return sum(abs(rates.get(m, 0.0) - r) for m, r in reference.items())


def bootstrap_interval(
    groups: Sequence[Sequence],
    statistic: Callable[[list], float | None],
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile interval of `statistic` over the rows of `groups` resampled with replacement.

    Groups are prompts (all samples of one prompt together): the prompts are the sample we drew, the
    samples of one prompt are not independent. None where the statistic is undefined.
    """
    if statistic([row for group in groups for row in group]) is None:
        return None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        picked = rng.integers(0, len(groups), len(groups))
        value = statistic([row for i in picked for row in groups[i]])
        if value is not None:
            values.append(value)
    tail = 100 * (1 - level) / 2
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


Z_95 = 1.959964  # the normal quantile of a two-sided 95% interval


def jackknife_interval(
    groups: Sequence[Sequence], statistic: Callable[[list], float | None], bounds=(-np.inf, np.inf)
) -> tuple[float, float] | None:
    """Normal 95% interval from the leave-one-group-out jackknife: value +- 1.96 * SE, clipped to `bounds`.

    For statistics a bootstrap gets wrong: distinct-n counts unique n-grams, and a resample with
    replacement repeats whole replies, so every resample looks less diverse than the data (the
    bootstrap interval of distinct-1 can lie entirely below the value). Leaving one prompt out never
    repeats one. SE^2 = (n - 1) / n * sum((theta_i - mean theta_i)^2).
    """
    value = statistic([row for group in groups for row in group])
    if value is None or len(groups) < 2:
        return None
    leave_out = [
        statistic([row for j, group in enumerate(groups) if j != i for row in group]) for i in range(len(groups))
    ]
    leave_out = np.array([v for v in leave_out if v is not None], dtype=float)
    n = len(leave_out)
    error = float(np.sqrt((n - 1) / n * np.sum((leave_out - leave_out.mean()) ** 2)))
    return max(bounds[0], value - Z_95 * error), min(bounds[1], value + Z_95 * error)
