"""What one `mlx_bluey evaluate` run is given: a typed record with a comment per field, no MLX import.

The CLI's options take their defaults from here and evaluate.run takes one EvaluationArgs (it took 16
positional and keyword parameters).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .character import CharacterCard
from .generation_settings import GenerationSettings

# Token budget of prompts that ask for a long answer. A long reply is over 120 words (LONG_WORDS), about
# 160 Gemma tokens; the longest training replies (~250 words) take ~330. At 200 tokens 31 of 36 long
# replies of the 2026-11 report were cut by the limit (reports/eval-270m-bluey); 512 lets them finish.
LONG_REPLY_TOKENS = 512
PROMPTS_FILE = "data/eval/prompts.jsonl"  # the held-out prompt set (tests/test_eval_set.py keeps it held out)
ASSISTANT_REPLIES = "data/eval/assistant_replies.jsonl"  # the in-character classifier's other side


@dataclass
class EvaluationArgs:
    output: str | Path  # directory for results.json, report.md and lengths.png
    reference: str | Path  # held-out conversations for the loss (evaluate.reference_files picks test.jsonl)
    train_data: str | Path  # training conversations: length, voice and overlap references, few-shot examples
    card: CharacterCard  # voice and break-character markers, facts (the fact prompts come from here)
    model: str | None = None  # base model: registry name, HF id, directory; None = the adapter's base or the 270M
    adapter: str | Path | None = None  # adapter directory; None = the base model alone
    prompts_file: str | Path = PROMPTS_FILE  # evaluation prompts (JSONL: id, kind, expect, messages)
    samples: int = 3  # replies per prompt; sample s of every prompt samples with seed + s
    limit: int | None = None  # only the first N prompts (quick runs); None = all
    seed: int = 0  # the first sample's seed
    base_likelihood: bool = True  # with an adapter: also the held-out loss of the base model alone
    settings: GenerationSettings = field(default_factory=GenerationSettings)  # sampling (seed is set per sample)
    few_shot: int = 0  # training conversations put before every prompt (the prompting-instead-of-tuning baseline)
    # a system message before every prompt that has none of its own (and in the held-out loss); None = none.
    # The CLI resolves it: --system, --system-from-card, else the one the adapter was trained with.
    system: str | None = None
    long_reply_tokens: int = LONG_REPLY_TOKENS  # max_new_tokens of the prompts that ask for a long answer
    assistant_replies: str | Path | None = None  # generic replies for the classifier; None = no classifier
