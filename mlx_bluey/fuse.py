"""`mlx_bluey fuse`: merge an adapter into its base weights and write a Hugging Face model directory.

    mlx_bluey fuse --adapter adapters/bluey-gemma-3-270m-embedded --output fused/bluey-270m

Each LoRA layer becomes one plain weight, W + scale * B^T A^T (DoRA layers fuse their magnitude too),
computed in float32. The directory holds what transformers (and the export stage) load as is:
config.json, model.safetensors, generation_config.json (every stop id: 1 and 106 for Gemma 3; the
special tokens generation suppresses; the CLI's sampling defaults), tokenizer.json and
tokenizer_config.json with the training chat template inside, the base's tokenizer.model (the
SentencePiece vocabulary the GGUF export hands llama.cpp), character.json (name, description, system
prompt from the adapter's character card, for the web page), and the base model's licence files. It is
written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

from .atomic import atomic_directory
from .chat_format import CHAT_TEMPLATE
from .generation_settings import generation_config_defaults
from .special_tokens import suppressed_token_ids

LICENCE_FILES = ("GEMMA_TERMS.html", "NOTICE.md", "LICENSE", "USE_POLICY.md")


def fuse_model(model) -> int:
    """Replace every adapter layer in place by its fused linear; return how many were fused."""
    fused = [(name, module.fuse(dequantize=True)) for name, module in model.named_modules() if hasattr(module, "fuse")]
    if fused:
        model.update_modules(tree_unflatten(fused))
    return len(fused)


def write_hf_directory(
    model, model_dir: Path, output: Path, stop_ids: list[int], dtype=mx.float32, character: dict | None = None
) -> Path:
    from transformers import AutoTokenizer

    with atomic_directory(output) as work:
        # mlx-lm's Gemma 3 already uses the Hugging Face names, and holds no lm_head when it is tied.
        weights = {name: value.astype(dtype) for name, value in tree_flatten(model.parameters())}
        mx.save_safetensors(str(work / "model.safetensors"), weights, metadata={"format": "pt"})
        config = json.loads((model_dir / "config.json").read_text())
        config["torch_dtype"] = {mx.float32: "float32", mx.bfloat16: "bfloat16", mx.float16: "float16"}[dtype]
        config.pop("quantization", None)
        config.pop("quantization_config", None)
        config["eos_token_id"] = stop_ids
        (work / "config.json").write_text(json.dumps(config, indent=2))
        generation = {}
        if (model_dir / "generation_config.json").exists():
            generation = json.loads((model_dir / "generation_config.json").read_text())
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        generation["eos_token_id"] = stop_ids
        generation.update(generation_config_defaults())  # the CLI's sampling defaults (generation_settings.py)
        # The special tokens no reply contains, as `mlx_bluey generate` suppresses them; transformers
        # and Transformers.js apply this key in generate() too (SuppressTokensLogitsProcessor).
        generation["suppress_tokens"] = suppressed_token_ids(tokenizer, stop_ids)
        (work / "generation_config.json").write_text(json.dumps(generation, indent=2))
        tokenizer.chat_template = CHAT_TEMPLATE
        tokenizer.save_pretrained(str(work))
        config_path = work / "tokenizer_config.json"
        tokenizer_config = json.loads(config_path.read_text())
        tokenizer_config["chat_template"] = CHAT_TEMPLATE  # Transformers.js reads it from here
        # transformers 5 writes this as a list, which transformers 4 (the export environment) cannot read;
        # the same tokens are special in tokenizer.json's added_tokens, so the ids do not change.
        tokenizer_config.pop("extra_special_tokens", None)
        config_path.write_text(json.dumps(tokenizer_config, indent=2, ensure_ascii=False))
        if character:  # the web page's title and optional system prompt (passed on by `mlx_bluey export`)
            (work / "character.json").write_text(json.dumps(character, indent=2, ensure_ascii=False))
        # tokenizer.model: the SentencePiece vocabulary the GGUF export hands llama.cpp (gguf_export.py)
        for name in (*LICENCE_FILES, "tokenizer.model"):
            if (model_dir / name).exists():
                shutil.copy(model_dir / name, work / name)
    return output


def fuse(adapter: str, output: str, model: str | None = None, log=print) -> Path:
    from .character import card_for_adapter
    from .generation import load_for_generation
    from .special_tokens import stop_token_ids
    from .system_message import FUSED_KEY, trained_system

    network, tokenizer, model_dir = load_for_generation(model, adapter, dtype="float32", log=log)
    count = fuse_model(network)
    card = card_for_adapter(adapter)
    character = (
        {"name": card.name, "description": card.description, "default_system_prompt": card.default_system_prompt}
        if card
        else {}
    )
    if trained := trained_system(adapter):  # what the page, the Modelfile and serve --api then send
        character[FUSED_KEY] = trained
    path = write_hf_directory(
        network, model_dir, Path(output), stop_token_ids(model_dir, tokenizer), character=character or None
    )
    log(f"fused {count} adapter layers of {adapter} into {model_dir.name}: {path}")
    return path
