"""Chat JSONL in, token batches out.

File format, one conversation per line:

    {"messages": [{"role": "system", "content": "..."},      # optional, first only
                  {"role": "user", "content": "..."},
                  {"role": "assistant", "content": "..."}, ...]}   # alternating, ends on assistant

Every problem is a DataError naming file, line and field; nothing is dropped silently.

Batches are bucketed, not padded to a fixed length: conversations are sorted by token length and
cut into groups of `batch_size`, so a batch pads only to its own longest member. With the Bluey
data (replies of 5 to 250 words) a fixed 512-token pad would waste most of the compute; the
bucketed padding share is printed by `mlx_bluey train` (typically a few percent).
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .chat_format import encode_conversation

ROLES = ("system", "user", "assistant")


class DataError(ValueError):
    """Bad input data: `where` is file:line[:field]."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


@dataclass
class Conversation:
    messages: list[dict]
    source: str  # "file:line"


def unicode_problem(text: str) -> str | None:
    """Why a string is not text the tokenizer can take (a lone surrogate from a JSON "\\ud800"), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return f"contains a lone surrogate \\u{ord(text[error.start]):04x} (not valid Unicode)"
    return None


def check_messages(row, where: str) -> list[dict]:
    """Validate one parsed JSONL row; return its messages or raise DataError."""
    if not isinstance(row, dict):
        raise DataError(where, "expected a JSON object with a 'messages' list")
    if "messages" not in row:
        raise DataError(where, "missing field 'messages'")
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}:messages", "must be a non-empty list")
    for i, message in enumerate(messages):
        field = f"{where}:messages[{i}]"
        if not isinstance(message, dict):
            raise DataError(field, "must be an object with 'role' and 'content'")
        role = message.get("role")
        if role not in ROLES:
            raise DataError(f"{field}.role", f"must be one of {', '.join(ROLES)}, not {role!r}")
        content = message.get("content")
        if not isinstance(content, str):
            raise DataError(f"{field}.content", "must be a string")
        if problem := unicode_problem(content):
            raise DataError(f"{field}.content", problem)
        if not content.strip():
            raise DataError(f"{field}.content", "is empty")
    turns = messages[1:] if messages[0]["role"] == "system" else messages
    for i, message in enumerate(turns):
        index = i + (len(messages) - len(turns))
        expected = "user" if i % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise DataError(
                f"{where}:messages[{index}].role",
                f"expected {expected!r} (a system message may only come first, then user and "
                f"assistant alternate starting with user), got {message['role']!r}",
            )
    if not turns or turns[-1]["role"] != "assistant":
        raise DataError(f"{where}:messages", "must end with an assistant message (nothing to learn otherwise)")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise DataError(str(path), "file not found")
    if not path.is_file():
        raise DataError(str(path), "not a file")
    try:
        return path.read_bytes()
    except OSError as error:
        raise DataError(str(path), f"cannot read: {error.strerror or error}") from error


def _parse_json(line: str, where: str):
    """One line's JSON value, or DataError (never RecursionError or a bare ValueError)."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise DataError(where, f"malformed JSON: {error.msg} at column {error.colno}") from error
    except ValueError as error:  # an integer of more than 4300 digits
        raise DataError(where, f"malformed JSON: {str(error).split(';')[0]}") from error
    except RecursionError as error:
        raise DataError(where, "malformed JSON: nested too deeply") from error


def json_lines(path: Path):
    """(file:line, value or DataError) for every non-blank line; a missing or unreadable file raises DataError.

    Lines end at newline bytes only: a JSON string may hold U+2028 or NEL, which str.splitlines splits on.
    A UTF-8 byte order mark (Windows editors write one) is allowed before the first line.
    """
    data = _read_bytes(path).removeprefix(codecs.BOM_UTF8)
    for number, line_bytes in enumerate(data.split(b"\n"), 1):
        where = f"{path}:{number}"
        try:
            line = line_bytes.decode("utf-8")
        except UnicodeDecodeError as error:
            yield where, DataError(where, f"not valid UTF-8 (byte {error.start} of the line)")
            continue
        if not line.strip():
            continue
        try:
            yield where, _parse_json(line, where)
        except DataError as error:
            yield where, error


def scan_jsonl(path: str | Path):
    """Yield a Conversation or a DataError for every non-blank line: validation reports them all."""
    path = Path(path)
    try:
        rows = list(json_lines(path))
    except DataError as error:
        yield error
        return
    for where, row in rows:
        if isinstance(row, DataError):
            yield row
            continue
        try:
            yield Conversation(check_messages(row, where), where)
        except DataError as error:
            yield error
    if not rows:
        yield DataError(str(path), "no conversations in file")


def read_jsonl(path: str | Path) -> list[Conversation]:
    """Every conversation of a file; the first problem raises DataError."""
    conversations = []
    for item in scan_jsonl(path):
        if isinstance(item, DataError):
            raise item
        conversations.append(item)
    return conversations


@dataclass
class EncodedDataset:
    ids: list[np.ndarray]  # int32 token ids per conversation
    labels: list[np.ndarray]  # bool, True where the token is a training target
    skipped: list[str]  # "file:line (N tokens)" of conversations over the length limit

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_tokens(self) -> int:
        return int(sum(len(x) for x in self.ids))

    @property
    def n_supervised(self) -> int:
        return int(sum(int(x.sum()) for x in self.labels))


def encode_dataset(
    conversations: list[Conversation], tokenizer, max_seq_length: int, on_too_long: str = "error"
) -> EncodedDataset:
    ids, labels, skipped = [], [], []
    for conversation in conversations:
        encoded = encode_conversation(tokenizer, conversation.messages)
        if len(encoded.ids) > max_seq_length:
            message = f"{len(encoded.ids)} tokens, over max_seq_length={max_seq_length}"
            if on_too_long == "error":
                raise DataError(
                    f"{conversation.source}:messages",
                    f"{message}; raise max_seq_length, shorten it, or set on_too_long: skip",
                )
            skipped.append(f"{conversation.source} ({len(encoded.ids)} tokens)")
            continue
        ids.append(np.array(encoded.ids, dtype=np.int32))
        labels.append(np.array(encoded.labels, dtype=bool))
    return EncodedDataset(ids, labels, skipped)


@dataclass
class Batch:
    inputs: np.ndarray  # [B, L] token ids fed to the model (padded with pad_id)
    targets: np.ndarray  # [B, L] the next token at each position
    target_positions: np.ndarray  # flat indices into B*L where the loss is taken
    n_tokens: int  # real (unpadded) input tokens in the batch (inputs.size = B * L counts the padding too)


def length_buckets(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped by similar length: sort, then cut into runs of batch_size.

    Every example lands in exactly one bucket; the last bucket may be smaller (mlx-lm's
    iterate_batches drops those examples, we keep them).
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def make_batch(dataset: EncodedDataset, indices: list[int], pad_id: int = 0) -> Batch:
    # A conversation of n tokens gives n - 1 (input, target) pairs.
    width = max(len(dataset.ids[i]) for i in indices) - 1
    inputs = np.full((len(indices), width), pad_id, dtype=np.int32)
    targets = np.full((len(indices), width), pad_id, dtype=np.int32)
    mask = np.zeros((len(indices), width), dtype=bool)
    n_tokens = 0
    for row, i in enumerate(indices):
        ids, labels = dataset.ids[i], dataset.labels[i]
        n = len(ids) - 1
        inputs[row, :n] = ids[:-1]
        targets[row, :n] = ids[1:]
        mask[row, :n] = labels[1:]  # the loss at position t predicts token t + 1
        n_tokens += n
    return Batch(inputs, targets, np.flatnonzero(mask.reshape(-1)).astype(np.int32), n_tokens)


def budget_parts(dataset: EncodedDataset, indices: list[int], max_tokens: int) -> list[list[int]]:
    """`indices`, sorted by length, cut into runs whose padded size (conversations x the longest one's tokens)
    stays within `max_tokens`; a conversation longer than that runs alone. 0 = one run, `indices` itself.

    Sorted, similar lengths meet. With max_tokens 512: four 120-token conversations run as one (4 x 120 = 480),
    four 200-token ones as two of two (3 x 200 = 600 > 512), four 300-token ones one at a time (2 x 300 = 600)."""
    if max_tokens <= 0:
        return [indices]
    parts: list[list[int]] = []
    part: list[int] = []
    longest = 0
    for i in sorted(indices, key=lambda i: (len(dataset.ids[i]), i)):  # a bucket's own order; others sorted
        n = len(dataset.ids[i])
        if part and (len(part) + 1) * max(longest, n) > max_tokens:
            parts.append(part)
            part, longest = [], 0
        part.append(i)
        longest = max(longest, n)
    return parts + [part]


def epoch_batches(
    dataset: EncodedDataset, batch_size: int, seed: int, epoch: int, buckets: bool = True
) -> list[list[int]]:
    """The batches of one epoch: length buckets in a seeded random order (same seed, same order).

    buckets=False: the batch-1 order cut into runs of batch_size, so a batch holds the conversations that
    batch_size micro-batches of one would in a row (batch 4 x 1 steps are 1 x 4's steps)."""
    if not buckets:
        order = [i for (i,) in epoch_batches(dataset, 1, seed, epoch)]
        return [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    groups = length_buckets([len(x) for x in dataset.ids], batch_size)
    order = np.random.default_rng([seed, epoch]).permutation(len(groups))
    return [groups[k] for k in order]
