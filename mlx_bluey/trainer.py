"""The optimizer-step loop, apart from everything that sets a run up or writes its files.

`train_loop` receives all it uses (model, optimizer, the objective that runs a micro-batch, its
schedule, a validation function) and writes nothing: it reports through `TrainingCallback`s, as
mlx-lm's trainer does. The files of a run (metrics, best adapter, checkpoints) are one such callback
(`train.RunFiles`); a progress bar, a test or a benchmark are others. A new objective is a new
`Objective` (SFT's is `SupervisedObjective`), a new observer a new callback, and the loop stays one loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import mlx.core as mx
import mlx.optimizers as optim
from mlx.utils import tree_map

from .data import Batch, EncodedDataset, budget_parts, make_batch


class TrainingCallback:
    """Observers of the loop; override what you need. Called in the order the callbacks were given."""

    def on_step(self, row: dict) -> None:
        """After every optimizer step: the metrics row (`val_loss` in it when validation ran)."""

    def on_best(self, step: int) -> None:
        """The adapter in the model now has the lowest validation loss so far."""

    def on_checkpoint(self, step: int, state: dict, adapter_is_result: bool) -> None:
        """Time for a resumable checkpoint; `adapter_is_result` when no validation picks the best adapter."""


class Interrupted(Exception):
    """Ctrl-C during the loop: the step in progress was finished and checkpointed."""

    def __init__(self, step: int):
        super().__init__(f"interrupted after step {step}")
        self.step = step


@dataclass
class LoopSettings:
    """The config values the loop itself reads (TrainConfig documents each)."""

    seed: int
    grad_accumulation: int
    max_grad_norm: float
    val_every: int
    early_stopping_patience: int
    save_every: int


@dataclass
class LoopState:
    """What a checkpoint must carry for the loop to continue exactly where it stopped."""

    best_val_loss: float | None = None
    best_step: int | None = None
    evals_since_best: int = 0
    finished: bool = False
    extra: dict = field(default_factory=dict)  # saved and restored untouched (the run's identity)

    def to_dict(self) -> dict:
        return {
            "best_val_loss": self.best_val_loss,
            "best_step": self.best_step,
            "evals_since_best": self.evals_since_best,
            "finished": self.finished,
            **self.extra,
        }

    @classmethod
    def from_dict(cls, saved: dict) -> LoopState:
        own = ("best_val_loss", "best_step", "evals_since_best", "finished")
        return cls(
            **{k: saved[k] for k in own if k in saved},
            extra={k: v for k, v in saved.items() if k not in own and k != "step"},
        )


def to_arrays(batch: Batch):
    return mx.array(batch.inputs), mx.array(batch.targets), mx.array(batch.target_positions)


@dataclass
class MicroStep:
    """One micro-batch's share of an optimizer step, as an objective reports it."""

    loss_sum: float  # the micro-batch's summed loss; the step's loss is the sum over micro-batches / weight
    grads: dict  # gradients of loss_sum
    weight: int  # what the loss is a mean over: target tokens (SFT), pairs (preference)
    trained_tokens: int  # tokens the loss is taken on
    input_tokens: int  # real (unpadded) tokens fed to the model
    figures: dict = field(default_factory=dict)  # extra sums, logged as sum / weight (preference: margin, ...)


class Objective:
    """What a step trains on: `objective(model, indices)` runs one micro-batch and returns its MicroStep."""

    figure_names: tuple[str, ...] = ()  # the MicroStep.figures it reports (the same on every process)

    def __call__(self, model, indices: list[int]) -> MicroStep:
        raise NotImplementedError


class SupervisedObjective(Objective):
    """SFT: summed cross-entropy over the target tokens of a batch of conversations."""

    def __init__(self, value_and_grad, train_set: EncodedDataset, max_tokens: int = 0):
        self.value_and_grad = value_and_grad  # (model, inputs, targets, positions) -> (loss sum, grads)
        self.train_set = train_set
        self.max_tokens = max_tokens  # a micro-batch padded past this runs in parts (data.budget_parts); 0 = never

    def __call__(self, model, indices: list[int]) -> MicroStep:
        # Summed losses and gradients: the parts of a micro-batch give its own (padding is never a target).
        loss_sum, grads, targets, tokens = 0.0, None, 0, 0
        for part in budget_parts(self.train_set, indices, self.max_tokens):
            batch = make_batch(self.train_set, part)
            loss, part_grads = self.value_and_grad(model, *to_arrays(batch))
            grads = part_grads if grads is None else tree_map(mx.add, grads, part_grads)
            mx.eval(loss, grads)
            loss_sum += loss.item()
            targets += len(batch.target_positions)
            tokens += batch.n_tokens
        return MicroStep(loss_sum, grads, targets, targets, tokens)


def train_loop(
    model,
    optimizer,
    objective: Objective,
    micro_batches: list[list[int]],
    steps: int,
    steps_per_epoch: int,
    settings: LoopSettings,
    state: LoopState,
    start_step: int,
    validate: Callable[[int], tuple[float, dict[str, float]]] | None,
    callbacks: Sequence[TrainingCallback] = (),
    reduce: Callable | None = None,
) -> LoopState:
    """Optimizer steps start_step+1 .. steps (or an early stop); raises Interrupted after a Ctrl-C.

    `reduce(grads, totals) -> (grads, totals)` combines a step's gradient and loss/token sums across
    processes before they are averaged (distributed.all_reduce); None: one process."""
    interrupt = _StopOnInterrupt()
    model.train()
    mx.reset_peak_memory()
    try:
        for step in range(start_step, steps):
            micro = micro_batches[step * settings.grad_accumulation : (step + 1) * settings.grad_accumulation]
            row = _optimizer_step(model, optimizer, objective, micro, step, settings, reduce)
            row["epoch"] = round((step + 1) / steps_per_epoch, 3)
            last = step + 1 == steps
            if validate is not None and settings.val_every > 0 and ((step + 1) % settings.val_every == 0 or last):
                model.eval()
                row["val_loss"], figures = validate(step + 1)  # the loss, more figures: val_<name> in the row
                row.update({f"val_{name}": value for name, value in figures.items()})
                model.train()
                if state.best_val_loss is None or row["val_loss"] < state.best_val_loss:
                    state.best_val_loss, state.best_step, state.evals_since_best = row["val_loss"], step + 1, 0
                    _each(callbacks, "on_best", step + 1)
                else:
                    state.evals_since_best += 1
            _each(callbacks, "on_step", row)
            patience = settings.early_stopping_patience
            stop_early = patience > 0 and state.evals_since_best >= patience
            state.finished = last or stop_early
            if (step + 1) % settings.save_every == 0 or state.finished or interrupt.requested:
                adapter_is_result = validate is None or settings.val_every <= 0
                _each(callbacks, "on_checkpoint", step + 1, state.to_dict(), adapter_is_result)
            if stop_early:
                break
            if interrupt.requested:
                raise Interrupted(step + 1)
    finally:
        interrupt.restore()
    return state


def _optimizer_step(model, optimizer, objective: Objective, micro, step, settings, reduce=None) -> dict:
    """One optimizer step over `micro` (grad_accumulation micro-batches): the metrics row."""
    started = time.perf_counter()
    mx.random.seed(settings.seed * 1_000_003 + step)  # dropout: same noise on resume
    parts = []
    grads = None
    for indices in micro:
        part = objective(model, indices)
        grads = part.grads if grads is None else tree_map(mx.add, grads, part.grads)
        mx.eval(grads)
        part.grads = None  # summed into grads; do not keep a second copy
        parts.append(part)
    totals = {
        "weight": sum(p.weight for p in parts),
        "loss_sum": sum(p.loss_sum for p in parts),
        "trained_tokens": sum(p.trained_tokens for p in parts),
        "input_tokens": sum(p.input_tokens for p in parts),
        **{f"figure:{name}": sum(p.figures.get(name, 0.0) for p in parts) for name in _figure_names(objective, parts)},
    }
    if reduce is not None:  # several processes: the sums of the whole (global) batch
        grads, totals = reduce(grads, totals)
    weight = totals["weight"]
    grads = tree_map(lambda g: g / weight, grads)  # the mean over every target token (or pair) of the step
    if settings.max_grad_norm > 0:
        grads, _ = optim.clip_grad_norm(grads, settings.max_grad_norm)
    learning_rate = float(optimizer.learning_rate)
    optimizer.update(model, grads)
    mx.eval(model.trainable_parameters(), optimizer.state)
    seconds = time.perf_counter() - started
    trained = int(totals["trained_tokens"])
    row = {
        "step": step + 1,
        "train_loss": totals["loss_sum"] / weight,
        "learning_rate": learning_rate,
        "trained_tokens": trained,
        "trained_tokens_per_second": trained / seconds,
        "input_tokens_per_second": totals["input_tokens"] / seconds,
        "seconds": seconds,
        "peak_memory_gb": mx.get_peak_memory() / 1e9,
    }
    for name in _figure_names(objective, parts):
        row[name] = totals[f"figure:{name}"] / weight
    return row


def _figure_names(objective: Objective, parts: list[MicroStep]) -> list[str]:
    """The extra figures of a step: those the objective declares (an empty share reports none), and any other."""
    return sorted(set(objective.figure_names) | {name for p in parts for name in p.figures})


def _each(callbacks, method: str, *args) -> None:
    for callback in callbacks:
        getattr(callback, method)(*args)


class ProgressBar(TrainingCallback):
    """tqdm over the steps, with the latest losses; close() it whatever happens."""

    def __init__(self, total: int, initial: int, enabled: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)

    def on_step(self, row: dict) -> None:
        self.bar.update(1)
        shown = {"loss": f"{row['train_loss']:.3f}"}
        if "val_loss" in row:
            shown["val"] = f"{row['val_loss']:.3f}"
        self.bar.set_postfix(**shown)

    def close(self) -> None:
        self.bar.close()


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
