"""Base (-pt) vs instruction-tuned (-it): same data, same config, two (or more) base models.

    .venv/bin/python scripts/pt_vs_it.py --models gemma-3-270m,gemma-3-270m-it
    .venv/bin/python scripts/pt_vs_it.py --models embedded,gemma-3-270m-it --reuse reports/eval-270m-bluey

For each model: `mlx_bluey train` with --resume (a finished run in adapters/ is reused, not retrained),
then `mlx_bluey evaluate` of its adapter (a --reuse report of that adapter with the same samples, seed and
token limit is used instead). A model that cannot be had (gated, no network) is recorded as unavailable with the reason,
and the comparison runs with what is available. Writes reports/experiments/pt-vs-it/: report.md (the
metrics side by side, example replies), loss_curves.png (every model's train and validation loss on
one chart), results.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def adapter_dir(model: str, data: Path) -> Path:
    name = "gemma-3-270m-embedded" if model in ("embedded", "gemma-3-270m-embedded") else Path(model).name
    return ROOT / "adapters" / f"{data.name}-{name}"  # the Makefile's naming, so `make train` runs are reused


def available(model: str) -> str | None:
    """None when the model resolves here, else the reason it does not."""
    from mlx_bluey.models import ModelError, resolve_model

    try:
        resolve_model(None if model == "embedded" else model, log=lambda _: None)
        return None
    except ModelError as error:
        return str(error)


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "mlx_bluey.cli", *args], check=True)


def loss_chart(png: Path, runs: dict[str, Path]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, adapter in runs.items():
        rows = [json.loads(line) for line in (adapter / "metrics.jsonl").read_text().splitlines()]
        (line,) = ax.plot([r["step"] for r in rows], [r["train_loss"] for r in rows], alpha=0.5, label=f"{name} train")
        val = [r for r in rows if r.get("val_loss") is not None]
        ax.plot(
            [r["step"] for r in val],
            [r["val_loss"] for r in val],
            "o-",
            color=line.get_color(),
            label=f"{name} validation",
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats per supervised token)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def shown(path: Path) -> str:
    """A path as the report shows it: relative to the repository when inside it."""
    return str(path.resolve().relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="embedded,gemma-3-270m-it")
    parser.add_argument("--data", default=str(ROOT / "data" / "bluey"))
    parser.add_argument("--config", default=str(ROOT / "configs" / "bluey.yaml"))
    parser.add_argument("--samples", type=int, default=3, help="replies per prompt (mlx_bluey evaluate's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument(
        "--reuse",
        action="append",
        default=[],
        type=Path,
        help="an existing `mlx_bluey evaluate` directory to use for its adapter (repeatable)",
    )
    parser.add_argument("--output", default=str(ROOT / "reports" / "experiments" / "pt-vs-it"))
    args = parser.parse_args()
    from compare_reports import compare

    data, output = Path(args.data), Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    runs, reports, report_dirs, unavailable = {}, {}, [], {}
    for model in args.models.split(","):
        reason = available(model)
        if reason:
            unavailable[model] = reason
            print(f"{model}: unavailable here ({reason})", file=sys.stderr)
            continue
        adapter = adapter_dir(model, data)
        cli(
            "train",
            "--config",
            args.config,
            "--data",
            str(data),
            "--output",
            str(adapter),
            "--resume",
            *([] if model == "embedded" else ["--model", model]),
        )
        report = next(
            (
                d
                for d in args.reuse
                if Path(json.loads((d / "results.json").read_text())["model"]["adapter"]).resolve() == adapter.resolve()
            ),
            output / f"eval-{adapter.name}",
        )
        previous = json.loads((report / "results.json").read_text()) if (report / "results.json").exists() else None
        wanted = (args.samples, args.seed, args.max_new_tokens)
        if (
            not previous
            or (
                previous["config"]["samples"],
                previous["config"]["seed"],
                previous["config"]["generation"]["max_new_tokens"],
            )
            != wanted
        ):
            report = output / f"eval-{adapter.name}"
            cli(
                "evaluate",
                "--adapter",
                str(adapter),
                "--samples",
                str(args.samples),
                "--seed",
                str(args.seed),
                "--max-new-tokens",
                str(args.max_new_tokens),
                "--output",
                str(report),
            )
        runs[model], reports[model] = adapter, json.loads((report / "results.json").read_text())
        report_dirs.append(report)
    if runs:
        loss_chart(output / "loss_curves.png", runs)
    names = list(reports)
    lines = [
        "# Base (-pt) vs instruction-tuned (-it), same data and config",
        "",
        f"Command: `python {' '.join(sys.argv)}`",
        "",
        f"Config: `{shown(Path(args.config))}`, data `{shown(data)}`.",
        "",
    ]
    for model, reason in unavailable.items():
        lines.append(f"- **{model} was not available here**: {reason}. The comparison below has only what ran.")
    if unavailable:
        lines.append("")
    if names:
        lines.append(compare(report_dirs))
        lines += ["", "Loss curves: `loss_curves.png`. Example replies (first 3 prompts, sample 0):", ""]
        for name in names:
            lines.append(f"- **{name}**")
            for row in [r for r in reports[name]["rows"] if r["sample"] == 0][:3]:
                lines.append(f"  - ({row['id']}) {row['text'][:300]!r}")
    findings = output / "findings.md"  # written by a person after reading the table; kept across reruns
    lines += [
        "",
        "## Findings",
        "",
        findings.read_text().strip() if findings.exists() else "(written after reading the table)",
    ]
    (output / "report.md").write_text("\n".join(lines) + "\n")
    (output / "results.json").write_text(
        json.dumps(
            {
                "models": args.models.split(","),
                "unavailable": unavailable,
                "adapters": {k: str(v) for k, v in runs.items()},
                "reports": [str(d) for d in report_dirs],
            },
            indent=2,
        )
        + "\n"
    )
    print(f"report: {output / 'report.md'}", file=sys.stderr)


if __name__ == "__main__":
    from mlx_bluey.runtime import ensure_fast_blas

    ensure_fast_blas()
    main()
