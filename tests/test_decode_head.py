"""Generation's CPU head: NumPy logits of the last position equal the model's own, tokens unchanged."""

import mlx.core as mx
import numpy as np
from conftest import chat, model_with_live_adapters

import mlx_bluey.decode_head as decode_head
from mlx_bluey.decode_head import LastPositionNumpyHead, decoding_model
from mlx_bluey.generation import GenerationSettings, generate_reply, load_for_generation, stop_token_ids


def test_last_position_logits_match_the_model_with_adapters_and_cache(tiny_model_dir):
    from mlx_lm.models.cache import make_prompt_cache

    model = model_with_live_adapters(tiny_model_dir)
    runner = decoding_model(model)
    assert isinstance(runner, LastPositionNumpyHead)
    assert runner.weight.shape == (102, 32)  # the tied embedding, [vocab, hidden]
    prompt = mx.array(np.random.default_rng(0).integers(7, 100, (1, 9)).astype(np.int32))
    cache_plain, cache_fast = make_prompt_cache(model), make_prompt_cache(runner)  # make_cache passes through
    plain, fast = model(prompt, cache=cache_plain), runner(prompt, cache=cache_fast)
    assert plain.shape == (1, 9, 102) and fast.shape == (1, 1, 102)  # only the last position is computed
    np.testing.assert_allclose(np.array(fast[:, 0]), np.array(plain[:, -1]), rtol=0, atol=1e-5)
    step = mx.array([[42]])  # one decode step on the same cache state
    np.testing.assert_allclose(
        np.array(runner(step, cache=cache_fast)), np.array(model(step, cache=cache_plain)), rtol=0, atol=1e-5
    )


def test_plain_model_where_numpy_does_not_apply(tiny_model_dir):
    model, _, _ = load_for_generation(str(tiny_model_dir), None, dtype="bfloat16", log=lambda _: None)
    assert decoding_model(model) is model  # bf16 head: MLX keeps it


def test_same_tokens_as_the_plain_model(tiny_model_dir, monkeypatch):
    model, tokenizer, model_dir = load_for_generation(str(tiny_model_dir), None, log=lambda _: None)
    stops = stop_token_ids(model_dir, tokenizer)
    messages = chat("Hi Bluey, what are you playing?")["messages"][:1]
    for settings in (
        GenerationSettings(temperature=0.0, max_new_tokens=24),
        GenerationSettings(temperature=0.8, repetition_penalty=1.2, max_new_tokens=24, seed=3),
    ):
        fast = generate_reply(model, tokenizer, messages, settings, stops)
        with monkeypatch.context() as patch:
            patch.setattr(decode_head, "numpy_head_applies", lambda _: False)
            plain = generate_reply(model, tokenizer, messages, settings, stops)
        assert fast.tokens == plain.tokens and len(fast.tokens) > 0
