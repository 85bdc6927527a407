"""`mlx_bluey export --format peft`: an mlx_bluey LoRA adapter as a PEFT adapter for the Hugging Face base.

    mlx_bluey export adapters/bluey-gemma-3-270m-embedded --format peft --output exports/bluey-peft

The same low-rank update in PEFT's layout. mlx-lm's LoRA layer computes y = W x + scale * (x A) B with
A = lora_a (in x r) and B = lora_b (r x out); PEFT's computes y = W x + (lora_alpha / r) * B' A' x
with lora_A.weight A' (r x in) and lora_B.weight B' (out x r). So A' = A^T, B' = B^T and
lora_alpha = scale * r (rank 8, scale 20: lora_alpha 160). Only the adapted layers are listed
(target_modules by name, layers_to_transform when not every block has them). The result is
`adapter_model.safetensors` + `adapter_config.json`, which `peft.PeftModel.from_pretrained` loads on
the base model; tests/test_peft_export.py compares its logits with MLX's base + adapter.
DoRA and full fine-tunes have no such adapter: fuse them instead.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlx.core as mx

from .atomic import atomic_directory
from .checkpoints import ADAPTER_CONFIG, ADAPTER_FILE

# model.layers.3.self_attn.q_proj.lora_a -> (3, "self_attn.q_proj", "a")
LORA_NAME = re.compile(r"^model\.layers\.(\d+)\.(.+)\.lora_([ab])$")


class PeftExportError(ValueError):
    pass


def peft_tensors(weights: dict[str, mx.array]) -> tuple[dict[str, mx.array], list[int], list[str]]:
    """PEFT's tensors (transposed, renamed) from mlx-lm's, with the adapted layers and module names."""
    tensors, layers, modules = {}, set(), set()
    for name, value in weights.items():
        match = LORA_NAME.match(name)
        if not match:
            raise PeftExportError(f"{name}: not a LoRA weight (DoRA and full fine-tunes have no PEFT adapter)")
        layer, module, side = int(match[1]), match[2], match[3]
        key = f"base_model.model.model.layers.{layer}.{module}.lora_{side.upper()}.weight"
        tensors[key] = value.astype(mx.float32).T
        layers.add(layer)
        modules.add(module.rsplit(".", 1)[-1])
    return tensors, sorted(layers), sorted(modules)


def export_peft(adapter: str | Path, output: str | Path, base_model: str | None = None) -> Path:
    """Write the PEFT adapter of an mlx_bluey LoRA adapter directory; return the output directory."""
    adapter, output = Path(adapter), Path(output)
    config_path, weights_path = adapter / ADAPTER_CONFIG, adapter / ADAPTER_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise PeftExportError(f"{path}: not found (an adapter directory from `mlx_bluey train`)")
    config = json.loads(config_path.read_text())
    if config.get("fine_tune_type", "lora") != "lora":
        raise PeftExportError(f"{config_path}: fine_tune_type {config['fine_tune_type']!r}: only LoRA has a PEFT form")
    lora = config["lora_parameters"]
    tensors, layers, modules = peft_tensors(mx.load(str(weights_path)))
    n_layers = config.get("num_layers")
    peft_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model or config.get("base_model"),
        "r": lora["rank"],
        "lora_alpha": lora["scale"] * lora["rank"],  # PEFT scales by lora_alpha / r
        "lora_dropout": lora.get("dropout", 0.0),
        "target_modules": modules,
        "layers_to_transform": None if layers == list(range(len(layers))) and len(layers) == n_layers else layers,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "modules_to_save": None,
        "use_dora": False,
    }
    with atomic_directory(output) as work:
        mx.save_safetensors(str(work / "adapter_model.safetensors"), tensors, metadata={"format": "pt"})
        (work / "adapter_config.json").write_text(json.dumps(peft_config, indent=2))
    return output
