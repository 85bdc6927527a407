"""Data-parallel training with MLX's own distributed engine: `mlx_bluey train` under `mlx.launch`.

    .venv/bin/mlx.launch --backend ring -n 2 -- .venv/bin/mlx_bluey train --config configs/bluey.yaml

Each process (rank) trains on a disjoint share of every step: whole micro-batches when grad_accumulation
divides by the number of processes N (rank r takes micro-batches r, r + N, ...), else a share of every
micro-batch (positions r, r + N, ... of the length-bucketed batch, so shares stay similar in length); after
the step's micro-batches, gradients,
losses and token counts are summed over the processes with `mx.distributed.all_sum`, then divided by the
global token count: the step is the one a single process makes on the whole batch. Every rank validates on
the whole validation set (the same weights give the same loss), so early stopping agrees. Only rank 0
writes files, and only rank 0 reads the output directory: its resume point, adapter and optimizer state
are sent to the others (`from_rank_zero`), so hosts need not share a disk. Before the first step the ranks
compare a fingerprint of the config and the data, so hosts with other data or settings stop with an error
instead of training apart.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import sys
import threading

import mlx.core as mx
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from .trainer import MicroStep, Objective


class DistributedError(RuntimeError):
    pass


def world():
    """The process group: size 1 when not launched by `mlx.launch` (then nothing here changes a run)."""
    return mx.distributed.init()


def split_steps(micro_batches: list[list[int]], grad_accumulation: int, batch_size: int, rank: int, size: int):
    """This rank's micro-batches and micro-batches per step, and whether each micro-batch is shared out.

    grad_accumulation divisible by the processes: each rank runs whole micro-batches (rank r takes r, r + N, ...
    of every step's), the shipped configs' case (batch 1 x 4); else batch_size divisible: every rank runs its
    share of every micro-batch. Either way a step covers the same global batch as one process's step."""
    if check_split(grad_accumulation, batch_size, size) == "micro-batches":
        steps = [micro_batches[i : i + grad_accumulation] for i in range(0, len(micro_batches), grad_accumulation)]
        return [m for step in steps for m in step[rank::size]], grad_accumulation // size, False
    return micro_batches, grad_accumulation, True


def check_split(grad_accumulation: int, batch_size: int, size: int) -> str:
    """How a step divides across `size` processes ("micro-batches" or "shares"), or a DistributedError."""
    if grad_accumulation % size == 0:
        return "micro-batches"
    if batch_size % size == 0:
        return "shares"
    raise DistributedError(
        f"neither grad_accumulation {grad_accumulation} nor batch_size {batch_size} divides across {size} "
        f"processes: make one of them a multiple of {size}"
    )


class ShardedObjective(Objective):
    """Runs the wrapped objective on this rank's share of each micro-batch when `share` (zero gradients when
    the share is empty: an epoch's last, short batch can have fewer conversations than processes), else on
    the whole micro-batch (split_steps gave each rank its own)."""

    def __init__(self, inner: Objective, rank: int, size: int, share: bool = True):
        self.inner, self.rank, self.size, self.share = inner, rank, size, share
        self.figure_names = inner.figure_names

    def __call__(self, model, indices: list[int]) -> MicroStep:
        # dropout: the loop seeded this step alike on every rank; a draw from that plus the rank gives each
        # process its own masks, the same again on resume
        mx.random.seed(int(mx.random.randint(0, 2**30, shape=()).item()) + self.rank)
        share = indices[self.rank :: self.size] if self.share else indices
        if share:
            return self.inner(model, share)
        zeros = tree_map(mx.zeros_like, model.trainable_parameters())
        return MicroStep(0.0, zeros, 0, 0, 0)


def watchdog(seconds: float, message: str, exit_code: int = 75) -> threading.Timer | None:
    """A started timer that ends this process with `message` on stderr after `seconds` (None for 0).

    MLX's collectives have no timeout: a peer that stops answering without closing its connection (a host
    off the network, a process stopped by SIGSTOP) leaves the others waiting forever. Ending the process
    closes its own connections, so the rest of the group stops too ("connection to a peer was lost")."""
    if not seconds:
        return None

    def fire():
        sys.stderr.write(f"mlx_bluey: {message}\n")
        sys.stderr.flush()
        os._exit(exit_code)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    return timer


def all_reduce(group, timeout: float = 0.0):
    """The loop's reduce hook: (summed gradients, summed figures) of this rank -> the sums over all ranks.

    Waits at most `timeout` seconds (0: forever) for the others, then ends this process (watchdog)."""

    def reduce(grads, totals: dict[str, float]):
        # one message, not one per tensor: the gradients (252 tensors for the 270M) and the sums, concatenated
        flat = tree_flatten(grads)
        names = sorted(totals)
        parts = [value.reshape(-1).astype(mx.float32) for _, value in flat]
        parts.append(mx.array([float(totals[n]) for n in names], dtype=mx.float32))
        message = mx.distributed.all_sum(mx.concatenate(parts), group=group)
        ends = list(itertools.accumulate(part.size for part in parts))
        pieces = mx.split(message, ends[:-1])
        summed = [piece.reshape(value.shape).astype(value.dtype) for piece, (_, value) in zip(pieces, flat)]
        figures = pieces[-1]
        mx.eval([value for _, value in flat])  # this rank's own work first: the watchdog times the waiting only
        timer = watchdog(
            timeout,
            f"no answer from the other processes in {timeout:g} s (distributed_timeout): a host may have "
            "dropped off the network; the checkpoints are in the output directory: launch the group again "
            "with --resume",
        )
        try:
            mx.eval(summed, figures)
        except RuntimeError as error:  # ring: "connection to a peer was lost" when a process dies
            raise DistributedError(
                f"a process of the group stopped ({error}); the checkpoints are in the output directory: "
                "launch the group again with --resume"
            ) from error
        finally:
            if timer is not None:
                timer.cancel()
        return tree_unflatten(list(zip([k for k, _ in flat], summed))), dict(zip(names, figures.tolist()))

    return reduce


def _evaluated(arrays, what: str):
    try:
        mx.eval(arrays)
    except RuntimeError as error:  # ring: a peer stopped, e.g. rank 0 refused the run with an error of its own
        raise DistributedError(f"a process of the group stopped while {what} ({error}); see its error") from error
    return arrays


def agree(group, fingerprint: dict) -> None:
    """Every rank must start the same run: same config and data (compared as a sha256)."""
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).digest()
    mine = mx.array(list(digest), dtype=mx.int32)
    every = _evaluated(mx.distributed.all_gather(mine[None], group=group), "comparing the run")
    if not all((row == mine).all().item() for row in every):
        raise DistributedError(
            "the processes do not agree on the run (config or data differ between hosts): "
            "give every host the same files"
        )


def from_rank_zero(group, header: dict | None, arrays: dict[str, mx.array]) -> tuple[dict, dict[str, mx.array]]:
    """Rank 0's `header` (JSON) and `arrays` on every rank. Only rank 0 reads the output directory, so a host
    without a shared disk resumes from rank 0's checkpoint: the resume point, the loop state, the adapter
    and the optimizer state come from here (all_sum, the other ranks adding zeros).

    The other ranks pass header None and arrays of their own (their freshly initialised adapter and
    optimizer): only the names, shapes and dtypes in rank 0's header count. Sent as float32 and cast back,
    which is exact for float32, bfloat16 and the optimizer's step count (an integer far below 2^24).
    """
    zero = group.rank() != 0
    text = b"" if zero else json.dumps(header, default=str).encode()
    length = int(_evaluated(mx.distributed.all_sum(mx.array(len(text)), group=group), "starting the run").item())
    data = mx.zeros(length, dtype=mx.int32) if zero else mx.array(list(text), dtype=mx.int32)
    data = _evaluated(mx.distributed.all_sum(data, group=group), "starting the run")
    header = json.loads(bytes(data.tolist()).decode())
    specs = header["arrays"]
    if zero:
        parts = [mx.zeros(int(math.prod(shape)), dtype=mx.float32) for _, shape, _ in specs]
    else:
        parts = [arrays[name].reshape(-1).astype(mx.float32) for name, _, _ in specs]
    message = _evaluated(mx.distributed.all_sum(mx.concatenate(parts), group=group), "starting the run")
    ends = list(itertools.accumulate(int(math.prod(shape)) for _, shape, _ in specs))
    pieces = mx.split(message, ends[:-1])
    received = {
        name: piece.reshape(shape).astype(getattr(mx, dtype.rsplit(".", 1)[-1]))
        for piece, (name, shape, dtype) in zip(pieces, specs)
    }
    mx.eval(received)
    return header, received
