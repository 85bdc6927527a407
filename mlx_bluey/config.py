"""One typed config per training run: defaults here, a YAML file over them, the command line over both.

    TrainConfig()                                  # defaults
    load_config("configs/bluey-270m.yaml")          # YAML over defaults (unknown keys are errors)
    load_config(path, overrides={"epochs": 1})      # command line over YAML

Every shipped YAML under configs/ is loaded by a test, so none can rot.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from dataclasses import dataclass
from pathlib import Path

from .yaml_files import read_yaml_mapping, short_repr, wrong_type


class ConfigError(ValueError):
    """A config value that cannot work; the message names the file and key."""


INT_LIMIT = 2**31 - 1  # MLX shapes are 32-bit, and the dropout seed is seed * 1_000_003 + step < 2**64

CHOICES = {
    "fine_tune_type": ("lora", "dora", "full"),
    "lr_schedule": ("cosine", "constant"),
    "on_too_long": ("error", "skip"),
    "dtype": ("auto", "float32", "bfloat16", "float16"),
    "method": ("sft", "dpo", "simpo", "orpo"),
    "head_ids": ("all", "data", "sampled"),
}

AT_LEAST = {  # key: (smallest value, what the smallest means)
    "lora_rank": (1, ""),
    "batch_size": (1, ""),
    "grad_accumulation": (1, ""),
    "max_batch_tokens": (0, "0 = no limit"),
    "max_seq_length": (1, ""),
    "head_tail_samples": (1, ""),
    "save_every": (1, "optimizer steps between checkpoints"),
    "keep_checkpoints": (1, ""),
    "epochs": (0, "ignored when iters > 0"),
    "iters": (0, "0 = use epochs"),
    "warmup_steps": (0, "0 = no warm-up"),
    "val_every": (0, "0 = never validate"),
    "early_stopping_patience": (0, "0 = never stop early"),
    "seed": (0, ""),
    "weight_decay": (0, "0 = no decay"),
    "max_grad_norm": (0, "0 = no clipping"),
    "simpo_gamma": (0, "0 = no target margin"),
    "orpo_lambda": (0, "0 = plain SFT on the chosen replies"),
    "dpo_nll": (0, "0 = plain DPO"),
    "distributed_timeout": (0, "0 = wait forever"),
}


@dataclass
class TrainConfig:
    model: str | None = None
    """Registry name, Hugging Face id or local directory; None = the embedded Gemma 3 270M."""
    data: str = "data/bluey"
    """Directory with train.jsonl and valid.jsonl (chat format, see data/bluey/README.md)."""
    system_prompt: str | None = None
    """A system message put first in every conversation (or pair prompt) that has none; "" = none; null = the
    from_adapter's (system_message.py), else none.

    manifest.json records it, and generate, evaluate, serve and fuse (the page, the Modelfile) send it by default."""
    system_from_card: bool = False
    """Train with the character card's default_system_prompt (character.yaml beside the data) as system_prompt."""
    system_share: float = 1.0
    """Share of the conversations (train and valid, each chosen by `seed`) that get that system message; the rest
    train without it, so the adapter answers with or without it. 1 = all; round(share * n) of n get it."""
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
    epochs: float = 3
    """Passes over train.jsonl; a fraction stops inside the last pass. Ignored when iters > 0.

    Steps are ceil(epochs x steps per epoch): 0.82 of a 365-step epoch is ceil(299.3) = 300 steps, the first
    1200 conversations of the seeded order at 4 a step; 1 is 365."""
    iters: int = 0
    """Optimizer steps to run instead of epochs; 0 = use epochs."""
    batch_size: int = 1
    """Conversations per micro-batch; larger ones are bucketed by length.

    On a CPU, four short conversations in one micro-batch cost less per token than one at a time; long ones
    the same (benchmarks/step_cost_batch4.md). Peak memory grows with the batch: max_batch_tokens bounds it."""
    grad_accumulation: int = 4
    """Micro-batches per optimizer step: effective batch = batch_size * grad_accumulation."""
    length_buckets: bool = True
    """Batches of similar length (sorted, cut, shuffled). false: the batch-1 order cut into batch_size runs, so
    batch_size 4 x grad_accumulation 1 trains the steps of 1 x 4, each as one micro-batch (max_batch_tokens
    then sorts a batch by length before it cuts it)."""
    max_batch_tokens: int = 0
    """A micro-batch whose padded size (conversations x the longest) is over this runs in parts, their
    gradients summed: the same step, a lower memory peak (data.budget_parts; head_ids: sampled draws its
    others per part). 0 = no limit. SFT only: the preference methods ignore it."""
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
    head_ids: str = "all"
    """Ids the training softmax runs over: all (the whole vocabulary, 262,144 for Gemma 3) or data (only those in
    the training conversations, and the special tokens: head_loss.cut_ids). data: a 1.56x faster CPU step
    (benchmarks/head_ids.md) but another objective: ids left out are never pushed down (whole-vocabulary validation
    loss +3.5-4.8% on Bluey: benchmarks/cut-head-270m), and generation is not masked to the kept ones. sampled:
    data's ids and head_tail_samples of the others drawn per micro-batch, which the softmax then pushes down
    (head_loss.Tail). Validation stays over the whole vocabulary. SFT with a frozen head only."""
    head_tail_samples: int = 8192
    """head_ids: sampled: ids drawn per micro-batch from those the data leaves out (Bluey: ~250,000 of 262,144),
    so the head's rows are ~12,500 + 8,192 instead of 262,144: 12.7x fewer."""
    max_seq_length: int = 1024
    """Longest conversation in tokens. Longer ones are an error, or a counted skip (on_too_long)."""
    on_too_long: str = "error"
    """error (stop and name the line) or skip (train without it, and report how many were skipped)."""
    grad_checkpoint: bool = False
    """Recompute block activations in the backward pass: less memory, ~30% more compute."""
    two_pass: bool = False
    """CPU float32 head only: forward, NumPy head, then forward + backward again (head.two_pass_step): less memory."""
    numpy_gelu: bool = True
    """CPU float32 Gemma 3 only: the MLP's GELU in NumPy (numpy_gelu.py; MLX's CPU tanh is scalar). Same values."""
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
    distributed_timeout: float = 300.0
    """Under mlx.launch: seconds a process waits in a step's all-reduce before it stops the group (a host
    that dropped off the network without closing its connection would otherwise hang it); 0 = wait forever."""
    method: str = "sft"
    """sft (chat JSONL), or a preference method on pair JSONL (preference.py): dpo, simpo or orpo."""
    from_adapter: str | None = None
    """An adapter directory to start from (the SFT adapter before a preference stage); its LoRA shape must match.

    DPO's reference is the model as it starts: this adapter, frozen (None: the base model)."""
    dpo_beta: float = 0.1
    """DPO: how far the policy may move from the reference; the reward is beta * (log p - log p_ref)."""
    dpo_nll: float = 0.0
    """DPO: weight of the chosen replies' per-token NLL added to the loss (as RPO, arXiv 2404.19733); 0 = plain DPO.

    Plain DPO lowered the chosen replies' log-probability with the rejected ones (benchmarks/dpo-270m)."""
    simpo_beta: float = 2.0
    """SimPO: scale of the length-normalised reward beta * log p / tokens (the paper's 2.0-2.5)."""
    simpo_gamma: float = 1.0
    """SimPO: target reward margin between chosen and rejected (the paper: gamma / beta about 0.5)."""
    orpo_lambda: float = 0.1
    """ORPO: weight of the odds-ratio term next to the chosen replies' NLL (the paper's 0.1)."""

    def __post_init__(self) -> None:
        self._check_types()
        self._check_numbers()
        self._check_choices()
        self._check_ranges()
        self._check_names()
        self._check_head_ids()

    def _check_types(self) -> None:
        for key, hint in _field_types().items():
            value = getattr(self, key)
            if expected := wrong_type(hint, value):
                raise ConfigError(f"{key} must be {expected}, not {short_repr(value)}")

    def _check_numbers(self) -> None:
        """Float fields hold finite floats (YAML `lora_scale: 20` is an int); int fields fit 32 bits."""
        for key, hint in _field_types().items():
            value = getattr(self, key)
            if hint is float:
                try:
                    number = float(value)
                except OverflowError:  # an int beyond 1.8e308
                    number = math.inf
                if not math.isfinite(number):
                    raise ConfigError(f"{key} must be a finite number, not {short_repr(value)}")
                setattr(self, key, number)
            elif hint is int and value > INT_LIMIT:
                raise ConfigError(f"{key} must be at most {INT_LIMIT}, not {short_repr(value)}")

    def _check_choices(self) -> None:
        for key, allowed in CHOICES.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key} must be one of {', '.join(allowed)}, not {short_repr(getattr(self, key))}")

    def _check_ranges(self) -> None:
        for key, (least, meaning) in AT_LEAST.items():
            if getattr(self, key) < least:
                note = f" ({meaning})" if meaning else ""
                raise ConfigError(f"{key} must be at least {least}{note}, not {short_repr(getattr(self, key))}")
        if self.num_layers != -1 and self.num_layers < 1:
            raise ConfigError(f"num_layers must be -1 (every block) or at least 1, not {short_repr(self.num_layers)}")
        if self.epochs <= 0 and self.iters < 1:
            raise ConfigError("set epochs > 0 or iters >= 1")
        if not 0 < self.learning_rate < 1:
            raise ConfigError(f"learning_rate must be in (0, 1), not {self.learning_rate!r}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout must be in [0, 1), not {self.lora_dropout!r}")
        if not 0 <= self.system_share <= 1:
            raise ConfigError(
                f"system_share must be in [0, 1] (a share of the conversations), not {self.system_share!r}"
            )
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(
                f"min_lr_ratio must be in [0, 1] (a fraction of learning_rate), not {self.min_lr_ratio!r}"
            )
        for key in ("dpo_beta", "simpo_beta"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be above 0, not {getattr(self, key)!r}")
        if self.method != "sft" and self.two_pass:
            raise ConfigError(
                f"two_pass is for method sft (its NumPy head takes summed token losses), not {self.method}"
            )
        if self.lora_scale <= 0:
            raise ConfigError(f"lora_scale must be above 0 (0 switches the adapters off), not {self.lora_scale!r}")
        # AdamW multiplies every weight by 1 - learning_rate * weight_decay each step
        if self.learning_rate * self.weight_decay >= 1:
            raise ConfigError(
                f"weight_decay must be below 1 / learning_rate = {1 / self.learning_rate:g} (each step scales the "
                f"weights by 1 - learning_rate * weight_decay), not {self.weight_decay!r}"
            )

    def _check_head_ids(self) -> None:
        if self.head_ids != "all" and (self.method != "sft" or self.fine_tune_type == "full"):
            raise ConfigError(
                f"head_ids: {self.head_ids} is for method sft with a frozen head (lora or dora), not "
                f"method {self.method} with fine_tune_type {self.fine_tune_type}"
            )

    def _check_names(self) -> None:
        if self.system_from_card and self.system_prompt is not None:
            raise ConfigError("set system_prompt or system_from_card, not both")
        if self.from_adapter is not None and not self.from_adapter.strip():
            raise ConfigError("from_adapter must name an adapter directory, or be null")
        for key in ("data", "output"):
            if not getattr(self, key).strip():
                raise ConfigError(f"{key} must name a directory, not {short_repr(getattr(self, key))}")
        if self.lora_keys is not None:
            if not self.lora_keys:
                raise ConfigError("lora_keys must name at least one module, or be null (every linear layer)")
            for i, name in enumerate(self.lora_keys):
                if not name.strip():
                    raise ConfigError(
                        f"lora_keys[{i}] must name a module, like self_attn.q_proj, not {short_repr(name)}"
                    )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def field_help() -> dict[str, str]:
    """Each field's docstring (the text under it in TrainConfig), first paragraph, as one line: the CLI's help."""
    import ast

    try:  # every CLI start runs this: one parse of this file, cheaper than inspect.getsource(TrainConfig)
        tree = ast.parse(Path(__file__).with_suffix(".py").read_text(encoding="utf-8"))
    except OSError:  # installed without its .py sources: options without help
        return {}
    body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TrainConfig").body
    helps = {}
    for field, after in zip(body, body[1:]):
        if isinstance(field, ast.AnnAssign) and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
            helps[field.target.id] = " ".join(after.value.value.split("\n\n")[0].split())
    return helps


@functools.cache
def _field_types() -> dict:
    """Each field's annotation as a type (the source holds strings: `from __future__ import annotations`)."""
    return typing.get_type_hints(TrainConfig)


def field_types() -> dict:
    """Each field's type (int, float, bool, str, str | None, list[str] | None)."""
    return dict(_field_types())


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
