"""Write a Hugging Face directory with Gemma 3 1B's shapes and random weights (run in .venv-export).

    .venv-export/bin/python scripts/make_1b_shaped.py OUTPUT [TOKENIZER_DIR]

For checking that the 1B *size* exports and loads in the browser (the 2 GB protobuf limit, memory per
variant) without the gated google/gemma-3-1b weights: speed and memory depend on shapes, not values.
The tokenizer (and chat template) is copied from TOKENIZER_DIR (default: the embedded 270M's
directory, under $MLX_BLUEY_CACHE when set: mlx_bluey.embedded.embedded_model_dir).
"""

import json
import shutil
import sys
from pathlib import Path

import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mlx_bluey.embedded import embedded_model_dir  # noqa: E402 (numpy only: importable in .venv-export)
from mlx_bluey.gemma3_shapes import GEMMA3_1B_CONFIG  # noqa: E402 (no imports)

# mlx_bluey/gemma3_shapes.py's shapes, with what transformers' Gemma3TextConfig also wants
CONFIG = {k: v for k, v in GEMMA3_1B_CONFIG.items() if k != "model_type"} | dict(
    tie_word_embeddings=True,
    bos_token_id=2,
    eos_token_id=[1, 106],
    pad_token_id=0,
    rope_scaling=None,
)

out = Path(sys.argv[1])
tokenizer_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else embedded_model_dir()
torch.manual_seed(0)
model = Gemma3ForCausalLM(Gemma3TextConfig(**CONFIG)).eval()
model.save_pretrained(out, safe_serialization=True)
for name in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(tokenizer_dir / name, out / name)
config_path = out / "tokenizer_config.json"
tokenizer_config = json.loads(config_path.read_text())
tokenizer_config.pop("extra_special_tokens", None)  # transformers 5's list form; see fuse.py
config_path.write_text(json.dumps(tokenizer_config, indent=2, ensure_ascii=False))
(out / "generation_config.json").write_text(
    json.dumps({"eos_token_id": [1, 106], "bos_token_id": 2, "pad_token_id": 0})
)
print(f"wrote {out}: {sum(p.numel() for p in model.parameters()) / 1e9:.3f}B parameters")
