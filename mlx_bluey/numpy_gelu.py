"""Gemma 3's MLP activation (GELU, tanh approximation) in NumPy, for training on a CPU.

MLX's CPU backend computes tanh (and the x^3 of `nn.gelu_approx`, a pow) one element at a time on one
core; NumPy's tanh is vectorised. For one 130-token conversation the 270M's 18 MLPs apply GELU to
18 x 130 x 2,048 = 4.8M values, forward and backward. Whole training steps with and without this
(`--no-numpy-gelu`) against the commit before it: benchmarks/cpu_ops.md (scripts/bench_train_step.py).
Its NumPy temporaries rely on runtime.tune_allocator (else each call page-faults them in afresh).

The custom function returns GELU and its slope in one NumPy pass, so the backward is one multiply:

    y  = 0.5 x (1 + t),   t = tanh(c (x + a x^3)),  c = sqrt(2 / pi),  a = 0.044715
    y' = 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 a x^2)

The slope costs one array per MLP more in memory (130 x 2,048 x 4 bytes = 1 MB per layer for one
conversation), a small share of the ~5 MB per token a training step keeps. On Metal nothing changes:
the GPU's own ops are fast and a host round trip is not.
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np

C = math.sqrt(2.0 / math.pi)
A = 0.044715


def _gelu_and_slope_np(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(GELU(x), dGELU/dx), float32, in place on two temporaries."""
    x2 = x * x
    t = x2 * A
    t += 1.0
    t *= x
    t *= C
    np.tanh(t, out=t)  # t = tanh(c (x + a x^3))
    y = t + 1.0
    y *= x
    y *= 0.5  # y = 0.5 x (1 + t)
    x2 *= 3.0 * A
    x2 += 1.0
    x2 *= C
    x2 *= x  # x c (1 + 3 a x^2)
    slope = t * t
    np.subtract(1.0, slope, out=slope)
    slope *= x2
    slope += t
    slope += 1.0
    slope *= 0.5  # 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 a x^2)
    return y, slope


@mx.custom_function
def gelu_and_slope(x: mx.array):
    y, slope = _gelu_and_slope_np(np.asarray(x))
    return mx.array(y), mx.array(slope)


@gelu_and_slope.vjp
def _gelu_vjp(primals, cotangents, outputs):
    return (cotangents[0] * outputs[1],)


def gelu(x: mx.array) -> mx.array:
    """Same values as mlx.nn.gelu_approx (within float32 rounding), computed in NumPy."""
    return gelu_and_slope(x)[0]


def _numpy_gelu_mlp(mlp_class):
    class NumpyGeluMLP(mlp_class):
        def __call__(self, x):
            return self.down_proj(gelu(self.gate_proj(x)) * self.up_proj(x))

    return NumpyGeluMLP


def applies(model) -> bool:
    """A float32 model on the CPU whose blocks have mlx-lm's Gemma 3 MLP (gate, up, down; gelu_approx)."""
    layers = getattr(model, "layers", None)
    if mx.default_device() != mx.cpu or not layers:
        return False
    mlp = getattr(layers[0], "mlp", None)
    gemma3 = type(mlp).__module__ == "mlx_lm.models.gemma3_text" and type(mlp).__name__ == "MLP"
    return gemma3 and layers[0].input_layernorm.weight.dtype == mx.float32  # the activations' dtype


def use_numpy_gelu(model) -> int:
    """Switch every block's MLP to the NumPy GELU where `applies`; the number of MLPs switched.

    The MLP objects keep their weights (and any adapters put on them later): only their class changes,
    to a subclass whose __call__ differs in the activation alone.
    """
    if not applies(model):
        return 0
    switched = {}
    for layer in model.layers:
        cls = type(layer.mlp)
        if cls not in switched:
            switched[cls] = _numpy_gelu_mlp(cls)
        layer.mlp.__class__ = switched[cls]
    return len(model.layers)
