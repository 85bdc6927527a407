"""scripts/experiments.py on the tiny model: every treatment measured on the same prompts, saved."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_short_reply_experiment_saves_a_table_per_treatment(tiny_model_dir, tmp_path):
    out = tmp_path / "short"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "experiments.py"),
            "short-replies",
            "--model",
            str(tiny_model_dir),
            "--per-kind",
            "1",
            "--max-new-tokens",
            "20",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((out / "results.json").read_text())
    assert list(data["treatments"]) == [
        "defaults",
        "min_new_tokens=16",
        "min_new_tokens=48",
        "temperature=0.3",
        "temperature=1.0",
        "repetition_penalty=1.0",
        "repetition_penalty=1.3",
    ]
    assert data["prompts"] == 3 and data["kinds"] == ["short", "medium", "long"]
    for entry in data["treatments"].values():
        assert [r["id"] for r in entry["rows"]] == ["short-02", "medium-01", "long-01"]  # same prompts everywhere
        assert entry["summary"]["replies"] == 3
    # min-new-tokens blocks every stop id: no reply under 16 tokens; 48 > the 20-token limit: all hit it
    assert all(r["tokens"] >= 16 for r in data["treatments"]["min_new_tokens=16"]["rows"])
    assert all(r["finish_reason"] == "length" for r in data["treatments"]["min_new_tokens=48"]["rows"])
    assert data["treatments"]["min_new_tokens=48"]["settings"]["min_new_tokens"] == 48
    report = (out / "report.md").read_text()
    assert report.count("\n| ") == 1 + 7 and "| min_new_tokens=16 |" in report  # header + one row per treatment
    assert (out / "chart.png").stat().st_size > 10_000
