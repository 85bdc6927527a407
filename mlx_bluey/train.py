"""`mlx_bluey train`: LoRA (or DoRA, or full) fine-tuning of Gemma 3 on chat JSONL, with MLX.

    mlx_bluey train --config configs/bluey.yaml               # what `make train` runs
    mlx_bluey train --model gemma-3-1b-it --epochs 2 --resume

What it does differently from `mlx_lm.lora`, and why:
- Loss only on assistant tokens, every assistant turn, each one's closing <end_of_turn> included
  (mlx-lm's --mask-prompt supervises only the final message).
- Logits only where the loss is taken. Gemma's tied head is a 640 x 262,144 matmul per position
  (168M multiply-adds, ~63% of the 270M's forward FLOPs). The Bluey replies are 83% of its
  tokens (74,831 of 89,964 in train.jsonl), so that alone saves 17%; the larger win on a CPU is
  computing head and loss in NumPy (head_loss.py): 2.09x mlx_lm.lora's trained tokens/s here on
  the same batches (benchmarks/train_vs_peers.md, rounds 1.82-2.32); PyTorch + PEFT is faster (0.66x).
- Length-bucketed batches with no example dropped or cut (mlx-lm drops `len % batch_size`
  examples per pass and cuts long ones, losing their stop token).
- Checkpoints with optimizer state and step; `--resume` continues to the same losses.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from . import runtime
from .atomic import atomic_write_text
from .checkpoints import (
    ADAPTER_CONFIG,
    ADAPTER_FILE,
    AdapterMismatch,
    adapter_config,
    list_checkpoints,
    load_checkpoint,
    load_start_adapter,
    save_adapter,
    save_checkpoint,
    sha256_files,
)
from .config import TrainConfig
from .data import EncodedDataset, budget_parts, encode_dataset, epoch_batches, read_jsonl
from .head_loss import Tail, cut_ids, head_weight, make_two_pass_step, numpy_head_applies
from .models import resolve_model
from .numpy_gelu import use_numpy_gelu
from .system_message import training_system, with_system
from .trainer import (
    Interrupted,
    LoopSettings,
    LoopState,
    Objective,
    ProgressBar,
    SupervisedObjective,
    TrainingCallback,
    train_loop,
)
from .tuning import apply_adapters, count_trainable, evaluate_loss, load_base, make_loss


class TrainError(RuntimeError):
    """A run that cannot start (or continue) as asked; nothing in the output was changed."""


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
    # a fractional epoch rounds up (rounded to 6 places first, so 0.14 x 50 = 7.000000000000001 is 7 steps, not 8)
    steps = config.iters if config.iters > 0 else math.ceil(round(config.epochs * steps_per_epoch, 6))
    micro: list[list[int]] = []
    epoch = 0
    while len(micro) < steps * config.grad_accumulation:
        micro += epoch_batches(train, config.batch_size, config.seed, epoch, config.length_buckets)
        epoch += 1
    return Plan(micro[: steps * config.grad_accumulation], steps, steps_per_epoch)


def make_optimizer(config: TrainConfig, steps: int):
    warmup = min(config.warmup_steps, max(steps - 1, 0))
    if config.lr_schedule == "constant":
        main = lambda _: mx.array(config.learning_rate, dtype=mx.float32)  # noqa: E731 (a one-line helper local to this function)
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
RESUME_NEUTRAL = {"progress", "grad_checkpoint", "two_pass", "numpy_gelu", "data", "output", "distributed_timeout"}


def run_differences(saved: dict, current: dict) -> list[str]:
    """What differs between a checkpoint's run identity and this run's, as "key: saved -> now"."""
    if saved.get("data_sha256") != current["data_sha256"]:
        return ["the training or validation data changed"]
    if saved.get("from_adapter_sha256") != current.get("from_adapter_sha256"):
        return ["the from_adapter weights changed"]
    if saved.get("system_prompt") != current.get("system_prompt"):
        return [f"system_prompt: {saved.get('system_prompt')!r} -> {current.get('system_prompt')!r}"]
    # a key the checkpoint lacks was added to TrainConfig after it was made: it ran with the default
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    old = {k: v for k, v in saved.get("config", {}).items() if k not in RESUME_NEUTRAL}
    new = current["config"]
    return [
        f"{k}: {old.get(k, defaults.get(k, '(unset)'))} -> {new.get(k, '(unset)')}"
        for k in sorted(old.keys() | new.keys())
        if old.get(k, defaults.get(k)) != new.get(k)
    ]


@dataclass
class RunPlan:
    """A run that passed every check; nothing has been written yet."""

    config: TrainConfig
    output: Path
    train_path: Path
    valid_path: Path | None
    model_dir: Path
    model: object
    train_set: EncodedDataset
    valid_set: EncodedDataset | None
    schedule: Plan
    optimizer: object
    objective: Objective  # what a micro-batch trains on (SFT or a preference method)
    validate: object  # validate(step) -> (held-out loss, more figures), or None without validation data
    n_layers: int
    data_sha256: str
    state: LoopState
    start_step: int
    resume_from: Path | None
    complete: bool  # resumed a run that had already finished: there is nothing to do or write
    overwrite: bool  # start_run clears the previous run's files first
    files_to_write: dict  # name -> text that start_run writes (DPO's reference log-probabilities)
    system_prompt: str | None  # put first in every conversation without one (system_message.py)


def prepare_run(
    config: TrainConfig, resume: bool = False, overwrite: bool = False, log=print, read_output: bool = True
) -> RunPlan:
    """Read the data and the model and check the whole run, resume identity included. Writes nothing.

    read_output False (the ranks but 0 of a distributed run): the output directory is not looked at; the
    run starts fresh here and takes rank 0's start (train.take_rank_zeros_start).

    About 70 lines: the RunPlan it returns takes 22 of them, a field a line."""
    output = Path(config.output)
    train_path, valid_path = data_files(config)
    read_rows, encode = _readers(config)
    system = training_system(config, train_path)
    share = config.system_share
    train_rows = with_system(read_rows(train_path), system, share, config.seed)
    valid_rows = with_system(read_rows(valid_path), system, share, config.seed) if valid_path else []
    model_dir = resolve_model(config.model, log=log)

    checkpoints = list_checkpoints(output) if read_output else []
    if read_output and (checkpoints or (output / ADAPTER_FILE).exists()) and not (resume or overwrite):
        raise TrainError(
            f"{output} already holds a training run: pass --resume to continue it or --overwrite to start again"
        )

    dtype_name = str(runtime.resolve_dtype(config.dtype)).rsplit(".", 1)[-1]
    log(f"mlx_bluey: {runtime.describe()}; training dtype {dtype_name}")
    model, tokenizer, _ = load_base(model_dir, config.dtype)
    if config.numpy_gelu and use_numpy_gelu(model):
        log("MLP activation: GELU in NumPy (numpy_gelu.py; --no-numpy-gelu for MLX's)")
    train_set = encode(train_rows, tokenizer, config.max_seq_length, config.on_too_long)
    valid_set = encode(valid_rows, tokenizer, config.max_seq_length, config.on_too_long) if valid_rows else None
    for name, dataset in (("train", train_set), ("valid", valid_set)):
        if dataset is not None and dataset.skipped:
            log(
                f"skipped {len(dataset.skipped)} {name} conversation(s) over max_seq_length: "
                f"{', '.join(dataset.skipped)}"
            )
    if len(train_set) == 0:
        raise TrainError(f"{train_path}: no conversation fits max_seq_length={config.max_seq_length}")

    n_layers, start_sha256 = _adapted(model, config)
    schedule = plan_run(train_set, config)
    optimizer = make_optimizer(config, schedule.steps)
    optimizer.init(model.trainable_parameters())

    data_hash = sha256_files([p for p in (train_path, valid_path) if p])
    identity = {
        "config": {k: v for k, v in config.to_dict().items() if k not in RESUME_NEUTRAL},
        "data_sha256": data_hash,
        "from_adapter_sha256": start_sha256,
        **({"system_prompt": system} if system else {}),  # checkpoints from before the key stay resumable
    }
    files_to_write: dict = {}
    vocab = head_weight(model).shape[0]
    ids = cut_ids([train_set], tokenizer, vocab) if config.head_ids != "all" else None
    tail = Tail.around(ids, vocab, config.head_tail_samples, config.seed) if config.head_ids == "sampled" else None
    if ids is not None:
        identity["head_ids"] = len(ids)  # for the manifest; the data hash already fixes it
        drawn = f" and {tail.samples:,} drawn from the other {len(tail.ids):,} per micro-batch" if tail else ""
        kept = f"the {len(ids):,} ids of the training conversations"
        log(f"head: softmax over {kept}{drawn} (head_ids: {config.head_ids})")
    objective, validate = _objective(config, model, train_set, valid_set, identity, files_to_write, log, ids, tail)
    resume_from = checkpoints[-1] if resume and checkpoints and not overwrite else None
    state, start_step = _resumed(resume_from, identity, model, optimizer)
    complete = resume_from is not None and (start_step >= schedule.steps or state.finished)
    return RunPlan(
        config,
        output,
        train_path,
        valid_path,
        model_dir,
        model,
        train_set,
        valid_set,
        schedule,
        optimizer,
        objective,
        validate,
        n_layers,
        data_hash,
        state,
        start_step,
        resume_from,
        complete,
        overwrite,
        files_to_write,
        system,
    )


def _readers(config: TrainConfig):
    """(read the data file, encode its rows): chat JSONL for SFT, pair JSONL for a preference method."""
    if config.method != "sft":
        from .preference import read_pairs
        from .preference_train import encode_pairs

        return read_pairs, encode_pairs
    return read_jsonl, encode_dataset


def _adapted(model, config: TrainConfig) -> tuple[int, str | None]:
    """Adapters on the model (seeded), the start adapter loaded into them; (blocks adapted, its sha256)."""
    mx.random.seed(config.seed)
    n_layers = apply_adapters(model, config)
    start_sha256 = None
    if config.from_adapter:
        try:
            start_sha256 = load_start_adapter(model, Path(config.from_adapter), adapter_config(config, n_layers))
        except AdapterMismatch as error:
            raise TrainError(str(error)) from None
    if config.two_pass and (config.fine_tune_type == "full" or not numpy_head_applies(model)):
        raise TrainError("two_pass needs the NumPy head: a frozen float32 head on the CPU (LoRA or DoRA)")
    if config.grad_checkpoint:
        from mlx_lm.tuner.trainer import grad_checkpoint

        grad_checkpoint(model.layers[0])
    return n_layers, start_sha256


def _objective(
    config: TrainConfig, model, train_set, valid_set, identity: dict, files_to_write: dict, log, ids=None, tail=None
):
    """(the loop's Objective, validate(step) or None): SFT's loss on the reply tokens, or a preference method's
    (before a checkpoint is loaded: DPO's reference is the model as it starts)."""
    if config.method != "sft":
        from .preference_train import preference_objective

        return preference_objective(config, model, train_set, valid_set, identity, files_to_write, log)
    loss_sum = make_loss(model, head_trainable=config.fine_tune_type == "full", ids=ids, tail=tail)
    value_and_grad = make_two_pass_step(model, ids, tail) if config.two_pass else nn.value_and_grad(model, loss_sum)
    if valid_set is None:
        return SupervisedObjective(value_and_grad, train_set, config.max_batch_tokens), None

    value_only = make_loss(model, head_trainable=config.fine_tune_type == "full", gradient=False)

    def validate(step: int) -> tuple[float, dict[str, float]]:
        return evaluate_loss(model, valid_set, config.batch_size, value_only), {}

    return SupervisedObjective(value_and_grad, train_set, config.max_batch_tokens), validate


def _resumed(resume_from: Path | None, identity: dict, model, optimizer) -> tuple[LoopState, int]:
    """(loop state, first step): a fresh start, or the checkpoint's after checking it was made by this run."""
    if resume_from is None:
        return LoopState(extra={"run": identity}), 0
    saved = json.loads((resume_from / "state.json").read_text())
    differences = run_differences(saved.get("run") or {}, identity)
    if differences:
        raise TrainError(
            f"{resume_from} was made with a different config or data ({'; '.join(differences)}); "
            "use --overwrite to start again"
        )
    return LoopState.from_dict(load_checkpoint(resume_from, model, optimizer)), saved["step"]


def manifest(run: RunPlan) -> dict:
    """manifest.json: what the run was made from (base model and data with their hashes, config, machine)."""
    config, train_set, valid_set = run.config, run.train_set, run.valid_set
    return {
        "base_model": config.model or "gemma-3-270m-embedded",
        "base_model_dir": str(run.model_dir),
        "base_model_sha256": sha256_files(
            sorted(run.model_dir.glob("*.safetensors")) + [run.model_dir / "config.json"]
        ),
        "data": {
            "train": str(run.train_path),
            "valid": str(run.valid_path) if run.valid_path else None,
            "sha256": run.data_sha256,
        },
        "examples": {
            "train": len(train_set),
            "valid": len(valid_set) if valid_set else 0,
            "skipped": len(train_set.skipped) + (len(valid_set.skipped) if valid_set else 0),
        },
        "tokens": {"train": train_set.n_tokens, "train_supervised": train_set.n_supervised},
        "trainable_parameters": count_trainable(run.model),
        "from_adapter_sha256": run.state.extra.get("run", {}).get("from_adapter_sha256"),
        "head_ids": run.state.extra.get("run", {}).get("head_ids"),  # ids of the training softmax; None = all
        "system_prompt": run.system_prompt,  # what generate, evaluate, serve and fuse send by default
        "system_share": config.system_share if run.system_prompt else 0.0,  # of the conversations trained with it
        "steps": run.schedule.steps,
        "steps_per_epoch": run.schedule.steps_per_epoch,
        "config": config.to_dict(),
        "runtime": {"device": runtime.device_name(), **runtime.blas_facts()},
        "versions": versions(),
    }


def start_run(run: RunPlan, log=print) -> None:
    """The first writes: clear what --overwrite replaces, then the manifest; forget metrics past the checkpoint."""
    output = run.output
    if run.overwrite and output.exists():
        import shutil

        for old in list_checkpoints(output):
            shutil.rmtree(old)
        for name in ("metrics.jsonl", ADAPTER_FILE, ADAPTER_CONFIG, "loss_curve.png"):
            (output / name).unlink(missing_ok=True)
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "manifest.json", json.dumps(manifest(run), indent=2))
    for name, text in run.files_to_write.items():
        atomic_write_text(output / name, text)
    _truncate_metrics(output / "metrics.jsonl", run.start_step)
    if run.resume_from is not None:
        log(f"resuming from {run.resume_from} (step {run.start_step} of {run.schedule.steps})")
    schedule, ids = run.schedule, run.train_set.ids
    budget = run.config.max_batch_tokens if run.config.method == "sft" else 0
    runs = [part for b in schedule.micro_batches for part in budget_parts(run.train_set, b, budget)]
    padded = sum(len(b) * (max(len(ids[i]) for i in b) - 1) for b in runs)
    real = sum(len(ids[i]) - 1 for b in runs for i in b)
    log(
        f"{len(run.train_set)} train / {len(run.valid_set) if run.valid_set else 0} valid conversations; "
        f"{count_trainable(run.model):,} trainable parameters; {schedule.steps} steps "
        f"({schedule.steps_per_epoch} per epoch); padding {100 * (1 - real / max(padded, 1)):.1f}% of batch tokens"
    )


class RunFiles(TrainingCallback):
    """Writes what the loop reports: a metrics row per step, the best adapter, checkpoints (all atomic)."""

    def __init__(self, run: RunPlan):
        self.run = run
        self.adapter_config = adapter_config(run.config, run.n_layers)

    def on_step(self, row: dict) -> None:
        _append_metrics(self.run.output / "metrics.jsonl", row)

    def on_best(self, step: int) -> None:
        save_adapter(self.run.output, self.run.model, self.adapter_config)

    def on_checkpoint(self, step: int, state: dict, adapter_is_result: bool) -> None:
        if adapter_is_result:
            save_adapter(self.run.output, self.run.model, self.adapter_config)
        save_checkpoint(
            self.run.output, step, self.run.model, self.run.optimizer, state, self.run.config.keep_checkpoints
        )


def take_rank_zeros_start(group, run: RunPlan) -> None:
    """Every rank starts where rank 0 does: its resume step, loop state, adapter and optimizer state (rank 0
    alone reads checkpoints, so hosts need not share a disk)."""
    from .distributed import from_rank_zero

    arrays = {
        **{f"model.{k}": v for k, v in tree_flatten(run.model.trainable_parameters())},
        **{f"optimizer.{k}": v for k, v in tree_flatten(run.optimizer.state)},
    }
    header = {
        "start": run.start_step,
        "complete": run.complete,
        "state": run.state.to_dict(),
        "arrays": [[name, list(value.shape), str(value.dtype)] for name, value in arrays.items()],
    }
    header, received = from_rank_zero(group, header if group.rank() == 0 else None, arrays)
    if group.rank() == 0:
        return
    run.start_step, run.complete = header["start"], header["complete"]
    run.state = LoopState.from_dict(header["state"])
    run.model.update(tree_unflatten([(k[6:], v) for k, v in received.items() if k.startswith("model.")]))
    run.optimizer.state = tree_unflatten([(k[10:], v) for k, v in received.items() if k.startswith("optimizer.")])


def train(
    config: TrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    log=print,
    callbacks: list[TrainingCallback] = (),
    validation_loss=None,
) -> dict:
    """Run (or resume) training. Everything is checked before the output directory is touched.

    `callbacks` observe the loop beside the run's own files; `validation_loss(step) -> float` replaces
    the held-out loss of valid.jsonl (tests drive early stopping with it).
    """
    from .distributed import ShardedObjective, agree, all_reduce, check_split, split_steps, world

    group = world()  # size 1 unless launched by `mlx.launch` (distributed.py)
    rank, size = group.rank(), group.size()
    accumulation = config.grad_accumulation
    if size > 1:
        check_split(config.grad_accumulation, config.batch_size, size)  # refuse before any work
        log = log if rank == 0 else (lambda _: None)  # one process speaks and writes
    run = prepare_run(config, resume, overwrite, log, read_output=rank == 0)
    micro_batches = run.schedule.micro_batches
    if size > 1:  # every rank has checked its files before rank 0 writes any
        agree(group, {"run": run.state.extra.get("run")})
        take_rank_zeros_start(group, run)
        micro_batches, accumulation, share = split_steps(
            micro_batches, config.grad_accumulation, config.batch_size, rank, size
        )
        run.objective = ShardedObjective(run.objective, rank, size, share)
    if run.complete:
        log(f"training already complete (step {run.start_step}); the adapter is {run.output / ADAPTER_FILE}")
        return run.state.to_dict()
    if rank == 0:
        start_run(run, log)
    validate = (lambda step: (validation_loss(step), {})) if validation_loss else run.validate
    patience = config.early_stopping_patience
    settings = LoopSettings(
        config.seed, accumulation, config.max_grad_norm, config.val_every, patience, config.save_every
    )  # fmt: skip
    progress = ProgressBar(run.schedule.steps, run.start_step, config.progress and rank == 0)
    try:
        state = train_loop(
            run.model,
            run.optimizer,
            run.objective,
            micro_batches,
            run.schedule.steps,
            run.schedule.steps_per_epoch,
            settings,
            run.state,
            run.start_step,
            validate,
            [RunFiles(run), progress, *callbacks] if rank == 0 else list(callbacks),
            all_reduce(group, config.distributed_timeout) if size > 1 else None,
        )
    except Interrupted as stop:
        raise TrainError(
            f"interrupted after step {stop.step}, checkpoint saved: run again with --resume to continue"
        ) from None
    finally:
        progress.close()
    return finish_run(run, state, log) if rank == 0 else state.to_dict()


def finish_run(run: RunPlan, state: LoopState, log=print) -> dict:
    """The loss curve and the summary line, from metrics.jsonl."""
    from .plots import plot_loss_curve

    metrics_path = run.output / "metrics.jsonl"
    plot_loss_curve(metrics_path, run.output / "loss_curve.png")
    summary = summarize(metrics_path)
    log(
        f"done: train loss {summary['first_train_loss']:.3f} -> {summary['last_train_loss']:.3f}"
        + (
            f", best val loss {state.best_val_loss:.3f} at step {state.best_step}"
            if state.best_val_loss is not None
            else ""
        )
        + f"; {summary['median_trained_tokens_per_second']:.0f} trained tokens/s (median), "
        f"{summary['median_seconds_per_step']:.2f} s/step, peak memory {summary['peak_memory_gb']:.2f} GB"
    )
    log(f"adapter: {run.output / ADAPTER_FILE}")
    return {**state.to_dict(), **summary}


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
