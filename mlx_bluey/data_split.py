"""`mlx_bluey data split`: a seeded train/valid/test split that keeps near-duplicates together.

    mlx_bluey data split data/bluey/raw/*.jsonl --output data/bluey --seed 0

Two conversations are near-duplicates when the Jaccard similarity of their word 3-gram sets
is at least 0.5 (a reworded copy of a reply shares most of its 3-grams; two different replies on
the same topic share only a few per cent). Near-duplicates form one group and a group goes to one
split, so validation never measures memorisation of a training example.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .atomic import atomic_write_text
from .data import Conversation, read_jsonl
from .text import words as text_words

NEAR_DUPLICATE_JACCARD = 0.5


def shingles(conversation: Conversation, n: int = 3) -> frozenset:
    return text_shingles(" ".join(m["content"] for m in conversation.messages), n)


def text_shingles(text: str, n: int = 3) -> frozenset:
    """The word n-grams of a text (one shorter tuple when it has fewer than n words)."""
    words = text_words(text)
    return frozenset(tuple(words[i : i + n]) for i in range(max(len(words) - n + 1, 1)))


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def near_duplicate_groups(
    conversations: list[Conversation], threshold: float = NEAR_DUPLICATE_JACCARD
) -> list[list[int]]:
    """Connected groups of conversations linked by Jaccard >= threshold (union-find)."""
    sets = [shingles(c) for c in conversations]
    parent = list(range(len(sets)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # Index by shingle so only conversations sharing at least one 3-gram are compared.
    by_shingle: dict[tuple, list[int]] = {}
    for i, s in enumerate(sets):
        for g in s:
            by_shingle.setdefault(g, []).append(i)
    checked: set[tuple[int, int]] = set()
    for members in by_shingle.values():
        for a_pos, a in enumerate(members):
            for b in members[a_pos + 1 :]:
                if (a, b) in checked:
                    continue
                checked.add((a, b))
                if root(a) != root(b) and jaccard(sets[a], sets[b]) >= threshold:
                    parent[root(a)] = root(b)
    groups: dict[int, list[int]] = {}
    for i in range(len(sets)):
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values())


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


def write_split(
    inputs: list[Path], output: Path, valid: float = 0.1, test: float = 0.1, seed: int = 0
) -> dict[str, int]:
    conversations = [c for path in inputs for c in read_jsonl(path)]
    splits = split_conversations(conversations, valid, test, seed)
    for name, indices in splits.items():
        lines = [json.dumps({"messages": conversations[i].messages}, ensure_ascii=False) for i in indices]
        atomic_write_text(output / f"{name}.jsonl", "".join(line + "\n" for line in lines))
    return {name: len(indices) for name, indices in splits.items()}
