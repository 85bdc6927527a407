"""`mlx_bluey data stats`: what a chat dataset looks like, as Markdown (and a PNG histogram).

    mlx_bluey data stats data/bluey/train.jsonl data/bluey/valid.jsonl data/bluey/test.jsonl \\
        [--character data/bluey/character.yaml] [--png stats.png]

Replies are the assistant messages. Words are text.py's (letters, digits, apostrophes); tokens are counted with the
model's tokenizer (the embedded Gemma 3 by default). Short = under 25 words, long = over 120:
the thresholds the dataset's length mix is held to.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .data import Conversation, read_jsonl
from .text import LONG_WORDS, SHORT_WORDS, count_markers, opening, word_count

WORD_BINS = [(0, 24), (25, 49), (50, 74), (75, 99), (100, 120), (121, None)]


@dataclass
class Stats:
    files: dict[str, int]  # conversations per file
    conversations: int
    with_system: int
    user_turns: Counter  # user turns per conversation -> conversations
    reply_words: list[int]
    reply_tokens: list[int] = field(default_factory=list)
    marker_counts: Counter = field(default_factory=Counter)
    openings: Counter = field(default_factory=Counter)

    @property
    def replies(self) -> int:
        return len(self.reply_words)

    @property
    def multi_turn(self) -> int:
        return sum(n for turns, n in self.user_turns.items() if turns >= 2)

    @property
    def short_share(self) -> float:
        return sum(w < SHORT_WORDS for w in self.reply_words) / self.replies

    @property
    def long_share(self) -> float:
        return sum(w > LONG_WORDS for w in self.reply_words) / self.replies

    @property
    def markers_per_100_words(self) -> float:
        return 100 * sum(self.marker_counts.values()) / max(sum(self.reply_words), 1)


def card_markers(first: Path, character: str | Path | None = None) -> list[str]:
    """Voice markers of the named card, else of the card beside the first file; none when there is no card there."""
    from .character import card_beside, load_card

    path = card_beside(first, character)
    return load_card(path).voice_markers if character or path.exists() else []


def compute_stats(paths: list[Path], tokenizer=None, markers: list[str] | None = None) -> Stats:
    files: dict[str, int] = {}
    conversations: list[Conversation] = []
    for path in paths:
        rows = read_jsonl(path)
        files[str(path)] = len(rows)
        conversations += rows
    stats = Stats(files, len(conversations), 0, Counter(), [])
    for conversation in conversations:
        messages = conversation.messages
        stats.with_system += messages[0]["role"] == "system"
        stats.user_turns[sum(m["role"] == "user" for m in messages)] += 1
        for message in messages:
            if message["role"] != "assistant":
                continue
            text = message["content"]
            stats.reply_words.append(word_count(text))
            if tokenizer is not None:
                stats.reply_tokens.append(len(tokenizer.encode(text.strip(), add_special_tokens=False)))
            stats.marker_counts.update(count_markers(text, markers or []))
            stats.openings[opening(text)] += 1
    return stats


def _summary(values: list[int]) -> str:
    return f"{min(values)} / {statistics.median(values):g} / {statistics.mean(values):.1f} / {max(values)}"


def to_markdown(stats: Stats, top: int = 10) -> str:
    pct = lambda part, whole: f"{100 * part / whole:.1f}%"  # noqa: E731 (a one-line helper local to this function)
    lines = ["| measure | value |", "|---|---|"]
    for name, count in stats.files.items():
        lines.append(f"| conversations in `{name}` | {count} |")
    lines += [
        f"| conversations | {stats.conversations} |",
        f"| with a system message | {stats.with_system} ({pct(stats.with_system, stats.conversations)}) |",
        f"| multi-turn (2+ user turns) | {stats.multi_turn} ({pct(stats.multi_turn, stats.conversations)}) |",
        "| user turns per conversation | " + ", ".join(f"{k}: {v}" for k, v in sorted(stats.user_turns.items())) + " |",
        f"| replies | {stats.replies} |",
        f"| words per reply (min / median / mean / max) | {_summary(stats.reply_words)} |",
    ]
    if stats.reply_tokens:
        lines.append(f"| tokens per reply (min / median / mean / max) | {_summary(stats.reply_tokens)} |")
    lines += [
        f"| short replies (< {SHORT_WORDS} words) | {pct(stats.short_share * stats.replies, stats.replies)} |",
        f"| medium replies | {pct((1 - stats.short_share - stats.long_share) * stats.replies, stats.replies)} |",
        f"| long replies (> {LONG_WORDS} words) | {pct(stats.long_share * stats.replies, stats.replies)} |",
        f"| voice markers per 100 reply words | {stats.markers_per_100_words:.2f} |",
        "",
        "Words per reply:",
        "",
        "| words | replies | share |",
        "|---|---|---|",
    ]
    for low, high in WORD_BINS:
        n = sum(low <= w and (high is None or w <= high) for w in stats.reply_words)
        label = f"{low}-{high}" if high is not None else f"{low}+"
        lines.append(f"| {label} | {n} | {'#' * round(40 * n / stats.replies)} {pct(n, stats.replies)} |")
    if stats.marker_counts:
        lines += [
            "",
            "Voice markers (replies' words, case-insensitive):",
            "",
            "| marker | count | per 100 words |",
            "|---|---|---|",
        ]
        total_words = sum(stats.reply_words)
        for marker, count in stats.marker_counts.most_common():
            lines.append(f"| {marker} | {count} | {100 * count / total_words:.2f} |")
    lines += [
        "",
        f"Most common openings (first three words of a reply, top {top}):",
        "",
        "| opening | replies |",
        "|---|---|",
    ]
    for text, count in stats.openings.most_common(top):
        lines.append(f"| {text} | {count} |")
    return "\n".join(lines) + "\n"


def write_histogram(stats: Stats, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    axis.hist(stats.reply_words, bins=range(0, max(stats.reply_words) + 10, 10), color="#3b7dd8")
    for x in (SHORT_WORDS, LONG_WORDS):
        axis.axvline(x, color="grey", linestyle="--")
    axis.set_xlabel("words per reply")
    axis.set_ylabel("replies")
    axis.set_title(f"{stats.replies} replies in {stats.conversations} conversations")
    figure.tight_layout()
    figure.savefig(png, dpi=100)
    plt.close(figure)
