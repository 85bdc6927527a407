"""The preference stage on the trainer's seam: pairs as a dataset, an Objective per method, DPO's reference.

train.prepare_run builds these when `method` is dpo, simpo or orpo; the loop, checkpoints, resume,
metrics and early stopping are SFT's own (trainer.train_loop). A metrics row adds the mean reward
margin, the share of pairs whose margin is above 0 (the implicit reward's accuracy) and the mean
chosen and rejected reply log-probabilities.

DPO's reference is the model as training starts (the from_adapter adapter, or the base: a fresh LoRA
adds exactly 0). Its log-probabilities of every pair are computed once, before the first step, and
cached in OUTPUT/reference_logprobs.json with the hash of the pair files and of the starting adapter,
so no second model sits in memory and a resumed run reads them back instead of recomputing them from
a policy that has moved.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .chat_format import Encoded
from .data import DataError
from .preference import Pair, dpo_loss, encode_reply, orpo_loss, pack_rows, reply_logprobs_packed, simpo_loss
from .trainer import MicroStep, Objective

REFERENCE_FILE = "reference_logprobs.json"


@dataclass
class PairDataset:
    """Encoded pairs; `ids` (chosen then rejected, one array per pair) serves length bucketing."""

    chosen: list[Encoded]
    rejected: list[Encoded]
    sources: list[str]  # file:line of each pair
    origins: list[str]  # how each rejected reply was made (Pair.origin)
    skipped: list[str]

    def __post_init__(self):
        self.ids = [np.array(c.ids + r.ids, np.int32) for c, r in zip(self.chosen, self.rejected)]

    def __len__(self) -> int:
        return len(self.chosen)

    @property
    def n_tokens(self) -> int:
        return sum(len(c.ids) + len(r.ids) for c, r in zip(self.chosen, self.rejected))

    def replies(self, indices) -> list[Encoded]:
        """The chosen replies of these pairs, then their rejected ones (the layout the losses split)."""
        return [self.chosen[i] for i in indices] + [self.rejected[i] for i in indices]

    @property
    def n_supervised(self) -> int:
        return sum(c.n_supervised + r.n_supervised for c, r in zip(self.chosen, self.rejected))


def encode_pairs(pairs: list[Pair], tokenizer, max_seq_length: int, on_too_long: str) -> PairDataset:
    """Both replies of every pair with its prompt; a side over max_seq_length is an error or a counted skip."""
    chosen, rejected, sources, origins, skipped = [], [], [], [], []
    for pair in pairs:
        c = encode_reply(tokenizer, pair.messages, pair.chosen)
        r = encode_reply(tokenizer, pair.messages, pair.rejected)
        longest = max(len(c.ids), len(r.ids))
        if longest > max_seq_length:
            if on_too_long == "error":
                raise DataError(pair.source, f"{longest} tokens, over max_seq_length={max_seq_length}")
            skipped.append(f"{pair.source} ({longest} tokens)")
            continue
        chosen.append(c)
        rejected.append(r)
        sources.append(pair.source)
        origins.append(pair.origin)
    return PairDataset(chosen, rejected, sources, origins, skipped)


class PreferenceObjective(Objective):
    """One micro-batch of pairs: the method's mean loss, weighted by the pair count."""

    figure_names = ("accuracy", "chosen_logprob", "margin", "rejected_logprob")  # preference._logistic_loss

    def __init__(self, config, dataset: PairDataset, reference: dict[str, list[float]] | None = None):
        if config.method == "dpo" and reference is None:
            raise ValueError("DPO needs the reference log-probabilities")
        self.config, self.dataset, self.reference = config, dataset, reference
        self.value_and_grad = None

    def _loss(self, model, packed, n: int, reference):
        sums, counts = reply_logprobs_packed(model, *packed, 2 * n)
        chosen, rejected, chosen_n, rejected_n = sums[:n], sums[n:], counts[:n], counts[n:]
        c = self.config
        if c.method == "dpo":
            return dpo_loss(chosen, rejected, reference[0], reference[1], c.dpo_beta, c.dpo_nll, chosen_n)
        if c.method == "simpo":
            return simpo_loss(chosen, rejected, chosen_n, rejected_n, c.simpo_beta, c.simpo_gamma)
        return orpo_loss(chosen, rejected, chosen_n, rejected_n, c.orpo_lambda)

    def _inputs(self, indices: list[int]):
        rows = self.dataset.replies(indices)
        reference = None
        if self.reference is not None:
            reference = (
                mx.array([self.reference["chosen"][i] for i in indices]),
                mx.array([self.reference["rejected"][i] for i in indices]),
            )
        return rows, pack_rows(rows), reference

    def __call__(self, model, indices: list[int]) -> MicroStep:
        if self.value_and_grad is None:
            # the loss function returns (loss, figures): the gradient is the loss's
            self.value_and_grad = nn.value_and_grad(model, lambda packed, n, ref: self._loss(model, packed, n, ref))
        rows, packed, reference = self._inputs(indices)
        n = len(indices)
        (loss, figures), grads = self.value_and_grad(packed, n, reference)
        mx.eval(loss, figures, grads)
        # the step averages over pairs: loss_sum and figure sums are per-pair means times n
        return MicroStep(
            loss.item() * n,
            tree_scale(grads, n),
            n,
            sum(r.n_supervised for r in rows),
            sum(len(r.ids) for r in rows),
            {name: value.item() * n for name, value in figures.items()},
        )

    def held_out(self, model, batches: list[list[int]]) -> tuple[float, dict[str, float]]:
        """(the method's loss, its figures) over the given batches, means over pairs: the validation
        figures. A batch whose pairs share one origin also counts toward that origin's accuracy and margin."""
        totals: dict[str, list[float]] = {}  # name -> [sum of per-pair means x pairs, pairs]

        def add(name: str, value: float, n: int) -> None:
            total = totals.setdefault(name, [0.0, 0])
            total[0], total[1] = total[0] + value * n, total[1] + n

        for indices in batches:
            _, packed, reference = self._inputs(indices)
            loss, figures = self._loss(model, packed, len(indices), reference)
            values = {"loss": loss.item(), **{name: value.item() for name, value in figures.items()}}
            for name, value in values.items():
                add(name, value, len(indices))
            if len(origins := {self.dataset.origins[i] for i in indices}) == 1 and (origin := origins.pop()):
                for name in ("accuracy", "margin"):
                    add(f"{name}_{origin}", values[name], len(indices))
        means = {name: total / n for name, (total, n) in totals.items()}
        return means.pop("loss"), means


def tree_scale(tree, factor: float):
    from mlx.utils import tree_map

    return tree_map(lambda g: g * factor, tree)


def reference_logprobs(model, dataset: PairDataset, batch_size: int) -> dict[str, list[float]]:
    """Summed reply log-probabilities of every pair's chosen and rejected reply under `model` as it is."""
    chosen, rejected = [], []
    for start in range(0, len(dataset), batch_size):
        indices = range(start, min(start + batch_size, len(dataset)))
        rows = dataset.replies(indices)
        sums, _ = reply_logprobs_packed(model, *pack_rows(rows), len(rows))
        values = sums.tolist()
        chosen += values[: len(indices)]
        rejected += values[len(indices) :]
    return {"chosen": chosen, "rejected": rejected}


def preference_objective(config, model, train_set, valid_set, identity, files_to_write: dict, log=print):
    """(the training objective, validate(step) or None) for a preference run; DPO's reference comes from
    OUTPUT/reference_logprobs.json when it matches this run, else it is computed now, from the model as it
    starts, and left in files_to_write for start_run (prepare_run writes nothing)."""
    reference = None
    if config.method == "dpo":
        splits = {"train": train_set, **({"valid": valid_set} if valid_set is not None else {})}
        key = {
            "data_sha256": identity["data_sha256"],
            "from_adapter_sha256": identity["from_adapter_sha256"],
            "model": config.model,
            "dtype": config.dtype,
            "max_seq_length": config.max_seq_length,
            "on_too_long": config.on_too_long,
        }
        path = Path(config.output) / REFERENCE_FILE
        saved = _read_json(path)
        if saved.get("identity") == key:
            reference = saved["logprobs"]
        else:
            log(f"DPO reference: log-probabilities of {sum(map(len, splits.values()))} pairs, once, before training")
            model.eval()
            reference = {name: reference_logprobs(model, data, config.batch_size) for name, data in splits.items()}
            files_to_write[REFERENCE_FILE] = json.dumps({"identity": key, "logprobs": reference})
    objective = PreferenceObjective(config, train_set, reference and reference["train"])
    if valid_set is None:
        return objective, None
    held_out = PreferenceObjective(config, valid_set, reference and reference["valid"])
    return objective, lambda step: held_out.held_out(model, origin_batches(valid_set, config.batch_size))


def origin_batches(dataset: PairDataset, size: int) -> list[list[int]]:
    """Batches of at most `size` pairs, each of one origin (origins in first-seen order), so validation
    reports each origin's accuracy (template, fact, adapter, ...) as well as the whole set's."""
    groups: dict[str, list[int]] = {}
    for index, origin in enumerate(dataset.origins):
        groups.setdefault(origin, []).append(index)
    return [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
