"""scripts/fact_probe.py: the candidates of each fact, the opening's log-probability (checked against a
token-by-token computation) and the script's record on the tiny model."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import chat, tiny_train_config, write_jsonl

from mlx_bluey.character import CardFact

SCRIPT = Path(__file__).parent.parent / "scripts" / "fact_probe.py"
CARD_YAML = """name: Bluey
facts:
  - id: sister_age
    questions: ["How old is Bingo?"]
    accept: [four, "4"]
  - id: dad_name
    questions: ["Dad's name?", "Who is your dad?"]
    accept: [Bandit]
    answers: [Rusty, border collie]
  - id: teacher
    questions: ["Teacher?"]
    accept: [Calypso]
"""


def load_script():
    spec = importlib.util.spec_from_file_location("fact_probe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_candidates_and_openings():
    probe = load_script()
    # a number fact without `answers` gets the other number words; digits are left out
    assert probe.candidates(CardFact("a", ["q"], ["four", "4"])) == (
        ["four"],
        ["two", "three", "five", "six", "seven", "eight"],
    )
    assert probe.candidates(CardFact("b", ["q"], ["Bandit"], answers=["Rusty", "7"])) == (["Bandit"], ["Rusty"])
    assert probe.candidates(CardFact("c", ["q"], ["Calypso"])) == (["Calypso"], [])  # left out of the probe
    assert probe.opening("border collie") == "Border collie!"


def test_script_on_the_tiny_model_matches_a_token_by_token_computation(tiny_model_dir, tmp_path):
    import mlx.core as mx

    from mlx_bluey.chat_format import encode_conversation
    from mlx_bluey.generation import load_for_generation
    from mlx_bluey.train import train

    rows = [chat(f"hi {i}", f"Four! Bingo is four, game {i}!") for i in range(8)]
    data = write_jsonl(tmp_path / "data" / "train.jsonl", rows).parent
    write_jsonl(data / "valid.jsonl", rows[:4])
    (data / "character.yaml").write_text(CARD_YAML)
    adapter = tmp_path / "adapter"
    train(tiny_train_config(tiny_model_dir, data, adapter, iters=2, system_prompt="You are Bluey."), log=lambda _: None)
    out = tmp_path / "probe"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--adapter", str(adapter), "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads((out / "fact_probe.json").read_text())["results"][str(adapter)]
    # sister_age: four against the 6 other number words; dad_name twice (two questions); teacher has no other answer
    assert [(r["fact"], r["question"], len(r["logprobs"])) for r in rows] == [
        ("sister_age", "How old is Bingo?", 7),
        ("dad_name", "Dad's name?", 3),
        ("dad_name", "Who is your dad?", 3),
    ]
    for r in rows:
        probabilities = {a: math.exp(v) for a, v in r["logprobs"].items()}
        right = probabilities["four" if r["fact"] == "sister_age" else "Bandit"]
        assert r["share_right"] == pytest.approx(right / sum(probabilities.values()), rel=1e-9)
        assert r["top"] == max(probabilities, key=probabilities.get)

    # the opening's log-probability, one prefix at a time: after the trained system message and the question,
    # each reply token of "Four!" (not the end-of-turn marker) given all the tokens before it
    model, tokenizer, _ = load_for_generation(None, str(adapter), log=lambda _: None)
    model.eval()
    messages = [{"role": "system", "content": "You are Bluey."}, {"role": "user", "content": "How old is Bingo?"}]
    encoded = encode_conversation(tokenizer, [*messages, {"role": "assistant", "content": "Four!"}])
    reply = [i for i, label in enumerate(encoded.labels) if label][:-1]
    assert tokenizer.decode([encoded.ids[i] for i in reply]) == "Four!"
    total = 0.0
    for i in reply:
        logits = model(mx.array([encoded.ids[:i]]))[0, -1].astype(mx.float32)
        total += (logits[encoded.ids[i]] - mx.logsumexp(logits)).item()
    assert rows[0]["logprobs"]["four"] == pytest.approx(total, rel=1e-4)
    assert (out / "fact_probe.md").read_text().startswith("# Fact probe")
