"""`mlx_bluey data validate`: every problem in chat JSONL files, each with file:line and field.

    mlx_bluey data validate data/bluey/*.jsonl [--model DIR] [--max-seq-length 1024]

Checks, in order: the file exists and is UTF-8; each line is JSON with a valid `messages` list
(roles, order, non-empty content); no conversation appears twice (exact duplicates after
whitespace and case are normalised) or as a near-duplicate (word 3-gram Jaccard >= 0.5, the split
tool's rule), within a file or across files; and each conversation fits the training limit in
tokens, counted with the model's tokenizer through the training chat template.
Exit code 1 when there is any problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .chat_format import encode_conversation
from .data import Conversation, DataError, scan_jsonl
from .near_duplicates import jaccard, near_duplicate_groups, shingles


@dataclass
class Report:
    conversations: int
    problems: list[DataError]

    @property
    def ok(self) -> bool:
        return not self.problems


WHITESPACE = re.compile(r"\s+")


def _normalised(conversation: Conversation) -> str:
    return "\n".join(
        m["role"] + ": " + WHITESPACE.sub(" ", m["content"].strip().lower()) for m in conversation.messages
    )


def validate_files(paths: list[Path], tokenizer=None, max_seq_length: int | None = None) -> Report:
    conversations: list[Conversation] = []
    problems: list[DataError] = []
    for path in paths:
        for item in scan_jsonl(path):
            (problems if isinstance(item, DataError) else conversations).append(item)

    first_seen: dict[str, str] = {}
    exact = set()
    for conversation in conversations:
        key = _normalised(conversation)
        if key in first_seen:
            problems.append(DataError(f"{conversation.source}:messages", f"exact duplicate of {first_seen[key]}"))
            exact.add(conversation.source)
        else:
            first_seen[key] = conversation.source

    for group in near_duplicate_groups(conversations):
        members = [conversations[i] for i in group if conversations[i].source not in exact]
        for other in members[1:]:
            similarity = jaccard(shingles(members[0]), shingles(other))
            problems.append(
                DataError(
                    f"{other.source}:messages",
                    f"near-duplicate of {members[0].source} (word 3-gram Jaccard {similarity:.2f})",
                )
            )

    if tokenizer is not None and max_seq_length is not None:
        for conversation in conversations:
            n = len(encode_conversation(tokenizer, conversation.messages).ids)
            if n > max_seq_length:
                problems.append(
                    DataError(
                        f"{conversation.source}:messages",
                        f"{n} tokens, over the training limit max_seq_length={max_seq_length}",
                    )
                )
    return Report(len(conversations), problems)
