"""`mlx_bluey compare`: evaluations side by side, each difference against the first with its noise.

    mlx_bluey compare reports/eval-270m-base reports/eval-270m-fewshot reports/eval-270m-bluey \\
        --output reports/compare-270m

Reads each directory's results.json (written by `mlx_bluey evaluate`). For every headline figure
(scorecard.FIGURES) and every run after the first, the difference from the first run is computed on
the prompts both answered, with a 95% paired bootstrap interval (the same prompt draw for both runs);
it is "outside the noise" when that interval excludes 0. Writes OUTPUT/compare.md and
OUTPUT/compare.png (each figure with its interval, a bar per run). The Markdown ends with example
replies: the first EXAMPLES_PER_KIND prompts of each kind that every run answered, sample 0 (the same
prompt and seed), each run's reply side by side with the checks it failed.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import scorecard
from .atomic import atomic_write_text
from .plots import save_png

EXAMPLES_PER_KIND = 2  # prompts per kind shown with every run's reply
EXAMPLE_CHARACTERS = 400  # a longer reply is shown cut here, marked with "..."


class CompareError(ValueError):
    """A results file that cannot be compared; the message names it."""


def load_result(directory: Path) -> dict:
    path = directory / "results.json"
    if not path.exists():
        raise CompareError(f"{path}: not found (a directory written by `mlx_bluey evaluate`)")
    result = json.loads(path.read_text())
    if "headline" not in result.get("summary", {}):
        raise CompareError(f"{path}: made before the headline figures existed; run `mlx_bluey evaluate` again")
    return result


def compare(directories: list[Path], resamples: int = scorecard.RESAMPLES) -> dict:
    results = [load_result(d) for d in directories]
    reference = {"marker_rates": results[0]["summary"]["training_marker_rates"]}
    comparisons = []
    for directory, result in zip(directories[1:], results[1:]):
        if result["summary"]["training_marker_rates"] != reference["marker_rates"]:
            raise CompareError(f"{directory}: scored against other training data than {directories[0]}")
        differences = {
            figure.name: scorecard.paired_difference(results[0]["rows"], result["rows"], figure, reference, resamples)
            for figure in scorecard.FIGURES
        }
        comparisons.append({"run": str(directory), "differences": differences})
    return {
        "runs": [
            {
                "directory": str(d),
                "label": r["model"]["label"],
                "command": r["command"],
                "headline": r["summary"]["headline"],
            }
            for d, r in zip(directories, results)
        ],
        "comparisons": comparisons,
        "examples": examples([r["rows"] for r in results]),
    }


def examples(runs_rows: list[list[dict]], per_kind: int = EXAMPLES_PER_KIND) -> list[dict]:
    """Sample 0 of the first `per_kind` prompts of each kind that every run answered (first run's order)."""
    by_run = [{row["id"]: row for row in rows if row.get("sample") == 0} for rows in runs_rows]
    shown: dict[str, int] = {}
    picked = []
    for prompt_id, row in by_run[0].items():
        if all(prompt_id in rows for rows in by_run) and shown.get(row["kind"], 0) < per_kind:
            shown[row["kind"]] = shown.get(row["kind"], 0) + 1
            replies = [{"text": rows[prompt_id]["text"], "failed": failed_checks(rows[prompt_id])} for rows in by_run]
            picked.append({"id": prompt_id, "kind": row["kind"], "prompt": row["prompt_text"], "replies": replies})
    return picked


def failed_checks(row: dict) -> list[str]:
    """What the evaluation held against one reply (the row's own flags)."""
    failed = ["unfinished"] if row.get("complete") is False else []
    if phrases := row.get("assistant_phrases"):  # what the in_character figure counts
        failed.append(f"assistant talk: {', '.join(phrases)}")
    if row.get("fact_right") is False:
        failed.append("fact wrong")
    return failed


def to_markdown(report: dict) -> str:
    runs = report["runs"]
    lines = ["# Evaluations compared", "", "Runs (the first is the baseline of every difference):", ""]
    lines += [f"{i + 1}. **{run['label']}** (`{run['directory']}`): `{run['command']}`" for i, run in enumerate(runs)]
    lines += [
        "",
        "Value [95% interval over prompts] per run:",
        "",
        "| figure | " + " | ".join(f"{i + 1}" for i in range(len(runs))) + " |",
        "|---|" + "---|" * len(runs),
    ]
    for figure in scorecard.FIGURES:
        cells = [scorecard.format_figure(run["headline"][figure.name]) for run in runs]
        lines.append(
            f"| {figure.name} ({'higher' if figure.higher_is_better else 'lower'} is better) | "
            + " | ".join(cells)
            + " |"
        )
    for i, comparison in enumerate(report["comparisons"]):
        lines += [
            "",
            f"## Run {i + 2} minus run 1 (paired, the prompts both answered)",
            "",
            "| figure | difference [95% interval] | outside the noise | better |",
            "|---|---|---|---|",
        ]
        for figure in scorecard.FIGURES:
            d = comparison["differences"][figure.name]
            if d["difference"] is None:
                lines.append(f"| {figure.name} | n/a | - | - |")
                continue
            later_is_better = (d["difference"] > 0) == figure.higher_is_better
            verdict = (f"run {i + 2}" if later_is_better else "run 1") if d["outside_noise"] else "neither"
            lines.append(
                f"| {figure.name} | {d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] | "
                f"{'yes' if d['outside_noise'] else 'no'} | {verdict} |"
            )
    if report.get("examples"):
        lines += ["", "## Example replies (sample 0: the same prompt and seed in every run)"]
        for example in report["examples"]:
            lines += ["", f"**{example['id']}** ({example['kind']}): {_quote(example['prompt'])}", ""]
            for i, reply in enumerate(example["replies"]):
                text = reply["text"]
                if len(text) > EXAMPLE_CHARACTERS:
                    text = text[:EXAMPLE_CHARACTERS].rstrip() + "..."
                failed = f" *({', '.join(reply['failed'])})*" if reply["failed"] else ""
                lines.append(f"- run {i + 1}{failed}: {_quote(text)}")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    """One Markdown line: newlines as spaces."""
    return " ".join(text.split())


def chart(report: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = scorecard.FIGURES
    runs = report["runs"]
    plot, axes = plt.subplots(1, len(figures), figsize=(2.2 * len(figures), 3.6))
    for axis, figure in zip(axes, figures):
        for i, run in enumerate(runs):
            value = run["headline"][figure.name]
            if value["value"] is None:
                continue
            error = (
                [[value["value"] - value["low"]], [value["high"] - value["value"]]]
                if value["low"] is not None
                else None
            )
            axis.bar(i, value["value"], yerr=error, capsize=3, color=f"C{i}", label=run["label"])
        axis.set_title(figure.name.replace("_", " "), fontsize=8)
        axis.set_xticks([])
        axis.tick_params(labelsize=7)
    axes[0].legend(fontsize=6, loc="lower left")
    plot.tight_layout()
    save_png(plot, png)


def run(directories: list[str], output: str) -> str:
    report = compare([Path(d) for d in directories])
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    text = to_markdown(report)
    atomic_write_text(out / "compare.json", json.dumps(report, indent=2))
    atomic_write_text(out / "compare.md", text + "\n![each figure with its interval](compare.png)\n")
    chart(report, out / "compare.png")
    return text
