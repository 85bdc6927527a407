"""Generation: every stop id blocked until min_new_tokens, replies never cut mid-word, the prompt out of the
repetition penalty."""

import mlx.core as mx
import mlx.nn as nn
import pytest
from conftest import TINY_CONFIG, chat, run_cli

from mlx_bluey.chat_format import prompt_ids
from mlx_bluey.generation import (
    GenerationSettings,
    block_stops_until,
    generate_reply,
    load_for_generation,
    stop_token_ids,
    suppress_tokens,
    suppressed_token_ids,
    trim_to_sentence,
)


class StopLover(nn.Module):
    """Wraps a model so that the stop ids 1 and 5 always have the top logit (+50)."""

    def __init__(self, model, vocab_size):
        super().__init__()
        self.inner = model
        self.bias = mx.zeros((vocab_size,)).at[mx.array([1, 5])].add(50.0)

    @property
    def layers(self):
        return self.inner.layers

    def make_cache(self):
        return self.inner.make_cache()

    def __call__(self, inputs, cache=None):
        return self.inner(inputs, cache=cache) + self.bias


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model, tokenizer, model_dir = load_for_generation(str(tiny_model_dir), None, log=lambda _: None)
    return model, tokenizer, model_dir


def test_stop_ids_come_from_config_tokenizer_and_end_of_turn(tiny):
    _, tokenizer, model_dir = tiny
    assert stop_token_ids(model_dir, tokenizer) == [1, 5]


@pytest.mark.real
def test_stop_ids_of_the_embedded_gemma(embedded_dir):
    from transformers import AutoTokenizer

    assert stop_token_ids(embedded_dir, AutoTokenizer.from_pretrained(str(embedded_dir))) == [1, 106]


def test_processor_blocks_all_stop_ids_until_n_new_tokens():
    processor = block_stops_until(3, prompt_length=4, stop_ids=[1, 5])
    logits = mx.zeros((1, 8))
    blocked = processor(mx.arange(6), mx.array(logits))  # 2 generated so far: still blocked
    assert blocked[0, 1].item() == -float("inf") and blocked[0, 5].item() == -float("inf")
    assert blocked[0, 2].item() == 0.0
    free = processor(mx.arange(7), mx.array(logits))  # 3 generated: allowed
    assert free[0].tolist() == [0.0] * 8


@pytest.mark.parametrize("minimum", [0, 1, 6])
def test_min_new_tokens_blocks_both_stop_ids(tiny, minimum):
    model, tokenizer, model_dir = tiny
    settings = GenerationSettings(temperature=0.0, min_new_tokens=minimum, max_new_tokens=20, repetition_penalty=1.0)
    reply = generate_reply(
        StopLover(model, TINY_CONFIG["vocab_size"]),
        tokenizer,
        chat("hi")["messages"],
        settings,
        stop_token_ids(model_dir, tokenizer),
    )
    assert reply.n_tokens == minimum
    assert reply.finish_reason == "stop"
    assert not set(reply.tokens) & {1, 5}


def test_streamed_text_is_whole_words_and_equals_the_reply(tiny):
    model, tokenizer, model_dir = tiny
    chunks = []
    # min_new_tokens = max_new_tokens: the reply runs to the limit whatever the random model samples
    settings = GenerationSettings(temperature=1.0, seed=3, max_new_tokens=60, min_new_tokens=60, repetition_penalty=1.0)
    reply = generate_reply(
        model, tokenizer, chat("hi")["messages"], settings, stop_token_ids(model_dir, tokenizer), on_text=chunks.append
    )
    assert reply.finish_reason == "length" and reply.n_tokens == 60
    assert "".join(chunks) == reply.text


def test_same_seed_same_reply(tiny):
    model, tokenizer, model_dir = tiny
    settings = GenerationSettings(temperature=1.0, seed=11, max_new_tokens=12)
    stops = stop_token_ids(model_dir, tokenizer)
    first = generate_reply(model, tokenizer, chat("hi")["messages"], settings, stops)
    second = generate_reply(model, tokenizer, chat("hi")["messages"], settings, stops)
    assert first.tokens == second.tokens


@pytest.mark.parametrize(
    "text,expected",
    [
        ("We played shops. Then Bingo sai", ("We played shops.", True)),
        ("Hooray! It's brekky time", ("Hooray!", True)),
        ('She said "yes!" and then we ra', ('She said "yes!"', True)),
        ("All done.", ("All done.", False)),
        ("no sentence end here at al", ("no sentence end here at", True)),
        ("Is it... maybe? Yes… and", ("Is it... maybe? Yes…", True)),
    ],
)
def test_trim_to_sentence(text, expected):
    assert trim_to_sentence(text) == expected


def test_interactive_chat_keeps_history_resets_and_quits(tiny_model_dir):
    result = run_cli(
        "generate",
        "--model",
        str(tiny_model_dir),
        "--max-new-tokens",
        "5",
        "--seed",
        "1",
        input="hi\nand then?\n/reset\nhello\n/quit\n",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("model> ") == 3
    assert "(new conversation)" in result.stdout
    assert result.stdout.count("[reply reached the 5-token limit") == 3


def test_one_shot_prompt(tiny_model_dir):
    result = run_cli(
        "generate",
        "--model",
        str(tiny_model_dir),
        "--prompt",
        "hi",
        "--max-new-tokens",
        "4",
        "--temperature",
        "0",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "[reply reached the 4-token limit" in result.stderr


def test_suppressed_ids_are_the_special_tokens_but_the_stops(tiny):
    _, tokenizer, model_dir = tiny
    stops = stop_token_ids(model_dir, tokenizer)
    assert stops == [1, 5]
    assert suppressed_token_ids(tokenizer, stops) == [0, 2, 3, 4, 102]  # <pad> <bos> <unk> <start_of_turn> <mask>


def test_suppress_processor_sets_minus_infinity_only_there():
    processor = suppress_tokens([0, 2, 99])  # 99 is past this vocabulary: ignored
    logits = processor(mx.array([7, 8]), mx.zeros((1, 6)))
    assert logits.tolist() == [[-float("inf"), 0.0, -float("inf"), 0.0, 0.0, 0.0]]


def test_suppressed_tokens_never_appear_even_when_favoured(tiny):
    model, tokenizer, model_dir = tiny

    class StartOfTurnLover(StopLover):
        """<start_of_turn> (4) gets the top logit, the stops the next: the reply must end at once."""

        def __init__(self, model, vocab_size):
            super().__init__(model, vocab_size)
            self.bias = mx.zeros((vocab_size,)).at[mx.array([4])].add(80.0).at[mx.array([1, 5])].add(50.0)

    lover = StartOfTurnLover(model, TINY_CONFIG["vocab_size"])
    reply = generate_reply(
        lover,
        tokenizer,
        chat("Hi!")["messages"],
        GenerationSettings(temperature=0.0),
        stop_token_ids(model_dir, tokenizer),
    )
    assert reply.tokens == [] and reply.finish_reason == "stop"


def test_the_repetition_penalty_leaves_the_prompt_out(tiny):
    """Two ids lead every step: `said` (logit 10), an id of the prompt, and `fresh` (9), one it lacks. Greedy at
    penalty 1.2: the reply starts with `said` (the prompt is not penalised); then `said` is the reply's own and
    10 / 1.2 = 8.33 < 9, so `fresh` follows. A penalty counting the prompt would start with `fresh`."""
    model, tokenizer, model_dir = tiny
    stops = stop_token_ids(model_dir, tokenizer)
    messages = chat("hi")["messages"]
    skip = set(stops) | set(suppressed_token_ids(tokenizer, stops))
    prompt = prompt_ids(tokenizer, messages)
    said = next(i for i in prompt if i not in skip)
    fresh = next(i for i in range(TINY_CONFIG["vocab_size"]) if i not in skip and i not in prompt)

    class TwoLeaders(StopLover):
        def __call__(self, inputs, cache=None):
            return mx.zeros_like(self.inner(inputs, cache=cache)) + self.bias

    leaders = TwoLeaders(model, TINY_CONFIG["vocab_size"])
    leaders.bias = mx.zeros((TINY_CONFIG["vocab_size"],)).at[mx.array([said, fresh])].add(mx.array([10.0, 9.0]))
    settings = GenerationSettings(temperature=0.0, repetition_penalty=1.2, max_new_tokens=2)
    assert generate_reply(leaders, tokenizer, messages, settings, stops).tokens == [said, fresh]
