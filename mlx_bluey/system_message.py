"""The system message an adapter is trained with, and so the one every front end sends it: its one home.

    system_prompt: "You are ..."      # a training config: this text
    system_from_card: true            # ... or the card's default_system_prompt
    system_share: 0.5                 # on a seeded half of the conversations only (default 1: all)

Training puts it first in every conversation (and every pair's prompt) that has no system message of its
own, or in a seeded share of them (system_share), and manifest.json records the text as `system_prompt`.
`mlx_bluey generate`, `evaluate`, `data pairs` and `serve --api` send that text when they are not given one,
and `fuse` writes it into character.json (`trained_system_prompt`), which `serve --api` on a fused model, the
page and the Ollama Modelfile read: a reply is asked for in the format the adapter learned (the PyTorch
project's page prompted in another format than its training).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from .character import CARD_FILE, CardError, card_for_adapter, load_card

FUSED_KEY = "trained_system_prompt"  # character.json of a fused model: its adapter's system message, or absent


def add_system(messages: list[dict], text: str | None) -> list[dict]:
    """`messages` with a system message `text` first, unless it has its own (or text is None or "")."""
    if not text or (messages and messages[0]["role"] == "system"):
        return messages
    return [{"role": "system", "content": text}, *messages]


def with_system(rows: list, text: str | None, share: float = 1.0, seed: int = 0) -> list:
    """Conversations or pairs (anything with `.messages`) with add_system applied to each, or to a share of them:
    the first round(share * n) indices of a permutation seeded by `seed` (the same rows on every machine)."""
    if not text or share <= 0:
        return rows
    chosen = range(len(rows))
    if share < 1:
        chosen = set(np.random.default_rng(seed).permutation(len(rows))[: round(share * len(rows))].tolist())
    return [
        dataclasses.replace(row, messages=add_system(row.messages, text)) if i in chosen else row
        for i, row in enumerate(rows)
    ]


def trained_system(adapter: str | Path | None) -> str | None:
    """The system message an adapter was trained with (its manifest's system_prompt); None = none."""
    if adapter is None:
        return None
    manifest = Path(adapter) / "manifest.json"
    if not manifest.exists():
        return None
    return json.loads(manifest.read_text()).get("system_prompt") or None


def fused_system(model_dir: str | Path | None) -> str | None:
    """The system message a fused model's adapter was trained with (character.json, written by fuse)."""
    path = Path(model_dir) / "character.json" if model_dir else None  # a registry name has none
    if path is None or not path.exists():
        return None
    return json.loads(path.read_text()).get(FUSED_KEY) or None


def served_system(adapter: str | Path | None, model: str | Path | None) -> str | None:
    """What a front end sends by default: the adapter's trained message, else a fused model directory's."""
    return trained_system(adapter) if adapter else fused_system(model)


def training_system(config, train_path: Path) -> str | None:
    """The system message a run trains with: system_prompt ("" = none), else the card's with
    system_from_card, else the one from_adapter was trained with (a later stage keeps the format)."""
    if config.system_prompt is not None:
        return config.system_prompt or None
    if config.system_from_card:
        path = Path(train_path).parent / CARD_FILE
        card = load_card(path) if path.exists() else card_for_adapter(config.from_adapter)
        if card is None or not card.default_system_prompt:
            raise CardError(
                f"system_from_card: {path} has no default_system_prompt (or no card is there, nor beside "
                "the from_adapter's data)"
            )
        return card.default_system_prompt
    return trained_system(config.from_adapter)
