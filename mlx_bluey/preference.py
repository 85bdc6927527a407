"""Preference tuning's pieces: the pair file, reply log-probabilities, and the DPO, SimPO and ORPO losses.

A pair file has one JSON object per line:

    {"messages": [...the prompt's turns, ending on a user turn], "chosen": "...", "rejected": "...",
     "reason": "why the rejected reply is worse (its source: base model, failed check, template)"}

Both replies are scored the way SFT trains: log-probabilities of the reply tokens and the
<end_of_turn> that closes it (chat_format.encode_conversation's labels), nothing of the prompt.

The losses, per pair, with pi = the summed log-probability of a reply under the policy, ref = the
same under the frozen reference, n = its token count and sigma the logistic function:

    DPO    -log sigma(beta * ((pi_c - ref_c) - (pi_r - ref_r)))              Rafailov et al. 2023
           [+ alpha * -pi_c / n_c with dpo_nll = alpha > 0: the chosen reply's per-token NLL, as RPO (2404.19733)]
    SimPO  -log sigma(beta * (pi_c / n_c - pi_r / n_r) - gamma)               Meng et al. 2024 (2405.14734)
    ORPO   -pi_c / n_c - lambda * log sigma(log odds_c - log odds_r),         Hong et al. 2024
           odds = p / (1 - p) with p = exp(pi / n), the per-token mean probability

SimPO and ORPO need no reference model. Each is tested against a hand computation
(tests/test_preference.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from .chat_format import Encoded, encode_conversation, prompt_ids
from .data import DataError, check_messages, json_lines, unicode_problem
from .head_loss import head_logits

METHODS = ("dpo", "simpo", "orpo")


@dataclass
class Pair:
    messages: list[dict]  # the prompt: optional system message, then user and assistant turns ending on user
    chosen: str
    rejected: str
    reason: str
    source: str  # file:line
    origin: str = ""  # the line's "source": how `data pairs` made the rejected reply (template, fact, base, adapter)


def check_pair(row, where: str) -> Pair:
    """One parsed line as a Pair, or DataError naming the line and field."""
    if not isinstance(row, dict):
        raise DataError(where, "expected a JSON object with messages, chosen and rejected")
    for key in ("chosen", "rejected"):
        if key not in row:
            raise DataError(where, f"missing field '{key}'")
        value = row[key]
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{where}:{key}", "must be a non-empty string")
        if problem := unicode_problem(value):
            raise DataError(f"{where}:{key}", problem)
    if row["chosen"] == row["rejected"]:
        raise DataError(f"{where}:rejected", "is the same text as chosen (nothing to prefer)")
    reason, origin = row.get("reason", ""), row.get("source", "")
    for key, value in (("reason", reason), ("source", origin)):
        if not isinstance(value, str):
            raise DataError(f"{where}:{key}", "must be a string")
    prompt = row.get("messages")
    if isinstance(prompt, list) and prompt and isinstance(prompt[-1], dict) and prompt[-1].get("role") == "assistant":
        raise DataError(f"{where}:messages", "must end on a user turn: the replies are chosen and rejected")
    # the prompt plus a reply is a conversation: the SFT rules (roles, order, content) apply
    messages = check_messages(
        {"messages": [*prompt, {"role": "assistant", "content": row["chosen"]}]} if isinstance(prompt, list) else row,
        where,
    )
    return Pair(messages[:-1], row["chosen"], row["rejected"], reason, where, origin)


def read_pairs(path: str | Path) -> list[Pair]:
    """Every pair of a file; the first problem raises DataError (file:line:field)."""
    pairs = []
    for where, row in json_lines(Path(path)):
        if isinstance(row, DataError):
            raise row
        pairs.append(check_pair(row, where))
    if not pairs:
        raise DataError(str(path), "no pairs in file")
    return pairs


def encode_reply(tokenizer, prompt: list[dict], reply: str) -> Encoded:
    """The prompt and one reply as ids; only the reply's own tokens (and its <end_of_turn>) are labels.

    Earlier assistant turns of a multi-turn prompt are context here, not targets."""
    encoded = encode_conversation(tokenizer, [*prompt, {"role": "assistant", "content": reply}])
    start = len(prompt_ids(tokenizer, prompt))
    return Encoded(encoded.ids, [label and i >= start for i, label in enumerate(encoded.labels)])


def pack_rows(rows: list[Encoded]) -> tuple[mx.array, mx.array, mx.array, mx.array]:
    """(ids without the last column, flat positions that predict a label, the labels, each label's row).

    Rows are padded to the longest; token i is predicted at position i - 1 of its row."""
    width = max(len(r.ids) for r in rows)
    ids = np.zeros((len(rows), width), np.int32)
    for b, r in enumerate(rows):
        ids[b, : len(r.ids)] = r.ids
    flat = [(b, i) for b, r in enumerate(rows) for i, label in enumerate(r.labels) if label and i > 0]
    positions = mx.array([b * (width - 1) + i - 1 for b, i in flat])  # flat index into B x (width - 1)
    targets = mx.array([rows[b].ids[i] for b, i in flat])
    owner = mx.array([b for b, _ in flat])
    return mx.array(ids[:, :-1]), positions, targets, owner


def reply_logprobs_packed(model, inputs, positions, targets, owner, n_rows: int) -> tuple[mx.array, mx.array]:
    """(summed log-probability of each row's labels, their count); the output head runs only at
    the labelled positions, as in SFT."""
    hidden = model.model(inputs)
    hidden = hidden.reshape(-1, hidden.shape[-1])[positions]
    logits = head_logits(model, hidden).astype(mx.float32)
    token_logprobs = mx.take_along_axis(logits, targets[:, None], axis=-1)[:, 0] - mx.logsumexp(logits, axis=-1)
    sums = mx.zeros((n_rows,), mx.float32).at[owner].add(token_logprobs)
    counts = mx.zeros((n_rows,), mx.float32).at[owner].add(mx.ones_like(token_logprobs))
    return sums, counts


def reply_logprobs(model, rows: list[Encoded]) -> tuple[mx.array, mx.array]:
    """(summed log-probability of each row's labelled tokens, their count), as two arrays of len(rows)."""
    return reply_logprobs_packed(model, *pack_rows(rows), len(rows))


def dpo_loss(
    chosen, rejected, ref_chosen, ref_rejected, beta: float, nll: float = 0.0, chosen_tokens=None
) -> tuple[mx.array, dict]:
    """Mean DPO loss over pairs; the implicit rewards are beta * (policy - reference). With nll > 0, plus
    nll times the chosen replies' mean per-token NLL (chosen_tokens: their token counts)."""
    chosen_reward = beta * (chosen - ref_chosen)
    rejected_reward = beta * (rejected - ref_rejected)
    loss, figures = _logistic_loss(chosen_reward - rejected_reward, chosen, rejected)
    if nll:
        loss = loss + nll * mx.mean(-chosen / chosen_tokens)
    return loss, figures


def simpo_loss(chosen, rejected, chosen_tokens, rejected_tokens, beta: float, gamma: float) -> tuple[mx.array, dict]:
    """Mean SimPO loss: length-normalised log-probabilities as rewards, a target margin gamma."""
    reward_gap = beta * (chosen / chosen_tokens - rejected / rejected_tokens)
    return _logistic_loss(reward_gap - gamma, chosen, rejected, reward_gap)


def orpo_loss(chosen, rejected, chosen_tokens, rejected_tokens, lam: float) -> tuple[mx.array, dict]:
    """Mean ORPO loss: the chosen reply's per-token NLL plus lambda times the odds-ratio term."""
    mean_chosen, mean_rejected = chosen / chosen_tokens, rejected / rejected_tokens
    # log odds = log p - log(1 - p) with log p = mean log-probability; log1p(-exp(x)) for x < 0
    log_odds = (mean_chosen - mx.log1p(-mx.exp(mean_chosen))) - (mean_rejected - mx.log1p(-mx.exp(mean_rejected)))
    ratio_loss, figures = _logistic_loss(log_odds, chosen, rejected)
    return mx.mean(-mean_chosen) + lam * ratio_loss, figures


def _logistic_loss(margin, chosen, rejected, reward_gap=None) -> tuple[mx.array, dict]:
    """-log sigma(margin) averaged over pairs (stable: logaddexp(0, -m)), with the figures to log.

    accuracy: the share of pairs whose chosen reply gets the higher implicit reward (reward_gap > 0;
    SimPO's margin subtracts its target gamma from the gap, so a pair can be ranked right and still
    short of the target)."""
    loss = mx.mean(mx.logaddexp(mx.zeros_like(margin), -margin))
    gap = margin if reward_gap is None else reward_gap
    return loss, {
        "margin": mx.mean(margin),
        "accuracy": mx.mean((gap > 0).astype(mx.float32)),
        "chosen_logprob": mx.mean(chosen),
        "rejected_logprob": mx.mean(rejected),
    }
