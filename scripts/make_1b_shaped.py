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

# google/gemma-3-1b-pt's config.json (the same numbers as mlx_bluey/bench.py's GEMMA3_1B_CONFIG)
CONFIG = dict(
    vocab_size=262144,
    hidden_size=1152,
    intermediate_size=6912,
    num_hidden_layers=26,
    num_attention_heads=4,
    num_key_value_heads=1,
    head_dim=256,
    rms_norm_eps=1e-6,
    rope_theta=1_000_000.0,
    rope_local_base_freq=10_000.0,
    query_pre_attn_scalar=256,
    sliding_window=512,
    sliding_window_pattern=6,
    max_position_embeddings=32768,
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
