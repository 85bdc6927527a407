"""Parity of an exported model against the fused one, shared by the ONNX worker (.venv-export) and the GGUF
export (.venv): held-out texts and prompts, logit comparison, the per-variant summary. numpy only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def template_ids(encoded) -> list[int]:
    """apply_chat_template's ids: a list in transformers 4 (.venv-export), a BatchEncoding in 5 (.venv)."""
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def held_out_texts(path: Path, tokenizer, count: int, max_tokens: int) -> list[list[int]]:
    """The first `count` conversations of a JSONL file, rendered with the model's own chat template."""
    texts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and len(texts) < count:
            ids = template_ids(tokenizer.apply_chat_template(json.loads(line)["messages"], tokenize=True))
            texts.append(ids[:max_tokens])
    return texts


def greedy_prompts(path: Path, tokenizer, count: int) -> list[list[int]]:
    """The opening of the first `count` conversations (everything before the first reply), ready for a reply."""
    prompts = []
    for line in path.read_text(encoding="utf-8").splitlines()[:count]:
        messages = json.loads(line)["messages"]
        opening = messages[: next(i for i, m in enumerate(messages) if m["role"] == "assistant")]
        prompts.append(template_ids(tokenizer.apply_chat_template(opening, tokenize=True, add_generation_prompt=True)))
    return prompts


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Top-1 agreement and mean KL(reference || candidate) over positions; both [positions, vocab].

    A candidate whose vocabulary was cut (logit -inf for the ids it can never say, onnx_vocab.py) has an
    infinite KL from any reference. For it, KL compares the reference renormalised over the kept ids, and
    two more figures say what the cut costs: the share of positions whose reference top-1 id was cut
    ("top1_cut", each one a top-1 disagreement) and the reference's probability on the cut ids ("cut_mass")."""
    kept = np.isfinite(candidate)
    cut = not kept.all()  # the masked passes below run for a cut candidate only ([positions, 262,144] each)
    p, q = log_softmax(np.where(kept, reference, -np.inf) if cut else reference), log_softmax(candidate)
    with np.errstate(invalid="ignore"):  # -inf - -inf at the cut ids, where the weight exp(p) is 0
        kl = (np.exp(p) * (np.where(kept, p - q, 0.0) if cut else p - q)).sum(-1)
    difference = np.abs(reference - candidate)
    figures = {
        "positions": int(len(reference)),
        "top1_agreement": float((reference.argmax(-1) == candidate.argmax(-1)).mean()),
        "kl_mean": float(kl.mean()),
        "kl_max": float(kl.max()),
        "max_abs_logit_diff": float((difference[kept] if cut else difference).max()),
    }
    if cut:
        full = np.exp(log_softmax(reference))
        figures["top1_cut"] = float((~np.take_along_axis(kept, reference.argmax(-1)[:, None], -1)).mean())
        figures["cut_mass"] = float(np.where(kept, 0.0, full).sum(-1).mean())
    return figures


def identical_prefix(want: list[int], got: list[int]) -> int:
    """How many leading tokens two greedy continuations share."""
    return next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))


def summarise(
    parts: list[dict], same_prefix: list[int], greedy_total: int, speeds: list[float], speed_key: str
) -> dict:
    """One variant's parity: logit figures weighted by positions, greedy agreement, median decode speed."""
    positions = sum(p["positions"] for p in parts)
    cut = {  # a vocabulary variant's cost (compare_logits), weighted by positions as the others
        key: round(sum(p.get(key, 0.0) * p["positions"] for p in parts) / positions, 4)
        for key in ("top1_cut", "cut_mass")
        if any(key in p for p in parts)
    }
    return {
        "positions": positions,
        "top1_agreement": round(sum(p["top1_agreement"] * p["positions"] for p in parts) / positions, 4),
        "kl_mean": round(sum(p["kl_mean"] * p["positions"] for p in parts) / positions, 5),
        "kl_max": round(max(p["kl_max"] for p in parts), 4),
        "max_abs_logit_diff": round(max(p["max_abs_logit_diff"] for p in parts), 4),
        "greedy_identical_prefix_tokens": same_prefix,
        "greedy_identical_share": round(sum(same_prefix) / max(greedy_total, 1), 4),
        speed_key: round(float(np.median(speeds)), 2) if speeds else 0.0,
        **cut,
    }


def report_markdown(report: dict, title: str, compared: str, speed_key: str, speed_header: str, footer: str) -> str:
    """export.md of an export with parity: the command, what was compared, one row per variant, a footer."""
    lines = [
        f"# {title} of `{report['fused']}`",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Parity: {report['parity_texts']} held-out conversations ({report['parity_source']}), logits of each "
        f"variant {compared}; greedy: {report['greedy_prompts']} prompts x {report['greedy_tokens']} new tokens "
        "with the KV cache.",
        "",
        f"| variant | file | MB | top-1 agreement | KL mean | KL max | greedy identical | {speed_header} |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for v in report["variants"]:
        p = v.get("parity", {})
        figures = [p.get(k, "-") for k in ("top1_agreement", "kl_mean", "kl_max", "greedy_identical_share", speed_key)]
        lines.append(f"| {v['variant']} | {v['file']} | {v['mb']} | " + " | ".join(map(str, figures)) + " |")
    notes = [
        f"{v['variant']} keeps {v['kept_ids']} token ids of the vocabulary (the others' logits are -inf): its KL "
        f"is over the kept ids; the reference's top-1 id was cut at {v['parity']['top1_cut']} of the positions "
        f"(counted as disagreements), and it put {v['parity']['cut_mass']} of its probability on cut ids on average."
        for v in report["variants"]
        if "top1_cut" in v.get("parity", {})
    ]
    return "\n".join([*lines, "", *notes, *([""] if notes else []), footer, ""])
