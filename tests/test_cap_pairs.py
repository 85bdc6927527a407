"""scripts/cap_pairs.py: the cap per card fact, the polarity filter and the cap on no-word openings."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parent.parent / "scripts" / "cap_pairs.py"


def _pair(chosen: str, rejected: str, fact: str) -> dict:
    prompt = [{"role": "user", "content": "How old are you?"}]
    return {"messages": prompt, "chosen": chosen, "rejected": rejected, "reason": f"adapter: misses card fact {fact}"}


PAIRS = [
    _pair("Six! I'm six.", "Four! I'm four.", "own_age"),  # 0: both open with neither polarity
    _pair("Nope, I'm six!", "Yep! I'm five.", "own_age"),  # 1: no against yes
    _pair("Six candles!", "Seven candles!", "own_age"),  # 2: a third own_age pair
    _pair("Nope! Brisbane.", "Nope! Sydney.", "home_city"),  # 3: no against no
    _pair("Neither! A Blue Heeler.", "Neither! A poodle.", "breed"),  # 4: no against no
    _pair("Yep, Bandit!", "I think Rusty.", "dad_name"),  # 5: yes against neither
]


def _kept(tmp_path: Path, *args: str) -> list[int]:
    source, output = tmp_path / "pairs.jsonl", tmp_path / "kept.jsonl"
    source.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(source), str(output), *args], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return [PAIRS.index(json.loads(line)) for line in output.read_text().splitlines()]


def test_the_cap_keeps_the_first_pairs_of_each_fact_in_file_order(tmp_path):
    assert _kept(tmp_path, "2") == [0, 1, 3, 4, 5]  # own_age's third pair is over the cap


def test_same_polarity_drops_pairs_whose_openings_differ_in_polarity_before_the_cap(tmp_path):
    # pair 1 (nope / yep) and pair 5 (yep / I) go; so pair 2 is own_age's second and stays
    assert _kept(tmp_path, "2", "--same-polarity") == [0, 2, 3, 4]


def test_max_no_keeps_only_the_first_chosen_replies_opening_with_a_no_word(tmp_path):
    # after the polarity filter, pairs 3 and 4 open with no-words; one is kept
    assert _kept(tmp_path, "8", "--same-polarity", "--max-no", "1") == [0, 2, 3]


def test_reason_keeps_only_pairs_whose_reason_starts_with_a_prefix_before_the_other_filters(tmp_path):
    # every reason starts "adapter: misses card fact"; only the own_age ones match the longer prefix
    assert _kept(tmp_path, "8", "--reason", "adapter: misses card fact own") == [0, 1, 2]
    both = ["--reason", "adapter: misses card fact own", "--reason", "adapter: misses card fact b"]
    assert _kept(tmp_path, "8", *both) == [0, 1, 2, 4]  # own_age's three and breed's
    assert _kept(tmp_path, "8", "--reason", "out of character") == []
    # before --max-no counts: pair 1's "Nope" is filtered out first, so breed's "Neither" is the one allowed
    assert _kept(tmp_path, "8", "--reason", "adapter: misses card fact b", "--max-no", "1") == [4]
