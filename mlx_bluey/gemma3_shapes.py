"""Gemma 3 1B's shapes, for the "1b-shaped" random-weight model that measures the 1B's speed and memory (bench,
the all-reduce benchmark) and exports at the 1B's size (scripts/make_1b_shaped.py, in the export environment)
without the gated weights. No imports: both environments read it.
"""

# google/gemma-3-1b-pt's config.json, the fields mlx-lm's gemma3_text reads. 999,885,952 parameters with the
# embedding tied: the 262,144 x 1,152 embedding (301,989,888) + 26 blocks x 26,842,112 (attention
# 1,152 x (4 + 1 + 1) x 256 + 1,024 x 1,152 = 2,949,120; MLP 3 x 1,152 x 6,912 = 23,887,872; four norms of
# 1,152 and two of 256 = 5,120) + the final norm's 1,152.
GEMMA3_1B_CONFIG = {
    "model_type": "gemma3_text",
    "hidden_size": 1152,
    "intermediate_size": 6912,
    "num_hidden_layers": 26,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "head_dim": 256,
    "rms_norm_eps": 1e-6,
    "vocab_size": 262144,
    "rope_theta": 1_000_000.0,
    "rope_local_base_freq": 10_000.0,
    "query_pre_attn_scalar": 256,
    "sliding_window": 512,
    "sliding_window_pattern": 6,
    "max_position_embeddings": 32768,
}
