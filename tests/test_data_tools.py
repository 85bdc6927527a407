"""`mlx_bluey data validate` and `data stats` on hand-made files, with exact expected values."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import chat, run_cli, write_jsonl

from mlx_bluey.data_stats import compute_stats, to_markdown
from mlx_bluey.data_validate import validate_files
from mlx_bluey.text import count_markers, opening


def test_validate_reports_every_problem_with_its_place(tmp_path, tiny_tokenizer):
    a = write_jsonl(
        tmp_path / "a.jsonl",
        [
            chat("hi", "G'day!"),
            '{"messages": [',
            chat(
                "what do you reckon about the big red bus",
                "I reckon the big red bus is the best bus in the whole wide world",
            ),
            {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]},
        ],
    )
    b = tmp_path / "b.jsonl"
    b.write_bytes(
        (json.dumps(chat("HI", "G'day!  ")) + "\n").encode()
        + (
            json.dumps(
                chat(
                    "what do you reckon about the big red bus",
                    "I reckon the big red bus is the best bus in the whole wide world!!",
                )
            )
            + "\n"
        ).encode()
        + b'{"messages": "\xfe"}\n'
        + (json.dumps(chat("tell me a story", "word " * 40)) + "\n").encode()
    )
    report = validate_files([a, b], tiny_tokenizer, max_seq_length=150)
    assert [str(p) for p in report.problems] == [
        f"{a}:2: malformed JSON: Expecting value at column 15",
        f"{a}:4:messages[1].content: is empty",
        f"{b}:3: not valid UTF-8 (byte 14 of the line)",
        f"{b}:1:messages: exact duplicate of {a}:1",
        f"{b}:2:messages: near-duplicate of {a}:3 (word 3-gram Jaccard 1.00)",
        f"{b}:4:messages: 232 tokens, over the training limit max_seq_length=150",
    ]
    # 232 = <bos> <sot> "user" \n (1+1+4+1) + "tell me a story" 15 + <eot> \n <sot> "model" \n (1+1+1+5+1)
    #       + 40 words "word" trimmed (40 * 5 - 1 = 199) + <eot> \n (2), one token per character
    assert report.conversations == 5 and not report.ok


def test_validate_cli_exit_codes(tmp_path, tiny_model_dir):
    good = write_jsonl(tmp_path / "good.jsonl", [chat("hi", "G'day!"), chat("bye", "Hooroo!")])
    bad = write_jsonl(tmp_path / "bad.jsonl", [chat("hi", "G'day!"), {"messages": [{"role": "robot", "content": "x"}]}])
    base = [sys.executable, "-m", "mlx_bluey.cli", "data", "validate", "--model", str(tiny_model_dir)]
    ok = subprocess.run([*base, str(good)], capture_output=True, text=True)
    assert ok.returncode == 0 and "2 conversations in 1 file(s): ok" in ok.stdout
    failed = subprocess.run([*base, str(good), str(bad)], capture_output=True, text=True)
    assert failed.returncode == 1
    assert f"{bad}:2:messages[0].role: must be one of system, user, assistant" in failed.stderr
    assert f"{bad}:1:messages: exact duplicate of {good}:1" in failed.stderr
    # a card's fact question copied into training data (the card named, none beside the file)
    root = Path(__file__).parent.parent
    against = [
        "--against-eval",
        str(root / "data/eval/prompts.jsonl"),
        "--character",
        str(root / "data/bluey/card.yaml"),
    ]
    no_card = subprocess.run([*base, str(good), *against], capture_output=True, text=True)
    assert no_card.returncode == 1 and "data/bluey/card.yaml: character card not found" in no_card.stderr
    against[-1] = str(root / "data/bluey/character.yaml")
    assert subprocess.run([*base, str(good), *against], capture_output=True, text=True).returncode == 0
    asked = write_jsonl(tmp_path / "asked.jsonl", [chat("Do you live in Sydney?", "Nope, Brisbane!")])
    held = subprocess.run([*base, str(asked), *against], capture_output=True, text=True)
    assert held.returncode == 1
    assert f"{asked}:1:messages[0].content: a copy of evaluation prompt facts-home_city-2" in held.stderr


def test_stats_exact_numbers(tmp_path, tiny_tokenizer):
    path = write_jsonl(
        tmp_path / "s.jsonl",
        [
            chat("hi", "Hi! Mum said heaps."),  # 4 words
            chat("story", " ".join(["word"] * 130), "more", "Dad and Bingo and Dad."),  # 130 words, 5 words
            chat("q", " ".join(["mid"] * 60), system="Be Bluey."),  # 60 words
        ],
    )
    stats = compute_stats([path], tiny_tokenizer, ["Mum", "Dad", "Bingo", "heaps", "for real life"])
    assert stats.conversations == 3 and stats.with_system == 1 and stats.multi_turn == 1
    assert stats.user_turns == Counter({1: 2, 2: 1})
    assert stats.reply_words == [4, 130, 5, 60]
    assert stats.reply_tokens == [19, 130 * 5 - 1, 22, 60 * 4 - 1]  # one token per character
    assert (stats.short_share, stats.long_share) == (0.5, 0.25)
    assert stats.marker_counts == Counter({"Dad": 2, "Mum": 1, "heaps": 1, "Bingo": 1})
    assert stats.markers_per_100_words == pytest.approx(100 * 5 / 199)
    markdown = to_markdown(stats)
    assert "| words per reply (min / median / mean / max) | 4 / 32.5 / 49.8 / 130 |" in markdown
    assert "| short replies (< 25 words) | 50.0% |" in markdown
    assert "| 121+ | 1 | ########## 25.0% |" in markdown


def test_markers_match_whole_words_only():
    assert count_markers("Mummy and Mum went for real life, for real lifeguards", ["Mum", "for real life"]) == Counter(
        {"Mum": 1, "for real life": 1}
    )
    assert opening("Okay, so FIRST we...") == "okay so first"


def test_stats_cli_writes_markdown_and_png(tmp_path, tiny_model_dir):
    path = write_jsonl(tmp_path / "s.jsonl", [chat("hi", "Hi there mate!"), chat("yo", "Yo yo yo.")])
    (tmp_path / "character.yaml").write_text("name: Tester\nvoice_markers: [mate]\n")
    png = tmp_path / "h.png"
    result = run_cli("data", "stats", str(path), "--model", str(tiny_model_dir), "--png", str(png))
    assert result.returncode == 0, result.stderr
    assert "| mate | 1 | 16.67 |" in result.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
