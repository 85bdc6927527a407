"""The model pieces training, evaluation and the benchmark share: the base model loaded, the adapters put on
it, and the supervised loss (summed at the reply positions; its per-token mean over a dataset).
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from . import runtime
from .config import TrainConfig
from .data import EncodedDataset, epoch_batches, make_batch
from .head_loss import mlx_head_loss, select_head_loss
from .trainer import to_arrays


def load_base(model_dir: Path, dtype_name: str):
    from mlx_lm.utils import load_model
    from transformers import AutoTokenizer

    model, model_config = load_model(model_dir)
    model.set_dtype(runtime.resolve_dtype(dtype_name))
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    return model, tokenizer, model_config


def apply_adapters(model, config: TrainConfig) -> int:
    """Freeze the base, add LoRA/DoRA layers (or unfreeze everything); return the layer count."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    n_layers = len(model.layers) if config.num_layers < 0 else min(config.num_layers, len(model.layers))
    if config.fine_tune_type == "full":
        model.unfreeze()
        return n_layers
    model.freeze()
    params = {"rank": config.lora_rank, "scale": config.lora_scale, "dropout": config.lora_dropout}
    if config.lora_keys:
        params["keys"] = list(config.lora_keys)
    linear_to_lora_layers(model, n_layers, params, use_dora=config.fine_tune_type == "dora")
    # Adapters train in float32 whatever the base dtype: their updates are tiny.
    for name, value in tree_flatten(model.trainable_parameters()):
        if value.dtype != mx.float32:
            model.update(_nested(name, value.astype(mx.float32)))
    return n_layers


def _nested(name: str, value):
    from mlx.utils import tree_unflatten

    return tree_unflatten([(name, value)])


def count_trainable(model) -> int:
    return sum(v.size for _, v in tree_flatten(model.trainable_parameters()))


def make_loss(model, head_trainable: bool, gradient: bool = True, ids=None, tail=None):
    """loss_sum(model, inputs, targets, positions): summed cross-entropy at the supervised positions.

    `positions` are flat indices into B*L; only those hidden states go through the output head.
    gradient=False: a loss nothing differentiates (validation), so a NumPy head skips its gradient.
    ids: the softmax over those ids only (head_ids: data; head_loss.cut_ids), for a frozen head; tail: and over
    the micro-batch's drawn others (head_ids: sampled; head_loss.Tail).
    """
    head_loss = mlx_head_loss if head_trainable else select_head_loss(model, gradient, ids, tail)

    def loss_sum(model, inputs: mx.array, targets: mx.array, positions: mx.array) -> mx.array:
        hidden = model.model(inputs)
        hidden = hidden.reshape(-1, hidden.shape[-1])[positions]
        return head_loss(model, hidden, targets.reshape(-1)[positions])

    return loss_sum


def evaluate_loss(model, dataset: EncodedDataset, batch_size: int, loss_sum=None) -> float:
    """Mean per-token loss over every supervised token of `dataset` (the validation set)."""
    loss_sum = loss_sum or make_loss(model, head_trainable=False, gradient=False)
    total, count = 0.0, 0
    for indices in epoch_batches(dataset, batch_size, seed=0, epoch=0):
        batch = make_batch(dataset, indices)
        total += loss_sum(model, *to_arrays(batch)).item()
        count += len(batch.target_positions)
    return total / max(count, 1)
