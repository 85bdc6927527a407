"""The evaluation prompts stay held out: no training, validation or test user turn, exact or near.

"Near" is the similarity `mlx_bluey data split` keeps together: word 3-gram Jaccard >= 0.5. The
card's fact questions are evaluation prompts too. Adding a training question to the set fails here.
"""

from pathlib import Path

import pytest

from mlx_bluey.character import load_card
from mlx_bluey.data import read_jsonl
from mlx_bluey.evaluate import all_prompts
from mlx_bluey.near_duplicates import NEAR_DUPLICATE_JACCARD, jaccard, text_shingles

ROOT = Path(__file__).parent.parent
DATA = ROOT / "data" / "bluey"


def user_turns(messages):
    return [m["content"] for m in messages if m["role"] == "user"]


def normalised(text: str) -> str:
    return " ".join(text.lower().split())


@pytest.fixture(scope="module")
def training_turns():
    # the split, every raw part (a conversation in raw/ but not in the split would be a bug of `data split`) and
    # the drafts waiting to join them
    files = [DATA / f"{name}.jsonl" for name in ("train", "valid", "test")] + sorted((DATA / "raw").glob("*.jsonl"))
    files += sorted((DATA / "drafts").glob("*.jsonl"))
    turns = [(f"{c.source}", text) for path in files for c in read_jsonl(path) for text in user_turns(c.messages)]
    return [(where, text, normalised(text), text_shingles(text)) for where, text in turns]


def overlaps(text: str, training_turns) -> list[str]:
    own, exact = text_shingles(text), normalised(text)
    return [
        f"{where} {seen!r}"
        for where, seen, seen_exact, seen_shingles in training_turns
        if seen_exact == exact or jaccard(own, seen_shingles) >= NEAR_DUPLICATE_JACCARD
    ]


def test_no_evaluation_prompt_is_a_training_prompt_or_its_near_duplicate(training_turns):
    prompts = all_prompts(ROOT / "data" / "eval" / "prompts.jsonl", load_card(DATA / "character.yaml"))
    found = {f"{p.id}: {text!r}": overlaps(text, training_turns) for p in prompts for text in user_turns(p.messages)}
    assert {k: v for k, v in found.items() if v} == {}
    assert len(prompts) == 86 + 13  # the file, and the card's 10 facts with 13 questions


def test_the_check_catches_a_copied_or_reworded_training_prompt(training_turns):
    where, text, _, _ = training_turns[0]
    assert overlaps(text.upper() + "  ", training_turns)  # same words, other case and spacing
    assert overlaps(
        "What do you want to be when you grow up",
        [("t:1", "x", "x", text_shingles("what do you want to be when you grow up?"))],
    )
    assert not overlaps(
        "Tell me about the moon and the stars tonight",
        [("t:1", "x", "x", text_shingles("what do you want to be when you grow up?"))],
    )
