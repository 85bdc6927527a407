"""Side-by-side table of two or more `mlx_bluey evaluate` reports (e.g. base vs fine-tuned).

    .venv/bin/python scripts/compare_reports.py reports/eval-270m-base reports/eval-270m-bluey \\
        --output reports/before-after.md

Reads each directory's results.json and prints (and writes) one Markdown table, a row per metric
and a column per report, plus the command lines that produced the reports.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def flatten(summary: dict, prefix: str = "") -> dict:
    rows = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.update(flatten(value, f"{name}: "))
        else:
            rows[name] = value
    return rows


def likelihood_rows(result: dict) -> dict:
    return {f"held-out loss ({name})": values["loss"] for name, values in result.get("likelihood", {}).items()}


def render(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def compare(directories: list[Path]) -> str:
    results = [json.loads((d / "results.json").read_text()) for d in directories]
    tables = [{**flatten(r["summary"]), **likelihood_rows(r)} for r in results]
    keys = list(dict.fromkeys(k for t in tables for k in t))
    lines = ["| metric | " + " | ".join(r["model"]["label"] for r in results) + " |", "|---|" + "---|" * len(results)]
    lines += [f"| {k} | " + " | ".join(render(t.get(k)) for t in tables) + " |" for k in keys]
    lines += ["", "Made by:", ""] + [f"- `{r['command']}`" for r in results]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    table = compare(args.reports)
    print(table, end="")
    if args.output:
        args.output.write_text(table)


if __name__ == "__main__":
    main()
