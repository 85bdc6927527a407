"""The interactive side of `mlx_bluey generate`: a conversation that keeps its history.

Commands typed at the prompt: /reset forgets the conversation, /quit (or Ctrl-D) leaves.
"""

from __future__ import annotations

import sys

from .generate import GenerationSettings, Reply, generate_reply

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
