"""One typed config per training run: defaults here, a YAML file over them, the command line over both.

    TrainConfig()                                  # defaults
    load_config("configs/bluey-270m.yaml")          # YAML over defaults (unknown keys are errors)
    load_config(path, overrides={"epochs": 1})      # command line over YAML

Every shipped YAML under configs/ is loaded by a test, so none can rot.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from .yaml_files import read_yaml_mapping


class ConfigError(ValueError):
    """A config value that cannot work; the message names the file and key."""


@dataclass
class TrainConfig:
    model: str | None = None
    """Registry name, Hugging Face id or local directory; None = the embedded Gemma 3 270M."""
    data: str = "data/bluey"
    """Directory with train.jsonl and valid.jsonl (chat format, see data/bluey/README.md)."""
    output: str = "adapters/bluey"
    """Where the final adapter, checkpoints, metrics, manifest and loss curve are written."""
    fine_tune_type: str = "lora"
    """lora, dora (weight-decomposed LoRA) or full (every weight trains; large output)."""
    num_layers: int = -1
    """How many transformer blocks, counted from the top, get adapters; -1 = all (the 270M has 18)."""
    lora_rank: int = 8
    """Adapter rank r: each adapted d_in x d_out matrix gains r * (d_in + d_out) parameters."""
    lora_scale: float = 20.0
    """Multiplier on the adapter's output (mlx-lm's `scale`, i.e. alpha / r); 20 is mlx-lm's default."""
    lora_dropout: float = 0.0
    """Dropout on the adapter input."""
    lora_keys: list[str] | None = None
    """Module names inside a block to adapt, e.g. [self_attn.q_proj, self_attn.v_proj]; None = every linear."""
    epochs: int = 3
    """Passes over train.jsonl. Ignored when iters > 0."""
    iters: int = 0
    """Optimizer steps to run instead of epochs; 0 = use epochs."""
    batch_size: int = 1
    """Conversations per micro-batch; larger ones are bucketed by length. On a CPU 1 is as fast per token and needs least memory."""
    grad_accumulation: int = 4
    """Micro-batches per optimizer step: effective batch = batch_size * grad_accumulation."""
    learning_rate: float = 1e-4
    """Peak learning rate of AdamW (with bias correction, unlike MLX's default)."""
    lr_schedule: str = "cosine"
    """cosine (decay to min_lr_ratio * learning_rate at the last step) or constant."""
    warmup_steps: int = 10
    """Linear warm-up from 0 to learning_rate over this many optimizer steps."""
    min_lr_ratio: float = 0.1
    """Final learning rate of the cosine schedule, as a fraction of learning_rate."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay on the trained parameters."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this; 0 = no clipping."""
    max_seq_length: int = 1024
    """Longest conversation in tokens. Longer ones are an error, or a counted skip (on_too_long)."""
    on_too_long: str = "error"
    """error (stop and name the line) or skip (train without it, and report how many were skipped)."""
    grad_checkpoint: bool = False
    """Recompute block activations in the backward pass: less memory, ~30% more compute."""
    two_pass: bool = False
    """CPU float32 head only: forward, NumPy head, then forward + backward again (head.two_pass_step): less memory."""
    val_every: int = 25
    """Optimizer steps between validation-loss measurements (and at the last step); 0 = never."""
    early_stopping_patience: int = 0
    """Stop after this many validations without a new best; 0 = train to the end. Best adapter is kept either way."""
    save_every: int = 25
    """Optimizer steps between resumable checkpoints (adapter + optimizer state + step)."""
    keep_checkpoints: int = 2
    """How many of the newest checkpoints to keep on disk."""
    seed: int = 0
    """Seeds data order, adapter initialisation and dropout; the same seed gives the same run."""
    dtype: str = "auto"
    """Base weight dtype: auto = float32 on a CPU (BLAS), bfloat16 on Metal; or float32/bfloat16/float16."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        choices = {
            "fine_tune_type": ("lora", "dora", "full"),
            "lr_schedule": ("cosine", "constant"),
            "on_too_long": ("error", "skip"),
            "dtype": ("auto", "float32", "bfloat16", "float16"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key} must be one of {', '.join(allowed)}, not {getattr(self, key)!r}")
        positive = ("lora_rank", "batch_size", "grad_accumulation", "max_seq_length", "keep_checkpoints")
        for key in positive:
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1, not {getattr(self, key)}")
        if self.epochs < 1 and self.iters < 1:
            raise ConfigError("set epochs >= 1 or iters >= 1")
        if not 0 < self.learning_rate < 1:
            raise ConfigError(f"learning_rate must be in (0, 1), not {self.learning_rate}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout must be in [0, 1), not {self.lora_dropout}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def config_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> TrainConfig:
    values: dict = {}
    if path is not None:
        path = Path(path)
        values.update(read_yaml_mapping(path, config_keys(), ConfigError, "config file"))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return TrainConfig(**values)
    except ConfigError as error:
        raise ConfigError(f"{path or 'command line'}: {error}") from error
    except TypeError as error:
        raise ConfigError(f"{path or 'command line'}: {error}") from error
