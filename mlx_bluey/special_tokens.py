"""Tokenizer facts every stage agrees on: which ids end a reply, which ids a reply may never contain.

Generation, evaluation, fuse (generation_config.json), the GGUF export and the API server read them from
here; no MLX import.
"""

from __future__ import annotations

import json
from pathlib import Path


def stop_token_ids(model_dir: Path | None, tokenizer) -> list[int]:
    """Every id that ends a reply: generation_config.json, config.json, the tokenizer, <end_of_turn>."""
    ids: set[int] = set()
    for name in ("generation_config.json", "config.json"):
        path = model_dir / name if model_dir else None
        if path and path.exists():
            value = json.loads(path.read_text()).get("eos_token_id")
            ids.update(value if isinstance(value, list) else [value] if value is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    if isinstance(end_of_turn, int) and end_of_turn != tokenizer.unk_token_id:
        ids.add(end_of_turn)
    return sorted(ids)


def suppressed_token_ids(tokenizer, stop_ids: list[int]) -> list[int]:
    """Special tokens a reply may never contain: every special added token except the stop ids.

    Gemma 3 has 6,249 (<pad>, <bos>, <mask>, <start_of_turn>, image tokens, 6,242 <unusedN>), none
    of them in any training reply. Unsuppressed, the tuned 270M sampled <unused55>/<unused91> where
    it wanted a turn boundary (often where min_new_tokens blocked the stop ids): 9 of the 276 replies
    in reports/experiments/short-replies and sweep.
    """
    stops = set(stop_ids)
    return sorted(i for i, token in tokenizer.added_tokens_decoder.items() if token.special and i not in stops)
