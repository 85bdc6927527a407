"""The in-character classifier: learns the character from its replies, checked on held-out ones."""

from pathlib import Path

import pytest
from conftest import chat, write_jsonl

from mlx_bluey.data import DataError
from mlx_bluey.evaluate import assistant_texts
from mlx_bluey.in_character import accuracy, assistant_replies, fit, train_and_check

ROOT = Path(__file__).parent.parent


def test_a_toy_classifier_separates_its_two_sides():
    pup = [f"Hooray! Mum and Bingo and me played game number {i} all arvo!" for i in range(20)]
    bot = [f"As an AI language model, I can provide information about topic {i}." for i in range(20)]
    classifier = fit(pup, bot)
    checked = accuracy(classifier, ["Hooray! Bingo and me played all arvo!"], ["As an AI, I can provide information."])
    assert checked == {
        "in_character_right": 1.0,
        "assistant_right": 1.0,
        "balanced": 1.0,
        "in_character_replies": 1,
        "assistant_replies": 1,
    }


def test_the_shipped_classifier_is_checked_on_held_out_replies():
    """Bluey's test.jsonl replies against the assistant replies to test.jsonl's user turns, never trained on."""
    _, checked = train_and_check(
        assistant_texts(ROOT / "data/bluey/train.jsonl"),
        assistant_texts(ROOT / "data/bluey/test.jsonl"),
        ROOT / "data/eval/assistant_replies.jsonl",
    )
    assert (checked["in_character_replies"], checked["assistant_replies"]) == (256, 60)  # the 1826-conversation split
    assert checked["balanced"] >= 0.9, checked


def test_the_assistant_file_names_its_split_and_its_line(tmp_path):
    good = {**chat("hi", "Hello! How can I help you today?"), "split": "train"}
    path = write_jsonl(tmp_path / "a.jsonl", [good, {**good, "split": "dev"}])
    with pytest.raises(DataError, match=r"a\.jsonl:2:split: must be train or test, not 'dev'"):
        assistant_replies(path)
    write_jsonl(path, [good, {**good, "split": "test"}])
    assert assistant_replies(path) == {
        "train": ["Hello! How can I help you today?"],
        "test": ["Hello! How can I help you today?"],
    }
