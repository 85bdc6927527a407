"""scripts/held_out_losses.py: each adapter's held-out loss on each reference, as evaluate measures it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import chat, tiny_train_config, write_jsonl

SCRIPT = Path(__file__).parent.parent / "scripts" / "held_out_losses.py"


def test_each_reference_and_line_range_gets_evaluates_loss(tiny_model_dir, tmp_path):
    from mlx_bluey.evaluate import held_out_loss
    from mlx_bluey.generation import load_for_generation
    from mlx_bluey.train import train

    rows = [chat(f"hi {i}", f"Hooray! Game number {i} with Bingo!") for i in range(8)]
    data = write_jsonl(tmp_path / "data" / "train.jsonl", rows).parent
    write_jsonl(data / "valid.jsonl", rows[:4])
    adapter = tmp_path / "adapter"
    train(tiny_train_config(tiny_model_dir, data, adapter, iters=2, system_prompt="You are Bluey."), log=lambda _: None)
    reference = write_jsonl(tmp_path / "test.jsonl", [chat("yo", "G'day!"), rows[5], chat("bye", "See ya, mate!")])
    out = tmp_path / "losses"
    command = [sys.executable, str(SCRIPT), "--adapter", str(adapter), "--reference", str(reference)]
    command += ["--reference", f"{reference}:2-3", "--output", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    figures = json.loads((out / "held_out.json").read_text())["results"][str(adapter)]

    # what evaluate measures: the adapter's trained system message before each conversation
    model, tokenizer, _ = load_for_generation(None, str(adapter), log=lambda _: None)
    model.eval()
    whole = held_out_loss(model, tokenizer, reference, system="You are Bluey.")
    lines = write_jsonl(tmp_path / "lines.jsonl", reference.read_text().splitlines()[1:3])
    part = held_out_loss(model, tokenizer, lines, system="You are Bluey.")
    assert figures[str(reference)]["loss"] == pytest.approx(whole["loss"], rel=1e-6)
    assert figures[f"{reference}:2-3"]["loss"] == pytest.approx(part["loss"], rel=1e-6)
    assert figures[f"{reference}:2-3"]["tokens"] == part["tokens"] < whole["tokens"]
    assert part["loss"] != pytest.approx(whole["loss"], rel=1e-3)  # the range is not the whole file
    assert (out / "held_out.md").read_text().startswith("# Held-out loss")
