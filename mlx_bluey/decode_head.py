"""The model as generation calls it: on a CPU, the output head of the last position runs in NumPy.

Decoding one token reads every weight once. For Gemma 3 270M in float32 that is 1.07 GB, of which
the tied 262,144 x 640 head is 671 MB (63%). MLX's CPU backend multiplies a vector by that matrix
on one thread: 33.3 ms here (20 GB/s), against 18.0 ms for NumPy's OpenBLAS sgemv on both cores
(37 GB/s): a step goes from 66.6 to 51.2 ms (scripts/profile_decode.py, benchmarks/decode_profile.md).

Generation also needs only the last position's logits, but `model(...)` computes them for every
position of the prompt before generate_step keeps the last: a 500-token prompt is 500 x 262,144 x
640 x 2 = 168 GFLOP of head, of which 0.3 GFLOP are used. Here the body runs in MLX (KV cache,
LoRA layers and all), the last hidden state is evaluated, and NumPy multiplies it by the head
weight, read in place (no copy). On Metal the plain model is used: the GPU is fast at both.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from .head_loss import head_weight, numpy_head_applies


class LastPositionNumpyHead:
    """Callable like an mlx-lm model in generate_step: model(inputs, cache=...) -> logits [B, 1, vocab].

    Every other attribute (make_cache, layers, args, ...) is the wrapped model's.
    """

    def __init__(self, model):
        self.wrapped = model
        self.weight = np.array(head_weight(model), copy=False)  # [vocab, hidden], MLX's own memory

    def __getattr__(self, name):
        return getattr(self.wrapped, name)

    def __call__(self, inputs: mx.array, cache=None, input_embeddings: mx.array | None = None) -> mx.array:
        hidden = self.wrapped.model(inputs, cache, input_embeddings)[:, -1:, :]  # final norm applied
        return mx.array(np.array(hidden, copy=False) @ self.weight.T)


def decoding_model(model):
    """What generate_step should call: the NumPy head where it applies (CPU, float32, no softcap)."""
    applies = hasattr(model, "model") and numpy_head_applies(model)
    return LastPositionNumpyHead(model) if applies else model
