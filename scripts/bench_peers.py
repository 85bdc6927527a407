"""Training throughput, side by side: `mlx_bluey train` vs `mlx_lm.lora` vs PyTorch + PEFT, same model, data and batch.

    .venv/bin/python scripts/bench_peers.py --steps 12 --rounds 2
    .venv/bin/python scripts/bench_peers.py --steps 0 --decode-model fused/bluey-270m --decode-export exports/bluey-270m

Runs alternate (ours, mlx-lm, PyTorch, ours, ...) so drift in the machine's speed hits both. Both
train LoRA rank 8, scale 20, on every linear layer of every block, batch 4, float32, on the same
single-turn Bluey conversations (single-turn, so mlx-lm's --mask-prompt supervises exactly the
tokens ours does: the reply and its <end_of_turn>), the --examples nearest the median length, so
that every batch is about the same work whichever order a trainer draws them in (the table's
trained tokens/step shows it). The figure compared is trained tokens per
second: supervised tokens (the ones the loss is taken on) divided by step time, the first step of
each run left out as warm-up. PyTorch + PEFT (scripts/torch_peft_child.py) runs in the export
environment on the very token ids and labels mlx_bluey trains on. Results go to
benchmarks/train_vs_peers.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def single_turn_subset(source: Path, target: Path, count: int, tokenizer) -> dict:
    """The `count` single-turn conversations nearest the median length, written as train/valid.jsonl.

    Every trainer sorts by length and shuffles its batches in its own way, so over a few steps each
    would meet different batches; the Bluey replies run from 4 to 249 words, and a median over steps
    of 60 and of 600 tokens compares nothing. Near-equal lengths make every batch the same work.
    """
    from mlx_bluey.chat_format import encode_conversation

    rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    single = [r for r in rows if [m["role"] for m in r["messages"]] == ["user", "assistant"]]
    encoded = [encode_conversation(tokenizer, r["messages"]) for r in single]
    median = statistics.median(len(e.ids) for e in encoded)
    chosen = sorted(range(len(single)), key=lambda i: (abs(len(encoded[i].ids) - median), i))[:count]
    target.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(single[i]) + "\n" for i in chosen)
    (target / "train.jsonl").write_text(text)
    (target / "valid.jsonl").write_text(text)  # mlx-lm insists on a validation file
    tokens = [len(encoded[i].ids) for i in chosen]
    supervised = [sum(encoded[i].labels) for i in chosen]
    return {
        "examples": len(chosen),
        "tokens": f"{min(tokens)}-{max(tokens)}",
        "supervised_tokens": f"{min(supervised)}-{max(supervised)}",
    }


def run_ours(model_dir: Path, data: Path, output: Path, steps: int, batch: int) -> dict:
    command = [
        sys.executable,
        "-m",
        "mlx_bluey.cli",
        "train",
        "--model",
        str(model_dir),
        "--data",
        str(data),
        "--output",
        str(output),
        "--iters",
        str(steps),
        "--batch-size",
        str(batch),
        "--grad-accumulation",
        "1",
        "--val-every",
        "0",
        "--save-every",
        str(steps),
        "--warmup-steps",
        "0",
        "--learning-rate",
        "1e-5",
        "--no-progress",
        "--overwrite",
        "--max-seq-length",
        "2048",
    ]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()][1:]
    return {
        "trained_tokens_per_second": statistics.median(r["trained_tokens_per_second"] for r in rows),
        "seconds_per_step": statistics.median(r["seconds"] for r in rows),
        "trained_tokens_per_step": statistics.median(r["trained_tokens_per_second"] * r["seconds"] for r in rows),
        "peak_memory_gb": max(r["peak_memory_gb"] for r in rows),
        "steps_timed": len(rows),
    }


def run_mlx_lm(model_dir: Path, data: Path, output: Path, steps: int, batch: int) -> dict:
    record = output / "reports.jsonl"
    output.mkdir(parents=True, exist_ok=True)
    record.unlink(missing_ok=True)
    command = [
        sys.executable,
        __file__,
        "--mlx-lm-child",
        str(record),
        "--model",
        str(model_dir),
        "--train",
        "--data",
        str(data),
        "--iters",
        str(steps),
        "--batch-size",
        str(batch),
        "--num-layers",
        "-1",
        "--mask-prompt",
        "--steps-per-report",
        "1",
        "--steps-per-eval",
        str(10 * steps),
        "--val-batches",
        "1",
        "--learning-rate",
        "1e-5",
        "--adapter-path",
        str(output),
        "--save-every",
        str(10 * steps),
        "--max-seq-length",
        "2048",
    ]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    rows = [json.loads(line) for line in record.read_text().splitlines()][1:]
    return {
        "trained_tokens_per_second": statistics.median(r["tokens_per_second"] for r in rows),
        "seconds_per_step": statistics.median(1 / r["iterations_per_second"] for r in rows),
        "trained_tokens_per_step": statistics.median(r["tokens_per_second"] / r["iterations_per_second"] for r in rows),
        "peak_memory_gb": max(r["peak_memory"] for r in rows),
        "steps_timed": len(rows),
    }


def run_torch_peft(model_dir: Path, data: Path, output: Path, steps: int, batch: int) -> dict:
    """PyTorch + PEFT in the export environment (scripts/torch_peft_child.py) on the same tokens."""
    from transformers import AutoTokenizer

    from mlx_bluey.chat_format import encode_conversation
    from mlx_bluey.export import export_python

    output.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    encoded = [
        encode_conversation(tokenizer, json.loads(line)["messages"])
        for line in (data / "train.jsonl").read_text().splitlines()
        if line.strip()
    ]
    (output / "encoded.json").write_text(json.dumps([{"ids": e.ids, "labels": e.labels} for e in encoded]))
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)  # OpenBLAS is for MLX; torch brings its own BLAS
    subprocess.run(
        [
            str(export_python()),
            str(ROOT / "scripts" / "torch_peft_child.py"),
            str(model_dir),
            str(output / "encoded.json"),
            str(steps),
            str(batch),
            str(output / "steps.jsonl"),
        ],
        check=True,
        env=env,
    )
    rows = [json.loads(line) for line in (output / "steps.jsonl").read_text().splitlines()][1:]
    return {
        "trained_tokens_per_second": statistics.median(r["trained_tokens_per_second"] for r in rows),
        "seconds_per_step": statistics.median(r["seconds"] for r in rows),
        "trained_tokens_per_step": statistics.median(r["trained_tokens"] for r in rows),
        "peak_memory_gb": max(r["peak_rss_gb"] for r in rows),  # process RSS, not MLX's allocator peak
        "steps_timed": len(rows),
    }


def mlx_lm_child(record: str, argv: list[str]) -> None:
    """Run mlx-lm's own LoRA entry point, recording each step's report through its callback."""
    import types

    from mlx_lm import lora
    from mlx_lm.tuner.callbacks import TrainingCallback

    class Recorder(TrainingCallback):
        def on_train_loss_report(self, info):
            with open(record, "a") as file:
                file.write(json.dumps({k: float(v) for k, v in info.items()}) + "\n")

    args = vars(lora.build_parser().parse_args(argv))
    for key, value in lora.CONFIG_DEFAULTS.items():  # what mlx_lm.lora's main() does
        if args.get(key) is None:
            args[key] = value
    # lora.run() replaces the callback it is given with get_reporting_callbacks(...) (mlx-lm 0.32.2),
    # so hand ours in through that function instead.
    lora.get_reporting_callbacks = lambda *a, **k: Recorder()
    lora.run(types.SimpleNamespace(**args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--examples", type=int, default=96, help="single-turn conversations to train on")
    parser.add_argument("--output", default=str(ROOT / "benchmarks"))
    parser.add_argument(
        "--peers",
        default="mlx_lm.lora,pytorch+peft",
        help="comma-separated: mlx_lm.lora, pytorch+peft (needs `make export-env`)",
    )
    parser.add_argument(
        "--decode-model",
        help="a fused model: also run the decode comparison on it "
        "(scripts/bench_decode_peers.py: mlx_lm.generate, PyTorch, onnxruntime)",
    )
    parser.add_argument("--decode-export", action="append", default=[], help="its export(s), for onnxruntime")
    args = parser.parse_args()
    if args.decode_model:
        command = [
            sys.executable,
            str(ROOT / "scripts" / "bench_decode_peers.py"),
            "--model",
            args.decode_model,
            "--output",
            args.output,
            *[a for e in args.decode_export for a in ("--export", e)],
        ]
        subprocess.run(command, check=True)
        if args.steps == 0:
            return

    from transformers import AutoTokenizer

    from mlx_bluey import runtime
    from mlx_bluey.embedded import ensure_embedded_model

    model_dir = ensure_embedded_model()
    work = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    subset = single_turn_subset(
        ROOT / "data" / "bluey" / "train.jsonl",
        work / "data",
        args.examples,
        AutoTokenizer.from_pretrained(str(model_dir)),
    )
    runners = {"mlx_bluey": run_ours, "mlx_lm.lora": run_mlx_lm, "pytorch+peft": run_torch_peft}
    chosen = ["mlx_bluey", *args.peers.split(",")]
    results: dict[str, list] = {name: [] for name in chosen}
    for round_index in range(args.rounds):
        for name in chosen:
            runner = runners[name]
            started = time.time()
            figures = runner(model_dir, work / "data", work / f"{name}-{round_index}", args.steps, args.batch_size)
            figures["wall_seconds"] = time.time() - started
            results[name].append(figures)
            print(
                f"round {round_index + 1} {name:12s} {figures['trained_tokens_per_second']:7.1f} trained tok/s  "
                f"{figures['seconds_per_step']:6.2f} s/step  peak {figures['peak_memory_gb']:.2f} GB",
                flush=True,
            )

    def med(name, key):
        return statistics.median(r[key] for r in results[name])

    ours = med("mlx_bluey", "trained_tokens_per_second")
    ratios = {f"mlx_bluey / {name}": ours / med(name, "trained_tokens_per_second") for name in chosen[1:]}
    summary = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": runtime.machine_facts(),
        "setup": {
            "model": "gemma-3-270m (embedded, float32)",
            **subset,
            "batch_size": args.batch_size,
            "steps_per_run": args.steps,
            "rounds": args.rounds,
            "lora": "rank 8, scale 20, all linears, all 18 blocks",
        },
        "runs": results,
        "median_trained_tokens_per_second": {name: med(name, "trained_tokens_per_second") for name in chosen},
        "ratios": ratios,
        "peak_memory_gb": {name: med(name, "peak_memory_gb") for name in chosen},
        "peak_memory_note": "MLX: the allocator's peak (mx.get_peak_memory); PyTorch: the process's peak RSS",
    }
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_vs_peers.json").write_text(json.dumps(summary, indent=2))
    table = "\n".join(
        f"| {name} | {med(name, 'trained_tokens_per_second'):.1f} | {med(name, 'seconds_per_step'):.2f} | "
        f"{med(name, 'trained_tokens_per_step'):.0f} | {med(name, 'peak_memory_gb'):.2f} |"
        for name in results
    )
    ratio_lines = "\n".join(f"- {name}: **{value:.2f}x**" for name, value in ratios.items())
    (out / "train_vs_peers.md").write_text(
        f"# Training throughput: mlx_bluey vs its peers\n\n`{summary['command']}`\n\n"
        f"{summary['machine']}\n\n{summary['setup']}\n\n"
        "| trainer | trained tokens/s (median) | s/step | trained tokens/step | peak GB |\n|---|---|---|---|---|\n"
        f"{table}\n\nRatios of trained tokens/s:\n\n{ratio_lines}\n\n{summary['peak_memory_note']}.\n"
    )
    print(ratio_lines)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--mlx-lm-child":
        mlx_lm_child(sys.argv[2], sys.argv[3:])
    else:
        from mlx_bluey.runtime import ensure_fast_blas

        ensure_fast_blas()
        main()
