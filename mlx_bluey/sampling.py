"""Sampling a token: temperature, then top-k, then top-p over what top-k kept, then min-p.

That is transformers' order (TemperatureLogitsWarper, TopK, TopP, MinP), and the web page's
(mlx_bluey/web/sampling.js does the same filter there), so the CLI, transformers and the page
sample from the same candidates. mlx-lm's `make_sampler` differs in two ways: it applies top-p to
the whole 262,144-token vocabulary at temperature 1 and only then top-k, and its sort of that
vocabulary took 24.3 ms of the 27.3 ms one call of its sampler took here (random logits,
scripts/bench_sampler.py, benchmarks/sampler.md; a decode step of the 270M is ~50 ms). Picking the
k candidates first is an argpartition (2.0 ms), and top-p then sorts 64 values: 2.4 ms a call.
"""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx


def candidates(logprobs: mx.array, temperature: float, top_k: int, top_p: float, min_p: float):
    """(ids [B, k], logits [B, k]) to sample from, best first; dropped candidates have logit -inf.

    top_k = 0, top_p = 1.0 and min_p = 0.0 turn each filter off.
    """
    logits = logprobs.astype(mx.float32) / temperature
    vocab = logits.shape[-1]
    if 0 < top_k < vocab:
        ids = mx.argpartition(-logits, kth=top_k - 1, axis=-1)[..., :top_k]
    else:
        ids = mx.broadcast_to(mx.arange(vocab), logits.shape)
    values = mx.take_along_axis(logits, ids, axis=-1)
    order = mx.argsort(-values, axis=-1)  # best first
    ids, values = mx.take_along_axis(ids, order, axis=-1), mx.take_along_axis(values, order, axis=-1)
    probs = mx.softmax(values, axis=-1)  # renormalised over the k kept
    keep = mx.ones(values.shape, dtype=mx.bool_)
    if 0 < top_p < 1:
        # the smallest best-first prefix holding top_p of the mass: a candidate stays while the
        # mass before it is under top_p (the best one always stays: nothing comes before it)
        keep = keep & ((mx.cumsum(probs, axis=-1) - probs) < top_p)
    if min_p > 0:
        keep = keep & (probs >= min_p * probs[..., :1])
    return ids, mx.where(keep, values, -float("inf"))


def make_sampler(temperature: float, top_p: float, top_k: int, min_p: float) -> Callable[[mx.array], mx.array]:
    """A sampler for mlx-lm's generate_step: log-probabilities [B, vocab] -> token ids [B]."""
    if temperature == 0:
        return lambda logprobs: mx.argmax(logprobs, axis=-1)

    def sample(logprobs: mx.array) -> mx.array:
        ids, logits = candidates(logprobs, temperature, top_k, top_p, min_p)
        choice = mx.random.categorical(logits, axis=-1)
        return mx.take_along_axis(ids, choice[..., None], axis=-1)[..., 0]

    return sample


def make_repetition_penalty(penalty: float, window: int, start: int) -> Callable[[mx.array, mx.array], mx.array]:
    """Logits processor: every id among the reply's last `window` tokens (those from position `start` on:
    generation.py passes the prompt's length) has its logit divided by `penalty` when positive and multiplied
    when negative, once however often it occurs (mlx-lm's rule, on the reply alone).

    Why not the prompt: mlx-lm's penalty (as transformers' and llama.cpp's) counts it, and the prompt's last 64
    tokens are the end of the card's system message ("... Bingo is four. Your dad is Bandit and your mum is
    Chilli ...") and the question. At a logit of 20, 1.1 takes 1.8 off, which at temperature 0.7 makes a token
    exp(1.8 / 0.7) = 13 times less likely: every fact the reply should repeat from the message, and the stop
    id <end_of_turn> that closes the user's turn. A reply never holds a stop id (the first one ends it).
    """

    def processor(tokens: mx.array, logits: mx.array) -> mx.array:
        recent = sorted({int(t) for t in tokens[start:][-window:].tolist()})
        if not recent:
            return logits
        ids = mx.array(recent)
        picked = logits[:, ids]
        logits[:, ids] = mx.where(picked < 0, picked * penalty, picked / penalty)
        return logits

    return processor
