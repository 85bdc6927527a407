"""PNG charts (matplotlib, no display needed), each written to a temporary name and renamed into place."""

from __future__ import annotations

import json
from pathlib import Path


def save_png(figure, path: Path) -> None:
    """Write a matplotlib figure to a temporary name, rename it into place, and free it."""
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=100)
    plt.close(figure)
    tmp.replace(path)


def plot_loss_curve(metrics_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot([r["step"] for r in rows], [r["train_loss"] for r in rows], label="train loss", alpha=0.7)
    val = [r for r in rows if "val_loss" in r]
    if val:
        axis.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="validation loss")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss per assistant token (nats)")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    save_png(figure, png_path)
