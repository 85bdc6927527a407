"""mlx_bluey: teach a small Gemma 3 a character's personality with MLX LoRA."""

__version__ = "0.1.0"
