"""What `mlx_bluey export` is asked to do, as one typed value: the CLI builds it, the ONNX worker (in the
export environment, as JSON on its command line), the GGUF export and the PEFT export read it.

Imports nothing but the standard library: both environments load it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

FORMATS = ("onnx", "gguf", "peft")
# The variants each format writes when --variants is not given (the ONNX fp32 is an intermediate); ONNX adds
# VOCAB_VARIANT when vocabulary data is given.
DEFAULT_VARIANTS = {"onnx": ("int8", "q8", "q4", "fp16"), "gguf": ("f16", "q8_0", "Q4_K_M"), "peft": ()}
VOCAB_VARIANT = "int8-vocab"  # int8 with the output head cut to the character's token ids (export_env/onnx_vocab.py)
# Every ONNX variant the worker can write (export_env/onnx_export.VARIANTS, which a test holds to this list).
ONNX_VARIANTS = ("int8", VOCAB_VARIANT, "q8", "q4", "fp16", "fp32")
PATHS = ("source", "output", "parity_data", "vocabulary_data")


@dataclass(frozen=True)
class ExportArgs:
    # onnx, gguf: a fused model directory (`mlx_bluey fuse`); peft: a LoRA adapter directory.
    source: Path
    # The export directory, written under a temporary name and renamed when complete.
    output: Path
    # onnx, gguf or peft.
    kind: str = "onnx"
    # Variants to write; empty = DEFAULT_VARIANTS[kind].
    variants: tuple[str, ...] = ()
    # Held-out chat JSONL for the parity report (None: no parity).
    parity_data: Path | None = None
    # Held-out conversations whose logits are compared position by position with the fused model's.
    parity_texts: int = 8
    # Prompts decoded greedily by the fused model and by each variant.
    greedy_prompts: int = 4
    # New tokens per greedy prompt.
    greedy_tokens: int = 32
    # onnx, int8-vocab: JSONL conversations (the character's training split) whose token ids the output head keeps.
    vocabulary_data: Path | None = None
    # onnx, int8-vocab: also keep every id below this (Gemma's BPE numbers its pieces in merge order, frequent
    # ones first, and the byte-fallback pieces are among the first 500). 0: the data's ids only.
    vocabulary_common: int = 16384
    # onnx: also keep the fp32 graph as onnx/model.onnx.
    keep_fp32: bool = False
    # The command line, recorded in export.json.
    command: str = ""

    def chosen_variants(self) -> tuple[str, ...]:
        if self.variants:
            return self.variants
        extra = (VOCAB_VARIANT,) if self.kind == "onnx" and self.vocabulary_data is not None else ()
        return DEFAULT_VARIANTS[self.kind] + extra

    def to_json(self) -> str:
        values = asdict(self)
        for key in PATHS:
            values[key] = None if values[key] is None else str(values[key])
        return json.dumps(values)

    @classmethod
    def from_json(cls, text: str) -> ExportArgs:
        values = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown export arguments {unknown}")
        for key in PATHS:
            if values.get(key) is not None:
                values[key] = Path(values[key])
        values["variants"] = tuple(values.get("variants", ()))
        return cls(**values)
