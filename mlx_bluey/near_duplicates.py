"""Near-duplicate conversations, shared by `data split` (a group goes to one split) and `data validate` (it
reports them): two conversations are near-duplicates when the Jaccard similarity of their word 3-gram sets is
at least 0.5 (a reworded copy of a reply shares most of its 3-grams; two different replies on the same topic
share only a few per cent). System messages are left out: a character card's prompt put first in many
conversations is setup, not content, and would make them all look alike (with the 47-word Bluey prompt, 98 of
data/bluey/raw/part14.jsonl's first 100 short fact questions fell into one group with its first).
"""

from __future__ import annotations

from .data import Conversation
from .text import words as text_words

NEAR_DUPLICATE_JACCARD = 0.5


def shingles(conversation: Conversation, n: int = 3) -> frozenset:
    """The word n-grams of the conversation's user and assistant turns (system messages left out)."""
    return text_shingles(" ".join(m["content"] for m in conversation.messages if m["role"] != "system"), n)


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
