"""The evaluation's figures that cannot be won by accident, pinned on hand-made replies."""

import pytest

from mlx_bluey import metrics

MARKERS = ["Mum", "Dad", "Bingo", "heaps"]


def test_a_fact_is_right_only_with_an_accepted_answer_and_no_rejected_one():
    accept, reject = ["four", "4"], ["two", "three", "five", "six", "5", "6"]
    assert metrics.states_fact("Bingo is four! She's my little sister.", accept, reject)
    assert metrics.states_fact("She's 4.", accept, reject)
    assert not metrics.states_fact("Bingo is six.", accept, reject)
    assert not metrics.states_fact("She's four or five, I reckon.", accept, reject)  # guessing lists lose
    assert not metrics.states_fact("Fourteen!", accept, reject)  # whole words only
    assert not metrics.states_fact("I don't know!", accept, reject)


def test_with_other_answers_the_first_answer_named_decides_leaving_out_the_questions_own_words():
    # own_age and home_city as data/bluey/character.yaml has them (replies from the session-14 reports)
    ages = ["two", "three", "four", "five", "seven", "eight"]
    candles = "How many candles were on your last birthday cake?"
    assert not metrics.states_fact("Four! Dad said the first one had six bites.", ["six"], [], ages, candles)
    assert metrics.states_fact("Four!", ["six"], [], [], candles) is False  # no accepted answer at all
    assert metrics.states_fact("Four! ... six bites", ["six"], [], [], candles)  # without answers: lenient
    assert metrics.states_fact("I'm six and Bingo is four!", ["six"], [], ages, candles)
    cities = ["yes", "yep", "yeah", "Sydney", "Melbourne"]
    sydney = "Do you live in Sydney?"
    assert not metrics.states_fact("Yep! Our house is in Brisbane.", ["Brisbane"], [], cities, sydney)
    assert metrics.states_fact("Nope, not Sydney! Brisbane!", ["Brisbane"], [], cities, sydney)  # echo left out
    assert not metrics.states_fact("Melbourne! No wait, Brisbane.", ["Brisbane"], [], cities, sydney)
    assert metrics.states_fact("Brisbane, silly!", ["Brisbane"], [], cities, "Which city is your house in?")


def test_assistant_phrases_are_found_as_whole_words_with_code():
    assert metrics.assistant_phrases("I'm Assistant Mode! Beep boop.") == ["assistant mode"]
    assert metrics.assistant_phrases("I run on ChatGPT, made by OpenAI.") == ["chatgpt", "openai"]
    assert metrics.assistant_phrases("Here you go:\n```python\nprint(1)\n```") == ["code"]
    assert metrics.assistant_phrases("def backup():\n    pass") == ["code"]
    assert metrics.assistant_phrases("SELECT name FROM customers;") == ["code"]
    assert metrics.assistant_phrases("I'm not a llama, I'm Bluey! Dad said so.") == []
    assert metrics.assistant_phrases("Bingo said it was easy-peasy.") == []  # no "ai" inside "said"
    assert metrics.assistant_phrases("I'm a puppy robot", ["puppy robot"]) == ["puppy robot"]  # the card's own


def test_marker_rates_leave_out_markers_the_prompt_already_said():
    pairs = [
        ("Where's Bingo?", "Bingo is with Mum!"),  # 4 words; Bingo in the prompt: not counted for Bingo
        ("hi", "Dad and Bingo play heaps of games"),  # 7 words: Dad 1, Bingo 1, heaps 1
    ]
    rates = metrics.marker_rates(pairs, MARKERS)
    assert rates == {
        "Mum": pytest.approx(100 * 1 / 11),  # both replies: 1 use in 4 + 7 words
        "Dad": pytest.approx(100 * 1 / 11),
        "Bingo": pytest.approx(100 * 1 / 7),  # the first reply is left out: 1 use in 7 words
        "heaps": pytest.approx(100 * 1 / 11),
    }


def test_voice_distance_grows_with_too_few_and_too_many_markers():
    reference = {"Mum": 2.0, "Dad": 1.0}
    assert metrics.voice_distance({"Mum": 2.0, "Dad": 1.0}, reference) == 0.0
    assert metrics.voice_distance({"Mum": 0.0, "Dad": 0.0}, reference) == 3.0  # too few
    assert metrics.voice_distance({"Mum": 5.0, "Dad": 1.0}, reference) == 3.0  # too many: as far away
    assert metrics.voice_distance({"Mum": 2.0}, reference) == 1.0  # a missing marker counts as 0


def test_bootstrap_interval_resamples_prompts_and_brackets_the_figure():
    groups = [[1, 1, 1], [0, 0, 0], [1, 1, 0], [1, 0, 0]]  # 12 rows from 4 prompts, mean 0.5
    share = lambda rows: sum(rows) / len(rows)  # noqa: E731 (a one-line helper local to this function)
    low, high = metrics.bootstrap_interval(groups, share, resamples=2000, seed=0)
    assert 0.0 <= low < 0.5 < high <= 1.0
    assert metrics.bootstrap_interval(groups, share, resamples=2000, seed=0) == (low, high)  # seeded
    assert metrics.bootstrap_interval([[1, 1], [1, 1]], share) == (1.0, 1.0)  # no spread, no interval
    assert metrics.bootstrap_interval([[]], lambda rows: None) is None


def test_jackknife_interval_by_hand_and_distinct_stays_inside_its_interval():
    groups = [["a b"], ["a c"], ["d"]]
    distinct = lambda rows: metrics.distinct_n(rows, 1)  # noqa: E731
    # all: a b a c d -> 4 / 5; leaving out each prompt: 3/3, 3/3, 3/4; mean 11/12
    se = (2 / 3 * ((1 - 11 / 12) ** 2 * 2 + (0.75 - 11 / 12) ** 2)) ** 0.5  # = 1/6
    low, high = metrics.jackknife_interval(groups, distinct, bounds=(0.0, 1.0))
    assert low == pytest.approx(0.8 - metrics.Z_95 * se) and high == 1.0  # 0.8 + 0.327 clipped
    # a bootstrap repeats replies, so its distinct-1 interval can sit wholly below the value; the jackknife's not
    many = [[f"w{i} shared x{i % 3}"] for i in range(30)]
    value = distinct([r for g in many for r in g])
    boot = metrics.bootstrap_interval(many, distinct, resamples=200)
    jack = metrics.jackknife_interval(many, distinct, bounds=(0.0, 1.0))
    assert boot[1] < value and jack[0] <= value <= jack[1]
