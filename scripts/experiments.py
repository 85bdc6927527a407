"""The series' generation experiments, reproduced and saved: each writes a table, a chart and its command.

    .venv/bin/python scripts/experiments.py short-replies --adapter adapters/bluey-gemma-3-270m-embedded
    .venv/bin/python scripts/experiments.py sweep --adapter adapters/bluey-gemma-3-270m-embedded

short-replies  The old project's replies stopped after 7-12 words. Here: the training replies' length
               distribution against the generated one, then the treatments the series tried, each on the
               same prompts and seeds: min-new-tokens blocking every stop id (16, 48), temperature (0.3, 1.0),
               repetition penalty (1.0, 1.3), against the defaults (temperature 0.7, top-p 0.95, rep. 1.1).
sweep          temperature x top-p x repetition penalty on the same prompts, every metric of evaluate.

Every treatment changes one GenerationSettings field (or a grid of them) and keeps the rest at the CLI
defaults; sample s of every prompt uses seed SEED + s in every treatment, so differences are the
treatment's, not the noise's. Metrics are evaluate.score's (metrics.py). Output:
reports/experiments/NAME/{results.json, report.md, chart.png}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULTS = {}  # GenerationSettings' own defaults, the CLI's
SHORT_REPLY_TREATMENTS = {
    "defaults": DEFAULTS,
    "min_new_tokens=16": {"min_new_tokens": 16},
    "min_new_tokens=48": {"min_new_tokens": 48},
    "temperature=0.3": {"temperature": 0.3},
    "temperature=1.0": {"temperature": 1.0},
    "repetition_penalty=1.0": {"repetition_penalty": 1.0},
    "repetition_penalty=1.3": {"repetition_penalty": 1.3},
}
SWEEP_GRID = {"temperature": [0.3, 0.7, 1.0], "top_p": [0.9, 1.0], "repetition_penalty": [1.0, 1.2]}

# The figures each table shows: (label, path into evaluate.score's summary, format)
COLUMNS = [
    ("complete", ("completeness", "complete_share"), "{:.0%}"),
    ("hit limit", ("completeness", "hit_token_limit_share"), "{:.0%}"),
    ("median words", ("length", "median_words"), "{:g}"),
    ("short->short", ("length", "short_prompts_answered_short"), "{:.0%}"),
    ("long->long (even if cut)", ("length", "long_prompts_answered_long"), "{:.0%}"),
    ("voice /100w", ("voice", "markers_per_100_words"), "{:.2f}"),
    ("breaks", ("breaking_character", "share"), "{:.0%}"),
    ("distinct-2", ("diversity", "distinct_2"), "{:.2f}"),
    ("repetition", ("diversity", "mean_repetition_within"), "{:.3f}"),
    ("max overlap", ("memorization", "max_training_overlap_words"), "{:g}"),
]


def treatments_for(name: str) -> dict[str, dict]:
    if name == "short-replies":
        return SHORT_REPLY_TREATMENTS
    keys = list(SWEEP_GRID)
    return {
        ", ".join(f"{k}={v}" for k, v in zip(keys, values)): dict(zip(keys, values))
        for values in itertools.product(*SWEEP_GRID.values())
    }


def to_markdown(result: dict) -> str:
    lines = [
        f"# Experiment: {result['experiment']}",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Model: {result['model']}. {result['prompts']} prompts ({', '.join(result['kinds'])}) x "
        f"{result['samples']} sample(s), seeds {result['seed']}+s, max {result['max_new_tokens']} new tokens; "
        f"{result['seconds']:.0f} s.",
        "",
    ]
    reference = result["reference"]
    lines += [
        f"Training replies: median {reference['median_words']} words, {reference['short_share']:.0%} under 25 "
        f"words, {reference['long_share']:.0%} over 120.",
        "",
    ]
    lines.append("| treatment | " + " | ".join(c[0] for c in COLUMNS) + " |")
    lines.append("|---|" + "---:|" * len(COLUMNS))
    for name, entry in result["treatments"].items():
        cells = []
        for _, path, fmt in COLUMNS:
            value = entry["summary"][path[0]][path[1]]
            cells.append("-" if value is None else fmt.format(value))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Example replies (first prompt of each kind, sample 0):", ""]
    for name, entry in result["treatments"].items():
        lines.append(f"- **{name}**")
        seen = set()
        for row in entry["rows"]:
            if row["kind"] not in seen and row["sample"] == 0:
                seen.add(row["kind"])
                lines.append(f"  - ({row['kind']}, {row['words']} words) {row['text'][:300]!r}")
    lines += ["", "## Findings", "", result.get("findings", "(written after reading the table)"), ""]
    return "\n".join(lines)


def chart(png: Path, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["treatments"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(10, len(names) * 0.9), 4.5))
    words = [[r["words"] for r in result["treatments"][n]["rows"]] for n in names]
    left.boxplot([result["reference"]["words"], *words], showfliers=False)
    left.set_xticks(range(1, len(names) + 2), ["training"] + names, rotation=60, ha="right", fontsize=8)
    left.set_ylabel("words per reply")
    left.set_title("reply length: training data vs each treatment")
    complete = [result["treatments"][n]["summary"]["completeness"]["complete_share"] for n in names]
    short = [result["treatments"][n]["summary"]["length"]["short_prompts_answered_short"] or 0 for n in names]
    x = range(len(names))
    right.bar([i - 0.2 for i in x], complete, width=0.4, label="complete")
    right.bar([i + 0.2 for i in x], short, width=0.4, label="short prompt -> short reply")
    right.set_xticks(list(x), names, rotation=60, ha="right", fontsize=8)
    right.set_ylim(0, 1)
    right.legend(fontsize=8)
    right.set_title("completeness and short-for-short")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=["short-replies", "sweep"])
    parser.add_argument("--adapter", help="adapter directory (default: the base model alone)")
    parser.add_argument("--model", help="base model (default: the adapter's, or the embedded 270M)")
    parser.add_argument("--prompts", default=str(ROOT / "data" / "eval" / "prompts.jsonl"))
    parser.add_argument("--kinds", default="short,medium,long", help="prompt kinds to use (comma-separated)")
    parser.add_argument("--per-kind", type=int, default=8, help="prompts of each kind")
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--train-data", default=str(ROOT / "data" / "bluey" / "train.jsonl"))
    parser.add_argument("--card", default=str(ROOT / "data" / "bluey" / "character.yaml"))
    parser.add_argument("--output", default=None, help="default: reports/experiments/EXPERIMENT")
    parser.add_argument(
        "--render",
        action="store_true",
        help="only rewrite report.md and chart.png from results.json (e.g. after editing findings.md)",
    )
    args = parser.parse_args()
    output = Path(args.output or ROOT / "reports" / "experiments" / args.experiment)
    if args.render:
        write(output, json.loads((output / "results.json").read_text()))
        return

    from mlx_bluey import metrics
    from mlx_bluey.atomic import atomic_write_text
    from mlx_bluey.bench_record import command_line
    from mlx_bluey.character import load_card
    from mlx_bluey.evaluate import generate_samples, read_prompts, reply_pairs, score
    from mlx_bluey.generation import GenerationSettings, load_for_generation, stop_token_ids
    from mlx_bluey.text import LONG_WORDS, SHORT_WORDS

    kinds = args.kinds.split(",")
    prompts = [p for kind in kinds for p in [q for q in read_prompts(args.prompts) if q.kind == kind][: args.per_kind]]
    card = load_card(args.card)
    training = reply_pairs(args.train_data)
    reference_words = [len(metrics.words(reply)) for _, reply in training]
    model, tokenizer, model_dir = load_for_generation(args.model, args.adapter, log=lambda m: print(m, file=sys.stderr))
    stops = stop_token_ids(model_dir, tokenizer)
    base = GenerationSettings(max_new_tokens=args.max_new_tokens)
    started = time.time()
    result = {
        "experiment": args.experiment,
        "command": command_line(),
        "model": f"{model_dir.name}" + (f" + {Path(args.adapter).name}" if args.adapter else " (no adapter)"),
        "prompts": len(prompts),
        "kinds": kinds,
        "samples": args.samples,
        "seed": args.seed,
        "max_new_tokens": args.max_new_tokens,
        "reference": {
            "words": reference_words,
            "median_words": sorted(reference_words)[len(reference_words) // 2],
            "short_share": sum(w < SHORT_WORDS for w in reference_words) / len(reference_words),
            "long_share": sum(w > LONG_WORDS for w in reference_words) / len(reference_words),
        },
        "treatments": {},
    }
    for name, overrides in treatments_for(args.experiment).items():
        settings = replace(base, **overrides)
        t0 = time.time()
        # every kind gets the same max_new_tokens here: the treatments are compared at one limit
        rows = generate_samples(
            model,
            tokenizer,
            prompts,
            args.samples,
            args.seed,
            settings,
            stops,
            long_reply_tokens=settings.max_new_tokens,
        )
        summary = score(rows, card, training)
        result["treatments"][name] = {"settings": asdict(settings), "summary": summary, "rows": rows}
        print(
            f"{name}: median {summary['length']['median_words']} words, complete "
            f"{summary['completeness']['complete_share']:.0%}, {time.time() - t0:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    result["seconds"] = time.time() - started
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "results.json", json.dumps(result, indent=2))
    write(output, result)


def write(output: Path, result: dict) -> None:
    from mlx_bluey.atomic import atomic_write_text

    findings = output / "findings.md"  # written by a person after reading the table; kept across reruns
    result = dict(result, findings=findings.read_text().strip()) if findings.exists() else result
    chart(output / "chart.png", result)
    atomic_write_text(output / "report.md", to_markdown(result))
    print(f"report: {output / 'report.md'}", file=sys.stderr)


if __name__ == "__main__":
    from mlx_bluey.runtime import ensure_fast_blas

    ensure_fast_blas()
    main()
