"""`mlx_bluey data validate`: every problem in chat JSONL files, each with file:line and field.

    mlx_bluey data validate data/bluey/*.jsonl [--model DIR] [--max-seq-length 1024]

Checks, in order: the file exists and is UTF-8; each line is JSON with a valid `messages` list
(roles, order, non-empty content); no conversation appears twice (exact duplicates after
whitespace and case are normalised) or as a near-duplicate (word 3-gram Jaccard >= 0.5, the split
tool's rule), within a file or across files; and each conversation fits the training limit in
tokens, counted with the model's tokenizer through the training chat template. With
`--against-eval data/eval/prompts.jsonl`, also that no user turn is an evaluation prompt's user turn or
its near-duplicate (the same rule; the card's fact questions count as evaluation prompts): data meant
for training must stay apart from what the evaluation asks (tests/test_eval_set.py checks the committed
files the same way). Exit code 1 when there is any problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .chat_format import encode_conversation
from .data import Conversation, DataError, scan_jsonl
from .near_duplicates import NEAR_DUPLICATE_JACCARD, jaccard, near_duplicate_groups, shingles, text_shingles


@dataclass
class Report:
    conversations: int
    problems: list[DataError]

    @property
    def ok(self) -> bool:
        return not self.problems


WHITESPACE = re.compile(r"\s+")


def _text_key(text: str) -> str:
    """The text compared for exact copies: case and runs of whitespace do not count."""
    return WHITESPACE.sub(" ", text.strip().lower())


def _normalised(conversation: Conversation) -> str:
    return "\n".join(m["role"] + ": " + _text_key(m["content"]) for m in conversation.messages)


def validate_files(
    paths: list[Path], tokenizer=None, max_seq_length: int | None = None, held_out: list | None = None
) -> Report:
    """Every problem of the files; `held_out`: evaluation prompts (evaluate.all_prompts) no user turn may copy."""
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
    if held_out is not None:
        problems += held_out_problems(conversations, held_out)
    return Report(len(conversations), problems)


def held_out_problems(
    conversations: list[Conversation], prompts: list, threshold: float = NEAR_DUPLICATE_JACCARD
) -> list[DataError]:
    """A problem per user turn that is, after case and spacing, an evaluation prompt's user turn or its
    near-duplicate (word 3-gram Jaccard >= threshold, 0.5 unless asked); each names the turn and the first
    prompt it matches."""
    asked = [
        (prompt.id, _text_key(m["content"]), text_shingles(m["content"]))
        for prompt in prompts
        for m in prompt.messages
        if m["role"] == "user"
    ]
    problems = []
    for conversation in conversations:
        for i, message in enumerate(conversation.messages):
            if message["role"] != "user":
                continue
            own_key, own = _text_key(message["content"]), text_shingles(message["content"])
            for prompt_id, key, theirs in asked:
                similarity = 1.0 if key == own_key else jaccard(own, theirs)
                if similarity >= threshold:
                    what = "a copy" if key == own_key else f"a near-duplicate (word 3-gram Jaccard {similarity:.2f})"
                    problems.append(
                        DataError(
                            f"{conversation.source}:messages[{i}].content",
                            f"{what} of evaluation prompt {prompt_id}: keep the evaluation held out",
                        )
                    )
                    break
    return problems
