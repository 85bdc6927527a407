"""Output head + cross-entropy at the supervised positions, with a fast path for MLX on a CPU.

Gemma 3's head is the tied 262,144 x 640 embedding. For N supervised positions the loss needs
N x 262,144 logits, an exp of each (forward) and a softmax of each (backward). MLX's CPU backend
runs exp one element at a time on one core: 267 x 262,144 = 70M exps took 0.87 s here, against
0.038 s in NumPy (SIMD). At the Bluey data's 83% supervised positions, those exps were ~35% of a
LoRA step.

So on a CPU the head runs in NumPy as one MLX custom function: its forward computes the summed loss
*and* the gradient with respect to the hidden states in a single pass over the logits, chunked by
rows so at most CHUNK x 262,144 floats (256 rows: 268 MB) exist at once; its VJP just scales that
gradient. On Metal the plain MLX ops stay (the GPU is fast at both, and a host round trip is not).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np

CHUNK = 256  # rows of logits per NumPy pass


def head_weight(model) -> mx.array:
    """The [vocab, hidden] matrix that produces logits (tied embedding or lm_head)."""
    if getattr(model, "tie_word_embeddings", True) or "lm_head" not in model:
        return model.model.embed_tokens.weight
    return model.lm_head.weight


def head_logits(model, hidden: mx.array) -> mx.array:
    """The output head in MLX ops: tied embedding or lm_head, then Gemma's soft cap where the model has one."""
    if getattr(model, "tie_word_embeddings", True) or "lm_head" not in model:
        logits = model.model.embed_tokens.as_linear(hidden)
    else:
        logits = model.lm_head(hidden)
    softcap = getattr(model.args, "final_logit_softcapping", None)
    if softcap:
        logits = mx.tanh(logits / softcap) * softcap
    return logits


def mlx_head_loss(model, hidden: mx.array, targets: mx.array) -> mx.array:
    """Reference path: logits with MLX ops, summed cross-entropy."""
    return nn.losses.cross_entropy(head_logits(model, hidden).astype(mx.float32), targets, reduction="sum")


def _exp_chunks(hidden: np.ndarray, targets: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None):
    """Per CHUNK rows of softmax(hidden @ weight.T + bias): (first row, targets, exp(logits - row max) [n, V] in
    place, its row sums [n, 1] in float64, the rows' summed cross-entropy)."""
    for start in range(0, len(hidden), CHUNK):
        h = hidden[start : start + CHUNK]
        t = targets[start : start + CHUNK]
        logits = h @ weight.T  # [n, V]
        if bias is not None:
            logits += bias
        target_logit = logits[np.arange(len(h)), t].astype(np.float64)
        peak = logits.max(axis=1, keepdims=True)
        np.subtract(logits, peak, out=logits)
        np.exp(logits, out=logits)
        total = logits.sum(axis=1, keepdims=True, dtype=np.float64)
        yield start, t, logits, total, float((peak[:, 0] + np.log(total[:, 0]) - target_logit).sum())


def _numpy_loss_and_grad(hidden: np.ndarray, targets: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None):
    """Summed cross-entropy of softmax(hidden @ weight.T + bias) and its gradient w.r.t. hidden (the bias, a
    constant, moves no gradient)."""
    loss = 0.0
    grad = np.empty_like(hidden)
    for start, t, exps, total, chunk_loss in _exp_chunks(hidden, targets, weight, bias):
        loss += chunk_loss
        np.multiply(exps, (1.0 / total).astype(np.float32), out=exps)  # softmax
        exps[np.arange(len(t)), t] -= 1.0  # d loss / d logits = softmax - one_hot
        grad[start : start + CHUNK] = exps @ weight
    return np.float32(loss), grad


def _numpy_loss(hidden: np.ndarray, targets: np.ndarray, weight: np.ndarray) -> np.float32:
    """The summed cross-entropy alone (validation): half the work, no [n, V] gradient matmul."""
    return np.float32(sum(chunk[-1] for chunk in _exp_chunks(hidden, targets, weight)))


def make_numpy_head_loss(model, ids: np.ndarray | None = None, tail: Tail | None = None):
    """A head-loss function for float32 models on the CPU, same signature as mlx_head_loss; with `ids`, the
    softmax runs over those ids only (cut_ids), and with `tail` over them and the micro-batch's sampled others."""
    full, weight, lookup = _head_rows(model, ids)

    @mx.custom_function
    def head_loss(hidden, targets):
        targets = np.array(targets, copy=False)
        rows, bias = _with_tail(weight, full, tail, targets)
        loss, grad = _numpy_loss_and_grad(np.array(hidden, copy=False), _kept(lookup, targets), rows, bias)
        return mx.array(loss), mx.array(grad)

    @head_loss.vjp
    def head_loss_vjp(primals, cotangents, outputs):
        return cotangents[0] * outputs[1], mx.zeros_like(primals[1])

    def loss(_, hidden, targets):
        return head_loss(hidden, targets)[0]

    return loss


def cut_ids(datasets, tokenizer, vocab: int) -> np.ndarray:
    """The sorted ids a cut head (config head_ids: data) keeps: every id in the encoded conversations (so every
    target) and the tokenizer's special tokens. The Bluey training split (with its system message) uses 12,460
    of 262,144, so the head's two [n, V] matmuls and its exps shrink 262,144 / 12,460 = 21x."""
    ids = {int(i) for i in tokenizer.all_special_ids if i < vocab}  # a tokenizer may list ids the head lacks
    for dataset in datasets:
        for row in dataset.ids:
            ids.update(np.unique(row).tolist())
    return np.array(sorted(ids), dtype=np.int64)


@dataclass(frozen=True)
class Tail:
    """Sampled negatives beside the kept ids (head_ids: sampled). The cut head never pushes down the ids it leaves
    out, so their share of the whole-vocabulary softmax stays where the base model had it (benchmarks/cut-head-270m:
    validation loss +3.5-4.8%). Here every micro-batch also draws `samples` of the left-out ids, uniformly without
    replacement, and each drawn logit is raised by log(len(ids) / samples): it stands for that many left-out ids
    (the logQ correction of sampled softmax, for a uniform proposal), so the softmax's sum over them estimates the
    whole tail's and its gradient pushes the drawn ones down. The draw is seeded by `seed` and the micro-batch's
    targets: a resumed run draws the same."""

    ids: np.ndarray  # the ids the cut head leaves out, sorted
    samples: int  # drawn per micro-batch (config head_tail_samples)
    seed: int = 0

    @classmethod
    def around(cls, kept: np.ndarray, vocab: int, samples: int, seed: int = 0) -> Tail:
        """The tail of a cut head keeping `kept` of `vocab` ids; at most every left-out id is drawn."""
        rest = np.setdiff1d(np.arange(vocab, dtype=np.int64), kept)
        return cls(rest, min(samples, len(rest)), seed)

    @property
    def correction(self) -> float:
        """log(left-out ids / drawn): 250,000 left out and 8,192 drawn -> log(30.5) = 3.42 added to each drawn logit."""
        return math.log(len(self.ids) / self.samples)

    def draw(self, targets: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng([self.seed, zlib.crc32(np.ascontiguousarray(targets, dtype=np.int64).tobytes())])
        return self.ids[np.sort(rng.choice(len(self.ids), self.samples, replace=False))]


def _with_tail(weight: np.ndarray, full: np.ndarray, tail: Tail | None, targets: np.ndarray):
    """(the head's rows for these targets, the bias of their logits or None): the kept rows, then the drawn ones."""
    if tail is None:
        return weight, None
    drawn = full[tail.draw(targets)]
    bias = np.zeros(len(weight) + len(drawn), dtype=np.float32)
    bias[len(weight) :] = tail.correction
    return np.concatenate([weight, drawn]), bias


def _head_rows(model, ids: np.ndarray | None):
    """(the frozen head as a NumPy [V, H] view (a tail draws its rows from it); that view, or its `ids` rows as a
    copy; a full-vocabulary id -> row lookup for targets, or None). A target outside `ids` maps to -1 (_kept
    refuses it)."""
    full = np.array(head_weight(model), copy=False)  # zero-copy view of the frozen head
    if ids is None:
        return full, full, None
    return full, np.ascontiguousarray(full[ids]), _lookup(full.shape[0], ids)


def _lookup(vocab: int, ids: np.ndarray) -> np.ndarray:
    """id -> its row in the cut head, -1 for an id it lacks."""
    lookup = np.full(vocab, -1, dtype=np.int64)
    lookup[ids] = np.arange(len(ids))
    return lookup


def _kept(lookup: np.ndarray | None, targets: np.ndarray) -> np.ndarray:
    """Targets as rows of the cut head (unchanged without one); an id the cut head lacks is an error, not row -1."""
    if lookup is None:
        return targets
    rows = lookup[targets]
    if (rows < 0).any():
        raise ValueError(f"target id {int(targets[rows < 0][0])} is not among the cut head's ids (head_ids: data)")
    return rows


def mlx_cut_head_loss(model, ids: np.ndarray, tail: Tail | None = None):
    """The MLX-ops head (Metal, or a head the NumPy path does not serve) over `ids` only: softmax over those rows
    (and with `tail`, the micro-batch's drawn others after them, as the NumPy head does)."""
    weight = head_weight(model)[mx.array(ids)]
    lookup = mx.array(_lookup(head_weight(model).shape[0], ids).astype(np.int32))
    softcap = getattr(model.args, "final_logit_softcapping", None)

    if tail is not None:  # added after the soft cap: the correction multiplies exp(logit), it is not part of it
        bias = mx.array(np.r_[np.zeros(len(ids)), np.full(tail.samples, tail.correction)].astype(np.float32))

    def loss(_, hidden, targets):
        rows = weight
        if tail is not None:
            drawn = tail.draw(np.array(targets))
            rows = mx.concatenate([weight, head_weight(model)[mx.array(drawn)]])
        logits = hidden @ rows.T
        if softcap:
            logits = mx.tanh(logits / softcap) * softcap
        if tail is not None:
            logits = logits + bias
        return nn.losses.cross_entropy(logits.astype(mx.float32), lookup[targets], reduction="sum")

    return loss


def numpy_head_applies(model) -> bool:
    """The NumPy head serves float32, un-softcapped heads on the CPU."""
    cpu = mx.default_device() == mx.cpu
    plain = not getattr(model.args, "final_logit_softcapping", None)
    return cpu and plain and head_weight(model).dtype == mx.float32


def make_two_pass_step(model, ids: np.ndarray | None = None, tail: Tail | None = None):
    """value_and_grad(model, inputs, targets, positions) in two passes, for peak memory.

    Why: the one-pass NumPy head evaluates the hidden states inside the gradient trace, and MLX then
    keeps every forward intermediate of the graph alive until the backward (measured ~5 MB per token
    for the 270M, against ~1.75 MB for a plain MLX forward + backward). Here:
      1. hidden = body(inputs), no gradient trace: intermediates are freed as they are consumed;
      2. loss and G = d loss / d hidden at the supervised positions, in NumPy (one pass over the logits);
      3. gradients of <body(inputs)[positions], G> by an ordinary MLX forward + backward, which equals
         d loss / d params by the chain rule (G is a constant there).
    The body runs forward twice: about one forward more per micro-batch. Dropout must draw the same
    masks in both passes, so the random state is reseeded with one seed for each.
    """
    full, weight, lookup = _head_rows(model, ids)

    def surrogate(model, inputs, positions, g):
        hidden = model.model(inputs)
        return (hidden.reshape(-1, hidden.shape[-1])[positions] * g).sum()

    surrogate_grad = nn.value_and_grad(model, surrogate)

    def step(model, inputs, targets, positions):
        seed = int(mx.random.randint(0, 2**31 - 1, ()).item())
        mx.random.seed(seed)
        hidden = model.model(inputs)
        hidden = hidden.reshape(-1, hidden.shape[-1])[positions]
        mx.eval(hidden)
        targets = np.array(targets.reshape(-1)[positions])
        rows, bias = _with_tail(weight, full, tail, targets)
        loss, g = _numpy_loss_and_grad(np.array(hidden, copy=False), _kept(lookup, targets), rows, bias)
        del hidden
        mx.random.seed(seed)
        _, grads = surrogate_grad(model, inputs, positions, mx.array(g))
        return mx.array(loss), grads

    return step


def make_numpy_head_loss_value(model):
    """Like make_numpy_head_loss, without the gradient: for losses nothing differentiates (validation)."""
    weight = np.array(head_weight(model), copy=False)

    def loss(_, hidden, targets):
        return mx.array(_numpy_loss(np.array(hidden, copy=False), np.array(targets, copy=False), weight))

    return loss


def select_head_loss(model, gradient: bool = True, ids: np.ndarray | None = None, tail: Tail | None = None):
    """NumPy head on a CPU with a float32 untransformed head (gradient=False: the loss alone); MLX ops
    everywhere else. With `ids` (training with head_ids: data): the softmax over those ids only; with `tail`
    (head_ids: sampled) also over the micro-batch's drawn others."""
    if ids is not None:
        if numpy_head_applies(model):
            return make_numpy_head_loss(model, ids, tail)
        return mlx_cut_head_loss(model, ids, tail)
    if numpy_head_applies(model):
        return make_numpy_head_loss(model) if gradient else make_numpy_head_loss_value(model)
    return mlx_head_loss
