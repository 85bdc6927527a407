"""The real embedded Gemma 3 270M: conversion, tokenizer ids, a true fact, a few training steps."""

import json
from pathlib import Path

import mlx.core as mx
import pytest
from conftest import chat, write_jsonl

from mlx_bluey.config import TrainConfig
from mlx_bluey.generation import GenerationSettings, generate_reply, load_for_generation, stop_token_ids
from mlx_bluey.train import train

pytestmark = pytest.mark.real
DATA = Path(__file__).parent.parent / "data" / "bluey"

# Ids of the real Gemma 3 vocabulary (google/gemma-3-270m), cross-checked with SentencePiece.
KNOWN_IDS = {
    "Hello world": [9259, 1902],
    "What is the capital of France?": [3689, 563, 506, 5279, 529, 7001, 236881],
    "The Eiffel Tower is located in the city of": [818, 94648, 25822, 563, 5628, 528, 506, 3207, 529],
    "G'day mate!\n\nHeaps": [236823, 236789, 1496, 31025, 236888, 108, 2209, 2786],
    "<start_of_turn>user\nhi<end_of_turn>\n": [105, 2364, 107, 2202, 106, 107],
}


@pytest.fixture(scope="module")
def base(embedded_dir):
    return load_for_generation(str(embedded_dir), None, log=lambda _: None)


def test_converted_directory_is_a_normal_model_dir(embedded_dir):
    names = {p.name for p in embedded_dir.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "GEMMA_TERMS.html",
    } <= names
    config = json.loads((embedded_dir / "config.json").read_text())
    assert (config["model_type"], config["num_hidden_layers"], config["hidden_size"]) == ("gemma3_text", 18, 640)
    assert json.loads((embedded_dir / "generation_config.json").read_text())["eos_token_id"] == [1, 106]


@pytest.mark.parametrize("text", list(KNOWN_IDS))
def test_tokenizer_gives_the_real_gemma_ids(base, text):
    _, tokenizer, _ = base
    assert tokenizer.encode(text, add_special_tokens=False) == KNOWN_IDS[text]


def test_tokenizer_agrees_with_sentencepiece_on_the_dataset(base, embedded_dir):
    import sentencepiece

    _, tokenizer, _ = base
    reference = sentencepiece.SentencePieceProcessor(model_file=str(embedded_dir / "tokenizer.model"))
    texts = [
        m["content"] for line in (DATA / "valid.jsonl").read_text().splitlines() for m in json.loads(line)["messages"]
    ]
    assert len(texts) > 100
    differ = [t for t in texts if tokenizer.encode(t, add_special_tokens=False) != reference.encode(t)]
    assert differ == []


def test_the_eiffel_tower_is_in_paris(base):
    model, tokenizer, _ = base
    ids = tokenizer.encode("The Eiffel Tower is located in the city of")  # adds <bos>
    probabilities = mx.softmax(model(mx.array([ids]))[0, -1])
    top = int(mx.argmax(probabilities).item())
    assert tokenizer.decode([top]) == " Paris"
    assert probabilities[top].item() > 0.5


def test_generation_respects_min_new_tokens(base):
    model, tokenizer, model_dir = base
    settings = GenerationSettings(temperature=0.0, min_new_tokens=12, max_new_tokens=24, repetition_penalty=1.0)
    reply = generate_reply(model, tokenizer, chat("Hi!")["messages"], settings, stop_token_ids(model_dir, tokenizer))
    assert reply.n_tokens >= 12 and not {1, 106} & set(reply.tokens)
    assert reply.text


def test_a_few_steps_on_bluey_data_lower_the_loss(tmp_path, embedded_dir):
    rows = [json.loads(line) for line in (DATA / "train.jsonl").read_text().splitlines()]
    short = sorted(rows, key=lambda r: len(json.dumps(r)))[:4]
    data = write_jsonl(tmp_path / "data" / "train.jsonl", short).parent
    config = TrainConfig(
        model=str(embedded_dir),
        data=str(data),
        output=str(tmp_path / "run"),
        iters=4,
        batch_size=4,
        grad_accumulation=1,
        learning_rate=5e-4,
        warmup_steps=0,
        lr_schedule="constant",
        progress=False,
    )
    train(config, log=lambda _: None)  # one batch of the same 4 conversations each step
    losses = [json.loads(line)["train_loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0] - 0.3, losses
