"""The headline figures over several `mlx_bluey evaluate` reports of one adapter, their replies pooled.

    .venv/bin/python scripts/pool_reports.py reports/eval-A-facts5 reports/eval-A-facts10 \\
        reports/eval-A-facts10-seed200 --output reports/pooled-A-facts

More samples of the same prompts on other seeds narrow a figure's interval; this puts them together.
Every figure is scorecard.headline's on all the reports' rows, so its bootstrap resamples prompts with
every sample of a prompt from every report (the replies to one prompt are not independent draws), so
with few prompts the interval narrows little however many samples are added. Distinct-n falls as
replies are added: its pooled value compares with no single report's.
Refused: reports of different base models or adapters (two adapter paths count as one adapter when
their adapters.safetensors have the same bytes; where a path is gone, --same-adapter says so), reports
scored against different training replies, and two reports with the same prompt on the same seed
(evaluate seeds sample s with seed + s: the same replies counted twice). Prints a Markdown table, and
writes it to OUTPUT/pooled.md with the reports' commands where --output is given.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlx_bluey import scorecard  # noqa: E402 (after the path)
from mlx_bluey.atomic import atomic_write_text  # noqa: E402
from mlx_bluey.compare import CompareError, load_result  # noqa: E402

SEED = re.compile(r"--seed[ =](\d+)")
DEFAULT_SEED = 0  # mlx_bluey evaluate's --seed default


def read(report: Path) -> dict:
    try:
        return load_result(report)  # compare's reader: the file there, with the headline figures
    except CompareError as error:
        raise SystemExit(str(error)) from None


def seed_of(result: dict) -> int:
    """The run's --seed: its config's, else read from its command (reports written before the config kept it)."""
    if "seed" in result.get("config", {}):
        return int(result["config"]["seed"])
    found = SEED.search(result["command"])
    return int(found.group(1)) if found else DEFAULT_SEED


def same_adapter(a: str | None, b: str | None) -> bool | None:
    """True or False where the two adapters can be told apart (the same path, or both files on disk), else None."""
    if a == b:
        return True
    if a is None or b is None:
        return False  # an adapter against the base model alone
    files = [Path(x) / "adapters.safetensors" for x in (a, b)]
    if not all(f.exists() for f in files):
        return None
    first, second = (hashlib.sha256(f.read_bytes()).hexdigest() for f in files)
    return first == second


def pool(reports: list[Path], results: list[dict], trust_adapter: bool = False) -> tuple[list[dict], dict]:
    """All reports' rows (checked, see the module docstring) and the training voice they were scored on."""
    first = results[0]
    seen = {}
    rows = []
    for report, result in zip(reports, results):
        if result["model"]["model_dir"] != first["model"]["model_dir"]:
            raise SystemExit(f"{report}: another base model than {reports[0]} ({result['model']['label']})")
        same = same_adapter(first["model"].get("adapter"), result["model"].get("adapter"))
        if same is False or (same is None and not trust_adapter):
            why = "another adapter" if same is False else "an adapter path not on disk to compare (--same-adapter)"
            raise SystemExit(f"{report}: {why} than {reports[0]} ({result['model'].get('adapter')})")
        if result["summary"]["training_marker_rates"] != first["summary"]["training_marker_rates"]:
            raise SystemExit(f"{report}: scored against other training replies than {reports[0]}")
        seed = seed_of(result)
        for row in result["rows"]:
            key = (row["id"], seed + row["sample"])  # evaluate seeds sample s of a prompt with seed + s
            if key in seen:
                raise SystemExit(f"{report}: {row['id']} on seed {seed + row['sample']} is in {seen[key]} too")
            seen[key] = report
            rows.append(row)
    return rows, {"marker_rates": first["summary"]["training_marker_rates"]}


def table(results: list[dict], rows: list[dict], reference: dict) -> str:
    pooled = scorecard.headline(rows, reference)
    each = [scorecard.headline(result["rows"], reference) for result in results]
    head = (
        "| figure | pooled (" + f"{len(rows)} replies) | " + " | ".join(str(i + 1) for i in range(len(results))) + " |"
    )
    lines = [head, "|---" * (len(results) + 2) + "|"]
    for figure in scorecard.FIGURES:
        cells = [scorecard.format_figure(pooled[figure.name])]
        cells += [scorecard.format_figure(e[figure.name]) for e in each]
        lines.append(f"| {figure.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path, help="directories written by mlx_bluey evaluate")
    parser.add_argument("--output", type=Path, help="directory for pooled.md")
    parser.add_argument(
        "--same-adapter", action="store_true", help="adapter paths not on disk hold the same adapter (you checked)"
    )
    args = parser.parse_args(argv)
    results = [read(r) for r in args.reports]  # each results.json read once
    rows, reference = pool(args.reports, results, args.same_adapter)
    text = table(results, rows, reference)
    print(text)
    if args.output:
        runs = "\n".join(
            f"{i + 1}. `{r}`: `{result['command']}`" for i, (r, result) in enumerate(zip(args.reports, results))
        )
        command = "python scripts/pool_reports.py " + " ".join(map(str, args.reports)) + f" --output {args.output}"
        args.output.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            args.output / "pooled.md",
            f"# Reports pooled\n\nMade by `{command}`.\n\nRuns:\n\n{runs}\n\n"
            "Value [95% bootstrap interval over prompts, every sample of a prompt together]:\n\n" + text + "\n",
        )


if __name__ == "__main__":
    main()
