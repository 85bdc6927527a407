"""The evaluation's headline figures, each with a 95% interval, and the paired comparison of two runs.

Every figure is a function of a list of scored replies (rows of results.json), so the same function
gives the figure, its bootstrap interval (prompts resampled with replacement, all samples of a prompt
together) and, in `compare`, the interval of the difference between two runs on the same prompts.
None of them can be won by accident:
- a long answer counts only when it is long *and* finished (not a reply cut by the token limit);
- the voice is a distance from the training data's rate of each marker, so too many markers is as
  wrong as too few, and a marker the prompt already said is not counted for that prompt's replies;
- facts are scored against the character card's accepted and rejected answers;
- staying in character means no assistant/LLM phrase (metrics.ASSISTANT_LEXICON plus the card's
  break_character_markers) and no code, on every kind and on the pressure kinds apart; and, beyond
  any list, what a classifier trained on the character's replies against generic assistant replies
  says (in_character.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import metrics
from .text import LONG_WORDS, SHORT_WORDS

PRESSURE_KINDS = ("identity", "off_domain", "adversarial")
RESAMPLES = 1000  # bootstrap resamples: the interval's ends move by ~0.01 between seeds at 90 prompts


@dataclass(frozen=True)
class Figure:
    name: str
    description: str
    higher_is_better: bool
    compute: Callable[[list[dict], dict], float | None]  # (rows, reference) -> value
    # "bootstrap" (prompts resampled with replacement) or "jackknife" (leave one prompt out): for
    # distinct-n, whose value a resample's repeated replies pull down (metrics.jackknife_interval)
    interval: str = "bootstrap"


def _share(rows: list[dict], keep, test) -> float | None:
    chosen = [r for r in rows if keep(r)]
    return sum(1 for r in chosen if test(r)) / len(chosen) if chosen else None


def _voice(rows: list[dict], reference: dict) -> float | None:
    """metrics.voice_distance of metrics.marker_rates, from the counts `evaluate.score` put in each row."""
    if not rows:
        return None
    rates = {}
    for marker in reference["marker_rates"]:
        kept = [r for r in rows if marker not in r["prompt_markers"]]
        total = sum(r["words"] for r in kept)
        rates[marker] = 100 * sum(r["markers"].get(marker, 0) for r in kept) / total if total else 0.0
    return metrics.voice_distance(rates, reference["marker_rates"])


FIGURES = [
    Figure(
        "complete",
        "ended its turn itself, on a finished sentence",
        True,
        lambda rows, _: _share(rows, lambda r: True, lambda r: r["complete"]),
    ),
    Figure(
        "short_answered_short",
        f"prompts asking for a short answer: under {SHORT_WORDS} words and finished",
        True,
        lambda rows, _: _share(
            rows, lambda r: r["expect"] == "short", lambda r: r["complete"] and r["words"] < SHORT_WORDS
        ),
    ),
    Figure(
        "long_answered_long",
        f"prompts asking for a long answer: over {LONG_WORDS} words and finished",
        True,
        lambda rows, _: _share(
            rows, lambda r: r["expect"] == "long", lambda r: r["complete"] and r["words"] > LONG_WORDS
        ),
    ),
    Figure(
        "voice_distance",
        "sum over markers of |uses per 100 words - training's| (prompt's markers left out; 0 = training)",
        False,
        _voice,
    ),
    Figure(
        "fact_accuracy",
        "card fact questions answered right (an accepted answer first, no rejected one)",
        True,
        lambda rows, _: _share(rows, lambda r: r.get("fact_right") is not None, lambda r: r["fact_right"]),
    ),
    Figure(
        "in_character",
        "replies with no assistant/LLM phrase and no code",
        True,
        lambda rows, _: _share(rows, lambda r: True, lambda r: not r["assistant_phrases"]),
    ),
    Figure(
        "in_character_under_pressure",
        f"the same on {', '.join(PRESSURE_KINDS)} prompts",
        True,
        lambda rows, _: _share(rows, lambda r: r["kind"] in PRESSURE_KINDS, lambda r: not r["assistant_phrases"]),
    ),
    Figure(
        "classifier_in_character",
        "replies the in-character classifier puts at p >= 0.5 (its held-out accuracy is in the details)",
        True,
        lambda rows, _: _share(
            rows,
            lambda r: r.get("in_character_probability") is not None,
            lambda r: r["in_character_probability"] >= 0.5,
        ),
    ),
    Figure(
        "distinct_1",
        "unique words / all words over every reply (jackknife interval)",
        True,
        lambda rows, _: metrics.distinct_n([r["text"] for r in rows], 1) if rows else None,
        "jackknife",
    ),
    Figure(
        "distinct_2",
        "unique word pairs / all word pairs over every reply (jackknife interval)",
        True,
        lambda rows, _: metrics.distinct_n([r["text"] for r in rows], 2) if rows else None,
        "jackknife",
    ),
]


def format_figure(figure: dict) -> str:
    """0.760 [0.701, 0.812]: a headline value and its 95% interval ("n/a" when undefined)."""
    if figure["value"] is None:
        return "n/a"
    interval = f" [{figure['low']:.3f}, {figure['high']:.3f}]" if figure["low"] is not None else ""
    return f"{figure['value']:.3f}{interval}"


def by_prompt(rows: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["id"], []).append(row)
    return groups


def headline(rows: list[dict], reference: dict, resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """{figure: {"value", "low", "high"}}: the value on every reply and its 95% bootstrap interval."""
    groups = list(by_prompt(rows).values())
    result = {}
    for figure in FIGURES:
        value = figure.compute(rows, reference)
        statistic = lambda chosen, figure=figure: figure.compute(chosen, reference)  # noqa: E731 (bound per figure)
        if figure.interval == "jackknife":
            interval = metrics.jackknife_interval(groups, statistic, bounds=(0.0, 1.0))
        else:
            interval = metrics.bootstrap_interval(groups, statistic, resamples, seed)
        result[figure.name] = {
            "value": value,
            "low": interval[0] if interval else None,
            "high": interval[1] if interval else None,
        }
    return result


def paired_difference(
    rows_a: list[dict], rows_b: list[dict], figure: Figure, reference: dict, resamples: int = RESAMPLES, seed: int = 0
) -> dict:
    """B - A on the prompts both runs answered, with the 95% interval of the difference.

    Both runs are resampled with the same prompt draw, so what is compared is the models, not two
    different samples of prompts. `outside_noise` when the interval excludes 0.
    """
    a, b = by_prompt(rows_a), by_prompt(rows_b)
    shared = sorted(a.keys() & b.keys())
    value_a = figure.compute([r for p in shared for r in a[p]], reference)
    value_b = figure.compute([r for p in shared for r in b[p]], reference)
    if value_a is None or value_b is None:
        return {
            "a": value_a,
            "b": value_b,
            "difference": None,
            "low": None,
            "high": None,
            "outside_noise": False,
            "prompts": len(shared),
        }
    if figure.interval == "jackknife":  # the difference's own jackknife, prompts left out from both runs

        def difference(pairs: list) -> float | None:
            x = figure.compute([r for rows, _ in pairs for r in rows], reference)
            y = figure.compute([r for _, rows in pairs for r in rows], reference)
            return None if x is None or y is None else y - x

        low, high = metrics.jackknife_interval([[(a[p], b[p])] for p in shared], difference)
    else:
        rng = np.random.default_rng(seed)
        differences = []
        for _ in range(resamples):
            picked = [shared[i] for i in rng.integers(0, len(shared), len(shared))]
            x = figure.compute([r for p in picked for r in a[p]], reference)
            y = figure.compute([r for p in picked for r in b[p]], reference)
            if x is not None and y is not None:
                differences.append(y - x)
        low, high = (float(v) for v in np.percentile(differences, [2.5, 97.5]))
    return {
        "a": value_a,
        "b": value_b,
        "difference": value_b - value_a,
        "low": low,
        "high": high,
        "outside_noise": low > 0 or high < 0,
        "prompts": len(shared),
    }
