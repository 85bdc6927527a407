"""The one chat format: Gemma 3 turns, rendered by `chat_template.jinja`.

Training, generation, evaluation and the web page all format conversations through this module,
so the model is always prompted exactly as it was trained (the old project's browser page was not).

A two-turn conversation renders as (ids from the Gemma 3 vocabulary):

    <bos><start_of_turn>user\\nhi<end_of_turn>\\n<start_of_turn>model\\nG'day!<end_of_turn>\\n
    2    105            user 107 hi 106        107 105           model 107 ...   106       107

Only the reply and the <end_of_turn> that closes it (106) carry loss: the model must learn both
what to say and when to stop. Everything else, the trailing "\\n" included, is context.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CHAT_TEMPLATE = (Path(__file__).parent / "chat_template.jinja").read_text(encoding="utf-8")


def render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    """The conversation as text, through our template (not whatever template the model ships)."""
    return tokenizer.apply_chat_template(
        messages,
        chat_template=CHAT_TEMPLATE,
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
    )


def encode_text(tokenizer, text: str) -> list[int]:
    # The template writes <bos> itself, so the tokenizer must not add another.
    return list(tokenizer.encode(text, add_special_tokens=False))


def prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids that ask the model for the next assistant turn."""
    return encode_text(tokenizer, render(tokenizer, messages, add_generation_prompt=True))


@dataclass
class Encoded:
    ids: list[int]  # the whole conversation
    labels: list[bool]  # labels[i]: token ids[i] is a target (an assistant token)

    @property
    def n_supervised(self) -> int:
        return sum(self.labels)


def encode_conversation(tokenizer, messages: list[dict]) -> Encoded:
    """Token ids of a conversation and which of them are trained on.

    The template is rendered for each growing prefix; the text an assistant message adds after
    the generation prompt is its reply plus the end-of-turn marker, and that is what we supervise
    (minus trailing whitespace the template adds between turns). Segments are tokenized one by
    one and the result is checked against tokenizing the whole text, so a boundary can never
    silently shift a label.
    """
    segments: list[tuple[str, bool]] = []
    done = ""
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render(tokenizer, messages[:k], add_generation_prompt=True)
        full = render(tokenizer, messages[: k + 1])
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise ValueError("chat template is not prefix-stable; cannot place the labels")
        reply = full[len(prompt) :]
        target = reply.rstrip()
        segments.append((prompt[len(done) :], False))
        segments.append((target, True))
        segments.append((reply[len(target) :], False))
        done = full
    whole = render(tokenizer, messages)
    segments.append((whole[len(done) :], False))

    ids: list[int] = []
    labels: list[bool] = []
    for text, supervised in segments:
        if not text:
            continue
        piece = encode_text(tokenizer, text)
        ids += piece
        labels += [supervised] * len(piece)
    if ids != encode_text(tokenizer, whole):
        raise ValueError("tokenizing the turns one by one differs from tokenizing the whole text")
    return Encoded(ids, labels)
