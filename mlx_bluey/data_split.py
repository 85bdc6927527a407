"""`mlx_bluey data split`: a seeded train/valid/test split that keeps near-duplicates together.

    mlx_bluey data split data/bluey/raw/*.jsonl --output data/bluey --seed 0
    mlx_bluey data split data/bluey/raw/*.jsonl --output data/bluey --keep   # after adding a raw part

Near-duplicates (near_duplicates.py: word 3-gram Jaccard >= 0.5) form one group and a group goes to one
split, so validation never measures memorisation of a training example.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .atomic import atomic_write_text
from .data import Conversation, read_jsonl
from .near_duplicates import near_duplicate_groups


def split_conversations(
    conversations: list[Conversation], valid: float, test: float, seed: int, placed: dict[int, str] | None = None
) -> dict[str, list[int]]:
    """Indices per split. Groups are shuffled with the seed, then test and valid are filled first.

    placed: conversations already in a split (index -> train/valid/test) stay there, and the new members
    of their near-duplicate group join them; only the groups with no placed member are shuffled, and the
    shares apply to those (with nothing placed, this is the plain split)."""
    placed = placed or {}
    result: dict[str, list[int]] = {"train": [], "valid": [], "test": []}
    fresh = []
    for group in near_duplicate_groups(conversations):
        names = [placed[i] for i in group if i in placed]
        if not names:
            fresh.append(group)
        for i in group if names else []:
            result[placed.get(i, names[0])].append(i)
    order = np.random.default_rng(seed).permutation(len(fresh))
    n_fresh = sum(len(group) for group in fresh)
    targets = {"test": round(test * n_fresh), "valid": round(valid * n_fresh)}
    filled = {"test": 0, "valid": 0}
    for g in order:
        group = fresh[g]
        for name in ("test", "valid"):
            if filled[name] + len(group) <= targets[name]:
                result[name] += group
                filled[name] += len(group)
                break
        else:
            result["train"] += group
    return {k: sorted(v) for k, v in result.items()}


VALID_SHARE = 0.1  # of the conversations (whole near-duplicate groups) go to valid.jsonl
TEST_SHARE = 0.1  # ... and to test.jsonl
SPLIT_SEED = 0


def write_split(
    inputs: list[Path],
    output: Path,
    valid: float = VALID_SHARE,
    test: float = TEST_SHARE,
    seed: int = SPLIT_SEED,
    keep: bool = False,
) -> dict[str, int]:
    """Write OUTPUT/train|valid|test.jsonl from the inputs. keep: a conversation already in one of those
    files (the same messages) stays in its split, so adding data keeps the test set it was measured on.
    The inputs are read in natural order of their paths (part2 before part10), whatever order the shell's
    `part*.jsonl` gave (part1, part10, part2, ...): each split lists its conversations in that order, so with
    keep a new part's conversations come after the earlier ones'."""
    conversations = [c for path in sorted(inputs, key=_natural) for c in read_jsonl(path)]
    placed = {}
    if keep:
        where = {
            _key(c.messages): name
            for name in ("train", "valid", "test")
            if (output / f"{name}.jsonl").exists()
            for c in read_jsonl(output / f"{name}.jsonl")
        }
        placed = {i: where[_key(c.messages)] for i, c in enumerate(conversations) if _key(c.messages) in where}
    splits = split_conversations(conversations, valid, test, seed, placed)
    for name, indices in splits.items():
        lines = [json.dumps({"messages": conversations[i].messages}, ensure_ascii=False) for i in indices]
        atomic_write_text(output / f"{name}.jsonl", "".join(line + "\n" for line in lines))
    return {name: len(indices) for name, indices in splits.items()}


def _natural(path: Path) -> list:
    """part10.jsonl -> ['part', 10, '.jsonl']: numbers compare as numbers."""
    return [int(piece) if piece.isdigit() else piece for piece in re.split(r"(\d+)", str(path))]


def _key(messages: list[dict]) -> str:
    return json.dumps(messages, sort_keys=True, ensure_ascii=False)
