"""scripts/pool_reports.py: one adapter's reports on other seeds pooled into one figure with its interval."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parent.parent / "scripts" / "pool_reports.py"
RATES = {"Mum": 1.0}


def _row(prompt: str, sample: int, right: bool) -> dict:
    text = "Six!" if right else "Four!"
    return {
        "id": prompt,
        "kind": "facts",
        "expect": "short",
        "sample": sample,
        "text": text,
        "words": 1,
        "complete": True,
        "fact_right": right,
        "assistant_phrases": [],
        "in_character_probability": 0.9,
        "markers": {},
        "prompt_markers": [],
    }


def _report(directory: Path, seed: int, rights: list[bool], adapter: str = "/gone/adapter", samples: int = 1) -> Path:
    directory.mkdir()
    rows = [_row(f"facts-{i}", s, right) for i, right in enumerate(rights) for s in range(samples)]
    result = {
        "command": f"mlx_bluey evaluate --adapter {adapter} --samples 1 --seed {seed} --output {directory}",
        "config": {"seed": seed},
        "model": {"label": "tiny", "model_dir": "/models/tiny", "adapter": adapter},
        "summary": {"training_marker_rates": RATES, "headline": {}},
        "rows": rows,
    }
    (directory / "results.json").write_text(json.dumps(result))
    return directory


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def test_pooled_fact_share_counts_every_report(tmp_path: Path) -> None:
    one = _report(tmp_path / "seed0", 0, [True, True, False])  # 2 of 3
    two = _report(tmp_path / "seed100", 100, [True, False, False])  # 1 of 3
    done = _run(str(one), str(two), "--same-adapter", "--output", str(tmp_path / "pooled"))
    assert done.returncode == 0, done.stderr
    fact_row = next(line for line in done.stdout.splitlines() if line.startswith("| fact_accuracy"))
    cells = [cell.strip() for cell in fact_row.strip("|").split("|")]
    assert cells[1].startswith("0.500 [")  # 3 of 6
    assert cells[2].startswith("0.667 [") and cells[3].startswith("0.333 [")
    assert "| figure | pooled (6 replies) | 1 | 2 |" in done.stdout
    assert "--seed 100" in (tmp_path / "pooled" / "pooled.md").read_text()


def test_the_same_seed_twice_is_refused(tmp_path: Path) -> None:
    one = _report(tmp_path / "a", 100, [True], samples=2)  # seeds 100 and 101
    two = _report(tmp_path / "b", 101, [False])
    done = _run(str(one), str(two), "--same-adapter")
    assert done.returncode != 0
    assert f"{two}: facts-0 on seed 101 is in {one} too" in done.stderr


def test_adapters_not_on_disk_need_the_flag(tmp_path: Path) -> None:
    one = _report(tmp_path / "a", 0, [True], adapter="/gone/a")
    two = _report(tmp_path / "b", 100, [True], adapter="/gone/b")
    done = _run(str(one), str(two))
    assert done.returncode != 0
    assert "an adapter path not on disk to compare (--same-adapter)" in done.stderr


def test_adapters_with_other_bytes_are_refused(tmp_path: Path) -> None:
    for name, content in (("a", b"one"), ("b", b"two")):
        (tmp_path / f"adapter-{name}").mkdir()
        (tmp_path / f"adapter-{name}" / "adapters.safetensors").write_bytes(content)
    one = _report(tmp_path / "a", 0, [True], adapter=str(tmp_path / "adapter-a"))
    two = _report(tmp_path / "b", 100, [True], adapter=str(tmp_path / "adapter-b"))
    done = _run(str(one), str(two), "--same-adapter")
    assert done.returncode != 0
    assert "another adapter than" in done.stderr


def test_a_directory_without_results_is_named(tmp_path: Path) -> None:
    one = _report(tmp_path / "a", 0, [True])
    done = _run(str(one), str(tmp_path / "missing"), "--same-adapter")
    assert done.returncode != 0
    assert f"{tmp_path / 'missing' / 'results.json'}: not found" in done.stderr
