"""`mlx_bluey data split`: a seeded train/valid/test split that keeps near-duplicates together.

    mlx_bluey data split data/bluey/raw/*.jsonl --output data/bluey --seed 0

Near-duplicates (near_duplicates.py: word 3-gram Jaccard >= 0.5) form one group and a group goes to one
split, so validation never measures memorisation of a training example.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .atomic import atomic_write_text
from .data import Conversation, read_jsonl
from .near_duplicates import near_duplicate_groups


def split_conversations(
    conversations: list[Conversation], valid: float, test: float, seed: int
) -> dict[str, list[int]]:
    """Indices per split. Groups are shuffled with the seed, then test and valid are filled first."""
    groups = near_duplicate_groups(conversations)
    order = np.random.default_rng(seed).permutation(len(groups))
    targets = {"test": round(test * len(conversations)), "valid": round(valid * len(conversations))}
    result: dict[str, list[int]] = {"train": [], "valid": [], "test": []}
    for g in order:
        group = groups[g]
        for name in ("test", "valid"):
            if len(result[name]) + len(group) <= targets[name]:
                result[name] += group
                break
        else:
            result["train"] += group
    return {k: sorted(v) for k, v in result.items()}


VALID_SHARE = 0.1  # of the conversations (whole near-duplicate groups) go to valid.jsonl
TEST_SHARE = 0.1  # ... and to test.jsonl
SPLIT_SEED = 0


def write_split(
    inputs: list[Path], output: Path, valid: float = VALID_SHARE, test: float = TEST_SHARE, seed: int = SPLIT_SEED
) -> dict[str, int]:
    conversations = [c for path in inputs for c in read_jsonl(path)]
    splits = split_conversations(conversations, valid, test, seed)
    for name, indices in splits.items():
        lines = [json.dumps({"messages": conversations[i].messages}, ensure_ascii=False) for i in indices]
        atomic_write_text(output / f"{name}.jsonl", "".join(line + "\n" for line in lines))
    return {name: len(indices) for name, indices in splits.items()}
