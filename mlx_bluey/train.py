"""`mlx_bluey train`: LoRA (or DoRA, or full) fine-tuning of Gemma 3 on chat JSONL, with MLX.

    mlx_bluey train --config configs/bluey.yaml               # what `make train` runs
    mlx_bluey train --model gemma-3-1b-it --epochs 2 --resume

What it does differently from `mlx_lm.lora`, and why:
- Loss only on assistant tokens, every assistant turn, each one's closing <end_of_turn> included
  (mlx-lm's --mask-prompt supervises only the final message).
- Logits only where the loss is taken. Gemma's tied head is a 640 x 262,144 matmul per position
  (168M multiply-adds, ~63% of the 270M's forward FLOPs). The Bluey replies are 83% of its
  tokens (74,831 of 89,964 in train.jsonl), so that alone saves 17%; the larger win on a CPU is
  computing head and loss in NumPy (head_loss.py): 3.73x mlx_lm.lora's trained tokens/s here.
- Length-bucketed batches with no example dropped or cut (mlx-lm drops `len % batch_size`
  examples per pass and cuts long ones, losing their stop token).
- Checkpoints with optimizer state and step; `--resume` continues to the same losses.
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map

from . import runtime
from .atomic import atomic_write_text
from .checkpoints import (
    adapter_config,
    list_checkpoints,
    load_checkpoint,
    save_adapter,
    save_checkpoint,
    sha256_files,
)
from .config import TrainConfig
from .head_loss import make_two_pass_step, mlx_head_loss, numpy_head_applies, select_head_loss
from .data import Batch, EncodedDataset, encode_dataset, epoch_batches, make_batch, read_jsonl
from .models import resolve_model


class TrainError(RuntimeError):
    """A run that cannot start (or continue) as asked; nothing in the output was changed."""


# ---------------------------------------------------------------------------------------------
# The model pieces


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


def make_loss(model, head_trainable: bool):
    """loss_sum(model, inputs, targets, positions): summed cross-entropy at the supervised positions.

    `positions` are flat indices into B*L; only those hidden states go through the output head.
    """
    head_loss = mlx_head_loss if head_trainable else select_head_loss(model)

    def loss_sum(model, inputs: mx.array, targets: mx.array, positions: mx.array) -> mx.array:
        hidden = model.model(inputs)
        hidden = hidden.reshape(-1, hidden.shape[-1])[positions]
        return head_loss(model, hidden, targets.reshape(-1)[positions])

    return loss_sum


def to_arrays(batch: Batch):
    return mx.array(batch.inputs), mx.array(batch.targets), mx.array(batch.target_positions)


def evaluate_loss(model, dataset: EncodedDataset, batch_size: int, loss_sum=None) -> float:
    """Mean per-token loss over every supervised token of `dataset` (the validation set)."""
    loss_sum = loss_sum or make_loss(model, head_trainable=False)
    total, count = 0.0, 0
    for indices in epoch_batches(dataset, batch_size, seed=0, epoch=0):
        batch = make_batch(dataset, indices)
        total += loss_sum(model, *to_arrays(batch)).item()
        count += len(batch.target_positions)
    return total / max(count, 1)


# ---------------------------------------------------------------------------------------------
# The schedule


@dataclass
class Plan:
    micro_batches: list[list[int]]  # every micro-batch of the run, in order
    steps: int  # optimizer steps
    steps_per_epoch: int


def plan_run(train: EncodedDataset, config: TrainConfig) -> Plan:
    per_epoch = math.ceil(len(train) / config.batch_size)
    steps_per_epoch = math.ceil(per_epoch / config.grad_accumulation)
    steps = config.iters if config.iters > 0 else config.epochs * steps_per_epoch
    micro: list[list[int]] = []
    epoch = 0
    while len(micro) < steps * config.grad_accumulation:
        micro += epoch_batches(train, config.batch_size, config.seed, epoch)
        epoch += 1
    return Plan(micro[: steps * config.grad_accumulation], steps, steps_per_epoch)


def make_optimizer(config: TrainConfig, steps: int):
    warmup = min(config.warmup_steps, max(steps - 1, 0))
    if config.lr_schedule == "constant":
        main = lambda _: mx.array(config.learning_rate, dtype=mx.float32)  # noqa: E731
    else:
        main = optim.cosine_decay(
            config.learning_rate, max(steps - warmup, 1), config.learning_rate * config.min_lr_ratio
        )
    schedule = (
        optim.join_schedules([optim.linear_schedule(0.0, config.learning_rate, warmup), main], [warmup])
        if warmup > 0
        else main
    )
    # bias_correction=True: MLX's default is off, which makes the first steps ~3x larger.
    return optim.AdamW(learning_rate=schedule, weight_decay=config.weight_decay, bias_correction=True)


# ---------------------------------------------------------------------------------------------
# The run


def data_files(config: TrainConfig) -> tuple[Path, Path | None]:
    data = Path(config.data)
    if data.is_file():
        return data, None
    train = data / "train.jsonl"
    if not train.exists():
        raise TrainError(f"{train}: file not found (data must be a directory with train.jsonl, or a .jsonl file)")
    valid = data / "valid.jsonl"
    return train, valid if valid.exists() else None


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("mlx", "mlx-lm", "numpy", "transformers", "mlx-bluey"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


# Settings that change how a step is computed or shown, not what it computes (the tests check that
# grad_checkpoint and two_pass give the same losses), and the paths of the data (its content is compared
# by hash) and of the output (the directory being resumed): a run may resume with them changed.
RESUME_NEUTRAL = {"progress", "grad_checkpoint", "two_pass", "data", "output"}


def run_differences(saved: dict, current: dict) -> list[str]:
    """What differs between a checkpoint's run identity and this run's, as "key: saved -> now"."""
    if saved.get("data_sha256") != current["data_sha256"]:
        return ["the training or validation data changed"]
    old = {k: v for k, v in saved.get("config", {}).items() if k not in RESUME_NEUTRAL}
    new = current["config"]
    return [f"{k}: {old.get(k, '(unset)')} -> {new.get(k, '(unset)')}" for k in sorted(old.keys() | new.keys())
            if old.get(k) != new.get(k)]


def train(config: TrainConfig, resume: bool = False, overwrite: bool = False, log=print) -> dict:
    """Run (or resume) training. Everything is checked before the output directory is touched."""
    output = Path(config.output)
    train_path, valid_path = data_files(config)
    train_rows = read_jsonl(train_path)
    valid_rows = read_jsonl(valid_path) if valid_path else []
    model_dir = resolve_model(config.model, log=log)

    checkpoints = list_checkpoints(output)
    finished = output / "adapters.safetensors"
    if (checkpoints or finished.exists()) and not (resume or overwrite):
        raise TrainError(
            f"{output} already holds a training run: pass --resume to continue it or --overwrite to start again"
        )

    dtype_name = str(runtime.resolve_dtype(config.dtype)).rsplit(".", 1)[-1]
    log(f"mlx_bluey: {runtime.describe()}; training dtype {dtype_name}")
    model, tokenizer, _ = load_base(model_dir, config.dtype)
    train_set = encode_dataset(train_rows, tokenizer, config.max_seq_length, config.on_too_long)
    valid_set = encode_dataset(valid_rows, tokenizer, config.max_seq_length, config.on_too_long) if valid_rows else None
    for name, dataset in (("train", train_set), ("valid", valid_set)):
        if dataset is not None and dataset.skipped:
            log(f"skipped {len(dataset.skipped)} {name} conversation(s) over max_seq_length: {', '.join(dataset.skipped)}")
    if len(train_set) == 0:
        raise TrainError(f"{train_path}: no conversation fits max_seq_length={config.max_seq_length}")

    mx.random.seed(config.seed)
    n_layers = apply_adapters(model, config)
    if config.grad_checkpoint:
        from mlx_lm.tuner.trainer import grad_checkpoint

        grad_checkpoint(model.layers[0])
    plan = plan_run(train_set, config)
    optimizer = make_optimizer(config, plan.steps)
    optimizer.init(model.trainable_parameters())

    data_hash = sha256_files([p for p in (train_path, valid_path) if p])
    run_identity = {"config": {k: v for k, v in config.to_dict().items() if k not in RESUME_NEUTRAL}, "data_sha256": data_hash}
    state = {"best_val_loss": None, "best_step": None, "evals_since_best": 0, "finished": False, "run": run_identity}
    start_step = 0
    if resume and checkpoints and not overwrite:
        saved = json.loads((checkpoints[-1] / "state.json").read_text())
        differences = run_differences(saved.get("run") or {}, run_identity)
        if differences:
            raise TrainError(f"{checkpoints[-1]} was made with a different config or data ({'; '.join(differences)}); "
                             "use --overwrite to start again")
        state = load_checkpoint(checkpoints[-1], model, optimizer)
        start_step = state["step"]
        log(f"resuming from {checkpoints[-1]} (step {start_step} of {plan.steps})")
    elif overwrite and output.exists():
        import shutil

        for old in checkpoints:
            shutil.rmtree(old)
        for name in ("metrics.jsonl", "adapters.safetensors", "adapter_config.json", "loss_curve.png"):
            (output / name).unlink(missing_ok=True)

    output.mkdir(parents=True, exist_ok=True)
    cfg = adapter_config(config, n_layers)
    manifest = {
        "base_model": config.model or "gemma-3-270m-embedded",
        "base_model_dir": str(model_dir),
        "base_model_sha256": sha256_files(sorted(model_dir.glob("*.safetensors")) + [model_dir / "config.json"]),
        "data": {"train": str(train_path), "valid": str(valid_path) if valid_path else None, "sha256": data_hash},
        "examples": {"train": len(train_set), "valid": len(valid_set) if valid_set else 0,
                     "skipped": len(train_set.skipped) + (len(valid_set.skipped) if valid_set else 0)},
        "tokens": {"train": train_set.n_tokens, "train_supervised": train_set.n_supervised},
        "trainable_parameters": count_trainable(model),
        "steps": plan.steps,
        "steps_per_epoch": plan.steps_per_epoch,
        "config": config.to_dict(),
        "runtime": {"device": runtime.device_name(), "blas": runtime.blas_in_use()},
        "versions": versions(),
    }
    atomic_write_text(output / "manifest.json", json.dumps(manifest, indent=2))
    padded = sum(len(b) * (max(len(train_set.ids[i]) for i in b) - 1) for b in plan.micro_batches)
    real = sum(len(train_set.ids[i]) - 1 for b in plan.micro_batches for i in b)
    log(
        f"{len(train_set)} train / {manifest['examples']['valid']} valid conversations; "
        f"{manifest['trainable_parameters']:,} trainable parameters; {plan.steps} steps "
        f"({plan.steps_per_epoch} per epoch); padding {100 * (1 - real / max(padded, 1)):.1f}% of batch tokens"
    )

    metrics_path = output / "metrics.jsonl"
    _truncate_metrics(metrics_path, start_step)
    if start_step >= plan.steps or state.get("finished"):
        log(f"training already complete (step {start_step}); the adapter is {output / 'adapters.safetensors'}")
        return state

    loss_sum = make_loss(model, head_trainable=config.fine_tune_type == "full")
    value_and_grad = nn.value_and_grad(model, loss_sum)
    if config.two_pass:
        if config.fine_tune_type == "full" or not numpy_head_applies(model):
            raise TrainError("two_pass needs the NumPy head: a frozen float32 head on the CPU (LoRA or DoRA)")
        value_and_grad = make_two_pass_step(model)
    model.train()
    mx.reset_peak_memory()
    progress = _progress(plan.steps, start_step, config.progress)
    interrupt = _StopOnInterrupt()
    for step in range(start_step, plan.steps):
        started = time.perf_counter()
        mx.random.seed(config.seed * 1_000_003 + step)  # dropout: same noise on resume
        micro = plan.micro_batches[step * config.grad_accumulation : (step + 1) * config.grad_accumulation]
        batches = [make_batch(train_set, indices) for indices in micro]
        n_targets = sum(len(b.target_positions) for b in batches)
        grads, total = None, 0.0
        for batch in batches:
            loss, g = value_and_grad(model, *to_arrays(batch))
            grads = g if grads is None else tree_map(mx.add, grads, g)
            mx.eval(loss, grads)
            total += loss.item()
        grads = tree_map(lambda g: g / n_targets, grads)  # mean over every target token of the step
        if config.max_grad_norm > 0:
            grads, _ = optim.clip_grad_norm(grads, config.max_grad_norm)
        learning_rate = float(optimizer.learning_rate)
        optimizer.update(model, grads)
        mx.eval(model.trainable_parameters(), optimizer.state)
        seconds = time.perf_counter() - started
        row = {
            "step": step + 1,
            "epoch": round((step + 1) / plan.steps_per_epoch, 3),
            "train_loss": total / n_targets,
            "learning_rate": learning_rate,
            "trained_tokens": n_targets,
            "trained_tokens_per_second": n_targets / seconds,
            "input_tokens_per_second": sum(b.n_tokens for b in batches) / seconds,
            "seconds": seconds,
            "peak_memory_gb": mx.get_peak_memory() / 1e9,
        }
        last = step + 1 == plan.steps
        if valid_set is not None and config.val_every > 0 and ((step + 1) % config.val_every == 0 or last):
            model.eval()
            row["val_loss"] = evaluate_loss(model, valid_set, config.batch_size, loss_sum)
            model.train()
            best = state["best_val_loss"]
            if best is None or row["val_loss"] < best:
                state.update(best_val_loss=row["val_loss"], best_step=step + 1, evals_since_best=0)
                save_adapter(output, model, cfg)
            else:
                state["evals_since_best"] += 1
        _append_metrics(metrics_path, row)
        progress.update(1)
        progress.set_postfix(loss=f"{row['train_loss']:.3f}", **({"val": f"{row['val_loss']:.3f}"} if "val_loss" in row else {}))
        stop_early = config.early_stopping_patience > 0 and state["evals_since_best"] >= config.early_stopping_patience
        state["finished"] = last or stop_early
        if (step + 1) % config.save_every == 0 or last or stop_early or interrupt.requested:
            if valid_set is None or config.val_every <= 0:
                save_adapter(output, model, cfg)  # no validation: the latest adapter is the result
            save_checkpoint(output, step + 1, model, optimizer, state, config.keep_checkpoints)
        if stop_early:
            log(f"early stop at step {step + 1}: no better validation loss for {config.early_stopping_patience} evaluations")
            break
        if interrupt.requested:
            progress.close()
            interrupt.restore()
            raise TrainError(f"interrupted after step {step + 1}, checkpoint saved: run again with --resume to continue")
    interrupt.restore()
    progress.close()
    from .plots import plot_loss_curve

    plot_loss_curve(metrics_path, output / "loss_curve.png")
    summary = summarize(metrics_path)
    log(
        f"done: train loss {summary['first_train_loss']:.3f} -> {summary['last_train_loss']:.3f}"
        + (f", best val loss {state['best_val_loss']:.3f} at step {state['best_step']}" if state["best_val_loss"] is not None else "")
        + f"; {summary['median_trained_tokens_per_second']:.0f} trained tokens/s (median), "
        f"{summary['median_seconds_per_step']:.2f} s/step, peak memory {summary['peak_memory_gb']:.2f} GB"
    )
    log(f"adapter: {output / 'adapters.safetensors'}")
    return {**state, **summary}


def summarize(metrics_path: Path) -> dict:
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    return {
        "steps_logged": len(rows),
        "first_train_loss": rows[0]["train_loss"],
        "last_train_loss": rows[-1]["train_loss"],
        "median_trained_tokens_per_second": float(np.median([r["trained_tokens_per_second"] for r in rows])),
        "median_seconds_per_step": float(np.median([r["seconds"] for r in rows])),
        "peak_memory_gb": max(r["peak_memory_gb"] for r in rows),
    }


def _append_metrics(path: Path, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as file:
        file.write(json.dumps(row) + "\n")


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, forget rows logged after the checkpoint (they will be produced again)."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    keep = [line for line in lines if json.loads(line)["step"] <= step]
    if len(keep) < len(lines):
        atomic_write_text(path, "".join(line + "\n" for line in keep))


class _StopOnInterrupt:
    """First Ctrl-C: finish the current step, checkpoint it, stop. A second one stops at once."""

    def __init__(self):
        import signal

        self.requested = False
        self._signal = signal
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self._previous = None

    def _handle(self, *_):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def restore(self):
        if self._previous is not None:
            self._signal.signal(self._signal.SIGINT, self._previous)
            self._previous = None


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)
