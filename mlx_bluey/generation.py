"""Generation, shared by every verb that makes replies: the generate verb (chat.py), evaluate, serve --api,
data pairs and the benchmarks. Loads a base model, base + adapter, or a fused model, and decodes one reply.

    model, tokenizer, model_dir = load_for_generation(None, "adapters/bluey")
    reply = generate_reply(model, tokenizer, messages, GenerationSettings(), stop_token_ids(model_dir, tokenizer))

Two lessons from the old PyTorch project are built in:
- `min_new_tokens` blocks *every* stop id (<eos> = 1, <end_of_turn> = 106 and whatever the model's
  generation config lists) until N tokens exist; blocking only <eos> let replies stop at 7-12 words.
- A reply is never shown cut mid-word: text streams a whole word at a time, and at the token limit
  the reply ends at its last finished sentence and is marked truncated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx

from .chat_format import prompt_ids
from .generation_settings import REPETITION_CONTEXT_TOKENS, GenerationSettings  # noqa: F401 (re-exported)
from .special_tokens import stop_token_ids, suppressed_token_ids  # noqa: F401 (re-exported)
from .text import last_sentence_end

# A sentence ends at . ! ? or … possibly followed by closing quotes or brackets.
# In the last this-many tokens before the limit, text after the last full sentence is held back,
# so that a reply cut by the limit can end on a finished sentence. 48 tokens is ~36 words: longer
# than nearly every sentence a six-year-old says.
HOLD_BACK_TOKENS = 48


@dataclass
class Reply:
    text: str  # what the user sees (ends on a finished sentence when truncated)
    tokens: list[int] = field(default_factory=list)
    finish_reason: str = "stop"  # "stop": the model ended its turn; "length": hit max_new_tokens; "cancelled"
    truncated: bool = False  # text was cut back to the last finished sentence

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)


def suppress_tokens(ids: list[int]):
    """Logits processor: these ids always get -inf (ids past the model's vocabulary are ignored)."""
    kept: dict[int, mx.array] = {}  # vocabulary size -> index array, built on the first call

    def processor(tokens: mx.array, logits: mx.array) -> mx.array:
        vocab = logits.shape[-1]
        if vocab not in kept:
            kept[vocab] = mx.array([i for i in ids if i < vocab], dtype=mx.int32)
        if kept[vocab].size:
            logits[..., kept[vocab]] = -float("inf")
        return logits

    return processor


def block_stops_until(min_new_tokens: int, prompt_length: int, stop_ids: list[int]):
    """Logits processor: stop ids get -inf while fewer than min_new_tokens tokens were generated."""
    blocked = mx.array(stop_ids)

    def processor(tokens: mx.array, logits: mx.array) -> mx.array:
        generated = tokens.size - prompt_length
        if generated < min_new_tokens:
            logits[..., blocked] = -float("inf")
        return logits

    return processor


def trim_to_sentence(text: str) -> tuple[str, bool]:
    """Text cut back to its last finished sentence (or last whole word); True if anything was cut."""
    stripped = text.rstrip()
    end = last_sentence_end(stripped)
    if end == len(stripped):
        return stripped, False
    if end == 0:  # not one finished sentence: fall back to the last whole word
        end = stripped.rfind(" ")
        end = end if end > 0 else len(stripped)
    return stripped[:end].rstrip(), True


def generate_reply(
    model, tokenizer, messages, settings: GenerationSettings, stop_ids, on_text=None, cancel=None
) -> Reply:
    """Generate one assistant turn for `messages`; stream shown text through on_text(str).

    cancel: a threading.Event checked before every token (the API server sets it when its client hangs up).
    """
    from mlx_lm.generate import generate_step

    from .decode_head import decoding_model
    from .sampling import make_repetition_penalty, make_sampler

    if settings.seed is not None:
        mx.random.seed(settings.seed)
    prompt = prompt_ids(tokenizer, messages)
    sampler = make_sampler(settings.temperature, settings.top_p, settings.top_k, settings.min_p)
    processors = []
    if settings.repetition_penalty != 1.0:
        processors.append(make_repetition_penalty(settings.repetition_penalty, REPETITION_CONTEXT_TOKENS, len(prompt)))
    if settings.min_new_tokens > 0:
        processors.append(block_stops_until(settings.min_new_tokens, len(prompt), stop_ids))
    processors.append(suppress_tokens(suppressed_token_ids(tokenizer, stop_ids)))

    stops = set(stop_ids)
    tokens: list[int] = []
    shown = 0  # characters of the decoded text already passed to on_text
    finish = "length"
    for token, _ in generate_step(
        mx.array(prompt),
        decoding_model(model),
        max_tokens=settings.max_new_tokens,
        sampler=sampler,
        logits_processors=processors,
    ):
        if token in stops:
            finish = "stop"
            break
        if cancel is not None and cancel.is_set():
            finish = "cancelled"
            break
        tokens.append(token)
        if on_text is None:  # nothing streams (evaluation): decode once at the end
            continue
        text = tokenizer.decode(tokens)
        remaining = settings.max_new_tokens - len(tokens)
        # Show whole words only; near the limit, only whole sentences.
        limit = last_sentence_end(text) if remaining <= HOLD_BACK_TOKENS else text.rfind(" ")
        if limit > shown:
            on_text(text[shown:limit])
            shown = limit
    text = tokenizer.decode(tokens)
    truncated = False
    if finish == "length":
        text, truncated = trim_to_sentence(text)
    else:
        text = text.strip()
    if on_text and len(text) > shown:
        on_text(text[shown:])
    return Reply(text=text, tokens=tokens, finish_reason=finish, truncated=truncated)


def base_model_of(adapter: str | Path) -> str | None:
    """The base model an adapter was trained on (train writes it into adapter_config.json); None: the default."""
    from .checkpoints import ADAPTER_CONFIG

    config_path = Path(adapter) / ADAPTER_CONFIG
    return json.loads(config_path.read_text()).get("base_model") if config_path.exists() else None


def load_for_generation(model: str | None, adapter: str | None, dtype: str = "auto", log=print):
    """Base model (registry name, HF id, directory or embedded default), plus an optional adapter."""
    from mlx_lm.tuner.utils import load_adapters
    from mlx_lm.utils import load_model
    from transformers import AutoTokenizer

    from . import runtime
    from .models import resolve_model

    if model is None and adapter is not None:
        model = base_model_of(adapter)
    model_dir = resolve_model(model, log=log)
    network, _ = load_model(model_dir)
    network.set_dtype(runtime.resolve_dtype(dtype))
    if adapter is not None:
        from .checkpoints import ADAPTER_FILE

        if not (Path(adapter) / ADAPTER_FILE).exists():
            raise FileNotFoundError(f"{adapter}: no {ADAPTER_FILE} (train one with `mlx_bluey train`)")
        load_adapters(network, adapter)
    network.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    return network, tokenizer, model_dir
