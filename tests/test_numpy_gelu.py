"""The NumPy GELU gives MLX's values and gradients, inside the model too."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from conftest import model_with_live_adapters
from mlx.utils import tree_flatten

from mlx_bluey.numpy_gelu import applies, gelu, use_numpy_gelu
from mlx_bluey.tuning import make_loss


def test_gelu_values_and_slope_match_mlx_and_the_formula():
    x = mx.array(np.linspace(-12.0, 12.0, 2001, dtype=np.float32))
    assert mx.abs(gelu(x) - nn.gelu_approx(x)).max().item() <= 2e-6
    slope_mlx = mx.grad(lambda v: nn.gelu_approx(v).sum())(x)
    slope_ours = mx.grad(lambda v: gelu(v).sum())(x)
    assert mx.abs(slope_ours - slope_mlx).max().item() <= 2e-6
    # By hand at x = 1: t = tanh(sqrt(2/pi) * 1.044715)
    t = math.tanh(math.sqrt(2 / math.pi) * 1.044715)
    one = mx.array([1.0])
    assert gelu(one).item() == pytest.approx(0.5 * (1 + t), rel=1e-6)
    slope = 0.5 * (1 + t) + 0.5 * (1 - t * t) * math.sqrt(2 / math.pi) * (1 + 3 * 0.044715)
    assert mx.grad(lambda v: gelu(v).sum())(one).item() == pytest.approx(slope, rel=1e-6)


def test_switched_model_gives_the_same_loss_and_gradients(tiny_model_dir):
    mx.random.seed(3)  # the adapters' draw, whatever ran before in the session
    model = model_with_live_adapters(tiny_model_dir, lora_dropout=0.0)
    rng = np.random.default_rng(3)
    inputs = mx.array(rng.integers(7, 100, (2, 11)).astype(np.int32))
    positions = mx.array([2, 3, 4, 5, 14, 15, 20])
    step = nn.value_and_grad(model, make_loss(model, head_trainable=False))
    want_loss, want_grads = step(model, inputs, inputs, positions)
    assert use_numpy_gelu(model) == len(model.layers)
    assert type(model.layers[0].mlp).__name__ == "NumpyGeluMLP" and not applies(model)  # switched once
    got_loss, got_grads = step(model, inputs, inputs, positions)
    assert got_loss.item() == pytest.approx(want_loss.item(), rel=1e-6)
    for (name, a), (_, b) in zip(tree_flatten(want_grads), tree_flatten(got_grads)):
        # NumPy's and MLX's GELU differ by up to 2e-6 per value (the test above); through the tiny model that moves a
        # gradient by up to 1e-5 of its largest entry over 25 seeds on Zen and Prescott, and 2e-5 for one draw seen
        # in a full run (when the draw depended on the tests before it). A wrong slope moves it by ~1e-1.
        assert mx.abs(a - b).max().item() <= 1e-4 * mx.abs(a).max().item(), name


def test_only_float32_models_are_switched(tiny_model_dir):
    model = model_with_live_adapters(tiny_model_dir)
    model.set_dtype(mx.bfloat16)
    assert use_numpy_gelu(model) == 0 and type(model.layers[0].mlp).__name__ == "MLP"
