"""`mlx_bluey generate`: one reply to --prompt, or a conversation that keeps its history.

Commands typed at the prompt: /reset forgets the conversation, /quit (or Ctrl-D) leaves.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from .generation import GenerationSettings, Reply, generate_reply


@dataclass(frozen=True)
class ChatArgs:
    # Base model: registry name, Hugging Face id or directory (a fused model too); None = the adapter's base.
    model: str | None = None
    # Adapter directory from `mlx_bluey train`; None = the base model alone.
    adapter: str | None = None
    # One message: print its reply and return; None = an interactive conversation.
    prompt: str | None = None
    # System prompt of the conversation ("" = none); None = the card's with system_from_card, else the one the
    # adapter was trained with (system_message.py), else none.
    system: str | None = None
    # Character card; None = the one beside the adapter's training data (named in the chat, "model" without).
    character: str | None = None
    # Use the card's default_system_prompt when no system prompt is given.
    system_from_card: bool = False
    # Weight dtype: auto (float32 on a CPU, bfloat16 on Metal), float32, bfloat16 or float16.
    dtype: str = "auto"
    # Sampling (generation_settings.py holds the defaults).
    settings: GenerationSettings = field(default_factory=GenerationSettings)


def run(args: ChatArgs, log=print) -> None:
    """Load the model (and adapter), resolve the card and system prompt, then answer once or chat."""
    from .character import card_for_adapter, load_card, system_prompt
    from .generation import load_for_generation
    from .special_tokens import stop_token_ids
    from .system_message import add_system, served_system

    card = load_card(args.character) if args.character else card_for_adapter(args.adapter)
    system = system_prompt(card, args.system, args.system_from_card, served_system(args.adapter, args.model))
    network, tokenizer, model_dir = load_for_generation(args.model, args.adapter, args.dtype, log=log)
    stops = stop_token_ids(model_dir, tokenizer)
    system_messages = add_system([], system)
    if args.prompt is not None:
        run_once(network, tokenizer, system_messages, args.prompt, args.settings, stops)
    else:
        run_chat(network, tokenizer, system_messages, args.settings, stops, speaker=card.name if card else "model")


HELP = "Type a message. /reset starts a new conversation, /quit leaves."


def _stream(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _footer(reply: Reply) -> str:
    if reply.finish_reason == "length":
        cut = ", cut back to the last full sentence" if reply.truncated else ""
        return f"[reply reached the {reply.n_tokens}-token limit{cut}]"
    return ""


def run_once(model, tokenizer, system_messages, prompt, settings: GenerationSettings, stop_ids) -> Reply:
    messages = [*system_messages, {"role": "user", "content": prompt}]
    reply = generate_reply(model, tokenizer, messages, settings, stop_ids, on_text=_stream)
    print()
    if _footer(reply):
        print(_footer(reply), file=sys.stderr)
    return reply


def run_chat(model, tokenizer, system_messages, settings: GenerationSettings, stop_ids, speaker: str = "model") -> None:
    print(HELP)
    history: list[dict] = []
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            print()
            return
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return
        if line == "/reset":
            history = []
            print("(new conversation)")
            continue
        if line == "/help":
            print(HELP)
            continue
        history.append({"role": "user", "content": line})
        _stream(f"{speaker.lower()}> ")
        reply = generate_reply(model, tokenizer, [*system_messages, *history], settings, stop_ids, on_text=_stream)
        print()
        if _footer(reply):
            print(_footer(reply))
        history.append({"role": "assistant", "content": reply.text})
