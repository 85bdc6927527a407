"""Training throughput, side by side: `mlx_bluey train` vs `mlx_lm.lora` vs PyTorch + PEFT on the same batches.

    .venv/bin/python scripts/bench_peers.py --steps 6 --rounds 5
    .venv/bin/python scripts/bench_peers.py --steps 0 --decode-model fused/bluey-270m --decode-export exports/bluey-270m

Runs alternate (ours, mlx-lm, PyTorch, PyTorch with the head at labelled positions, ours, ...) so drift
in the machine's speed hits all. All train LoRA rank 8, scale 20, dropout 0, on every linear layer of
every block, batch 4, float32, on the same single-turn Bluey conversations (single-turn, so mlx-lm's
--mask-prompt supervises exactly the tokens ours does: the reply and its <end_of_turn>), the
--examples nearest the median length.

Identical batches: one seeded plan (which conversations form step 1's batch, step 2's, ...) is handed
to every trainer. Each trainer still pads its own way (ours to the batch's longest, mlx-lm to a
multiple of 32 plus 1, PyTorch to the longest), which is part of what is measured. ours and mlx-lm run
in child processes of this script with their batch iterator replaced by the plan (the only change to
either); PyTorch + PEFT (scripts/torch_peft_child.py, in the export environment) reads the plan.

Settings read back: each run's effective LoRA rank, scale, dropout, layer count, batch size and
trainable parameter count (ours: adapter_config.json + manifest.json; mlx-lm: its adapter_config.json
+ a count of its model's trainable parameters; PEFT: its LoraConfig + count). The script fails if any
differs from ours, and if the trained tokens of a step differ between trainers.

The figure compared is trained tokens per second: supervised tokens (the ones the loss is taken on)
divided by step time, the first step of each run left out as warm-up, median over the run's steps.
Ratios are paired: ours over a peer within the same round, then the median and range over rounds.
Peak memory: each process's peak RSS for all (ru_maxrss), and MLX's allocator peak for the MLX two.
The "pytorch+peft (head at labels)" variant computes the 262k-wide output head only at the labelled
positions, as ours does: it separates that design choice from the rest of the implementation.
Results go to benchmarks/train_vs_peers.{json,md}.
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
from mlx_bluey.bench_record import command_line, machine, table, write_record  # noqa: E402 (after the checkout joins sys.path)

LORA = {"rank": 8, "scale": 20.0, "dropout": 0.0}  # every trainer's LoRA, read back after each run
LEARNING_RATE = 1e-5


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


def make_plan(examples: int, batch_size: int, steps: int, seed: int = 0) -> list[list[int]]:
    """Step i's batch as row numbers of train.jsonl: a seeded shuffle cut into batches, repeated as needed."""
    import random

    order = list(range(examples))
    random.Random(seed).shuffle(order)
    batches = [order[i : i + batch_size] for i in range(0, examples - batch_size + 1, batch_size)]
    return [batches[i % len(batches)] for i in range(steps)]


def peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux reports kilobytes


def run_ours(model_dir: Path, data: Path, output: Path, steps: int, batch: int, plan: Path) -> dict:
    command = [
        sys.executable,
        __file__,
        "--ours-child",
        str(plan),
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
        "--lora-rank",
        str(LORA["rank"]),
        "--lora-scale",
        str(LORA["scale"]),
        "--lora-dropout",
        str(LORA["dropout"]),
        "--num-layers",
        "-1",
        "--val-every",
        "0",
        "--save-every",
        str(steps),
        "--warmup-steps",
        "0",
        "--lr-schedule",
        "constant",
        "--learning-rate",
        str(LEARNING_RATE),
        "--no-progress",
        "--overwrite",
        "--max-seq-length",
        "2048",
        "--dtype",
        "float32",
    ]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    config = json.loads((output / "adapter_config.json").read_text())
    manifest = json.loads((output / "manifest.json").read_text())
    return {
        **_figures(
            [r["trained_tokens_per_second"] for r in rows],
            [r["seconds"] for r in rows],
            [r["trained_tokens"] for r in rows],
        ),
        "mlx_peak_memory_gb": max(r["peak_memory_gb"] for r in rows),
        "peak_rss_gb": json.loads((output / "rss.json").read_text())["peak_rss_gb"],
        "settings": {
            **{k: config["lora_parameters"][k] for k in LORA},
            "layers": config["num_layers"],
            "batch_size": manifest["config"]["batch_size"],
            "trainable_parameters": manifest["trainable_parameters"],
        },
    }


def _figures(tokens_per_second: list[float], seconds: list[float], trained: list[int]) -> dict:
    """A run's figures, its first step left out as warm-up."""
    return {
        "trained_tokens_per_second": statistics.median(tokens_per_second[1:]),
        "seconds_per_step": statistics.median(seconds[1:]),
        "trained_tokens_per_step": statistics.median(trained[1:]),
        "trained_tokens_by_step": trained,
        "steps_timed": len(seconds) - 1,
    }


def ours_child(plan_path: str, argv: list[str]) -> None:
    """`mlx_bluey train` with the plan's batches instead of its own seeded length buckets."""
    import atexit

    import mlx_bluey.train
    from mlx_bluey.cli import cli

    plan = json.loads(Path(plan_path).read_text())
    mlx_bluey.train.epoch_batches = lambda dataset, batch_size, seed, epoch: [list(b) for b in plan]
    output = Path(argv[argv.index("--output") + 1])
    atexit.register(lambda: (output / "rss.json").write_text(json.dumps({"peak_rss_gb": peak_rss_gb()})))
    cli(argv, prog_name="mlx_bluey", standalone_mode=False)


def run_mlx_lm(model_dir: Path, data: Path, output: Path, steps: int, batch: int, plan: Path) -> dict:
    record = output / "reports.jsonl"
    output.mkdir(parents=True, exist_ok=True)
    record.unlink(missing_ok=True)
    (output / "lora.yaml").write_text(json.dumps({"lora_parameters": LORA}))  # JSON is YAML
    command = [
        sys.executable,
        __file__,
        "--mlx-lm-child",
        str(record),
        str(plan),
        "--config",
        str(output / "lora.yaml"),
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
        str(LEARNING_RATE),
        "--adapter-path",
        str(output),
        "--save-every",
        str(10 * steps),
        "--max-seq-length",
        "2048",
    ]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    rows = [r for r in lines if "iteration" in r]
    extra = {k: v for r in lines if "iteration" not in r for k, v in r.items()}
    config = json.loads((output / "adapter_config.json").read_text())
    return {
        **_figures(
            [r["tokens_per_second"] for r in rows],
            [1 / r["iterations_per_second"] for r in rows],
            [round(r["tokens_per_second"] / r["iterations_per_second"]) for r in rows],
        ),
        "mlx_peak_memory_gb": max(r["peak_memory"] for r in rows),
        "peak_rss_gb": extra["peak_rss_gb"],
        "settings": {
            **{k: config["lora_parameters"][k] for k in LORA},
            "layers": extra["layers"],
            "batch_size": config["batch_size"],
            "trainable_parameters": extra["trainable_parameters"],
        },
    }


def run_torch_peft(model_dir: Path, data: Path, output: Path, steps: int, batch: int, plan: Path, head: str) -> dict:
    """PyTorch + PEFT in the export environment (scripts/torch_peft_child.py) on the same tokens and batches."""
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
            str(plan),
            str(output / "steps.jsonl"),
            head,
            json.dumps({**LORA, "learning_rate": LEARNING_RATE}),
        ],
        check=True,
        env=env,
    )
    lines = [json.loads(line) for line in (output / "steps.jsonl").read_text().splitlines()]
    settings, rows = lines[0], lines[1 : steps + 1]
    return {
        **_figures(
            [r["trained_tokens_per_second"] for r in rows],
            [r["seconds"] for r in rows],
            [r["trained_tokens"] for r in rows],
        ),
        "peak_rss_gb": max(r["peak_rss_gb"] for r in rows),
        "settings": settings,
    }


def mlx_lm_child(record: str, plan_path: str, argv: list[str]) -> None:
    """mlx-lm's own LoRA entry point, with the plan's batches, recording each step's report through its
    callback and, before training, the trainable parameter count of the model it built."""
    import types
    from functools import partial

    from mlx.utils import tree_flatten
    from mlx_lm import lora
    from mlx_lm.tuner import trainer
    from mlx_lm.tuner.callbacks import TrainingCallback

    plan = json.loads(Path(plan_path).read_text())

    def write(row: dict) -> None:
        with open(record, "a") as file:
            file.write(json.dumps(row) + "\n")

    class Recorder(TrainingCallback):
        def on_train_loss_report(self, info):
            write({k: float(v) for k, v in info.items()})

    def plan_batches(dataset, batch_size, max_seq_length, loop=False, seed=None, comm_group=None):
        # each planned batch through mlx-lm's own iterate_batches (its padding, its layout), alone
        for indices in plan:
            rows = [dataset[i] for i in indices]
            yield from trainer.iterate_batches(rows, batch_size, max_seq_length)

    def train(model, *args, **kwargs):
        named = tree_flatten(model.trainable_parameters())
        layers = {name.split(".")[2] for name, _ in named if name.startswith("model.layers.")}
        write({"trainable_parameters": sum(v.size for _, v in named), "layers": len(layers)})
        return trainer.train(model, *args, **{**kwargs, "iterate_batches": plan_batches})

    args = vars(lora.build_parser().parse_args(argv))
    config = json.loads(Path(args.pop("config")).read_text())
    for key, value in {**lora.CONFIG_DEFAULTS, **config}.items():  # what mlx_lm.lora's main() does
        if args.get(key) is None:
            args[key] = value
    # lora.run() replaces the callback it is given with get_reporting_callbacks(...) (mlx-lm 0.32.2),
    # so hand ours in through that function instead; lora.run calls the `train` it imported.
    lora.get_reporting_callbacks = lambda *a, **k: Recorder()
    lora.train = partial(train)
    lora.run(types.SimpleNamespace(**args))
    write({"peak_rss_gb": peak_rss_gb()})


def check_settings(results: dict[str, list[dict]], batch_size: int) -> tuple[dict, dict[str, int]]:
    """Every run's read-back settings, which must equal ours; and the same batches, seen in the trained
    tokens of every step. The PyTorch runs train on our token ids, so theirs must equal ours exactly.
    mlx-lm tokenizes and masks its own way: its count may differ from ours by the same number of tokens
    per conversation at every step (measured: 2, the newline after <end_of_turn> and, from its mask
    `steps <= lengths`, the first padding position), and by nothing else.
    Returns (the settings, extra trained tokens per conversation by trainer)."""
    reference = results["mlx_bluey"][0]
    extra = {}
    for name, runs in results.items():
        for run in runs:
            if run["settings"] != reference["settings"]:
                sys.exit(f"{name} trained with {run['settings']}, mlx_bluey with {reference['settings']}")
            differences = {a - b for a, b in zip(run["trained_tokens_by_step"], reference["trained_tokens_by_step"])}
            per_conversation = next(iter(differences)) // batch_size
            allowed = name == "mlx_lm.lora" and len(differences) == 1 and next(iter(differences)) % batch_size == 0
            if differences != {0} and not allowed:
                sys.exit(
                    f"{name} trained {run['trained_tokens_by_step']} tokens per step, "
                    f"mlx_bluey {reference['trained_tokens_by_step']}: not the same batches"
                )
            extra[name] = per_conversation
    return reference["settings"], extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--examples", type=int, default=96, help="single-turn conversations to train on")
    parser.add_argument("--output", default=str(ROOT / "benchmarks"))
    parser.add_argument(
        "--peers",
        default="mlx_lm.lora,pytorch+peft,pytorch+peft (head at labels)",
        help="comma-separated: mlx_lm.lora, pytorch+peft, pytorch+peft (head at labels) (needs `make export-env`)",
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

    from mlx_bluey.embedded import ensure_embedded_model

    model_dir = ensure_embedded_model()
    work = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    subset = single_turn_subset(
        ROOT / "data" / "bluey" / "train.jsonl",
        work / "data",
        args.examples,
        AutoTokenizer.from_pretrained(str(model_dir)),
    )
    plan = work / "plan.json"
    plan.write_text(json.dumps(make_plan(args.examples, args.batch_size, args.steps)))
    runners = {
        "mlx_bluey": run_ours,
        "mlx_lm.lora": run_mlx_lm,
        "pytorch+peft": lambda *a: run_torch_peft(*a, head="all"),
        "pytorch+peft (head at labels)": lambda *a: run_torch_peft(*a, head="labels"),
    }
    chosen = ["mlx_bluey", *args.peers.split(",")]
    results: dict[str, list] = {name: [] for name in chosen}
    for round_index in range(args.rounds):
        for name in chosen:
            started = time.time()
            figures = runners[name](
                model_dir,
                work / "data",
                work / f"{name}-{round_index}".replace(" ", "_"),
                args.steps,
                args.batch_size,
                plan,
            )
            figures["wall_seconds"] = time.time() - started
            results[name].append(figures)
            print(
                f"round {round_index + 1} {name:30s} {figures['trained_tokens_per_second']:7.1f} trained tok/s  "
                f"{figures['seconds_per_step']:6.2f} s/step  RSS {figures['peak_rss_gb']:.2f} GB",
                flush=True,
            )
    settings, extra_tokens = check_settings(results, args.batch_size)

    def med(name, key):
        values = [r[key] for r in results[name] if r.get(key) is not None]
        return statistics.median(values) if values else None

    ratios = {}
    for name in chosen[1:]:
        paired = [
            ours["trained_tokens_per_second"] / theirs["trained_tokens_per_second"]
            for ours, theirs in zip(results["mlx_bluey"], results[name])
        ]
        ratios[f"mlx_bluey / {name}"] = {
            "median": statistics.median(paired),
            "min": min(paired),
            "max": max(paired),
            "per_round": paired,
        }
    summary = {
        "command": command_line(),
        "machine": machine(),
        "setup": {
            "model": "gemma-3-270m (embedded, float32)",
            **subset,
            "batch_size": args.batch_size,
            "steps_per_run": args.steps,
            "rounds": args.rounds,
            "plan": json.loads(plan.read_text()),
            "settings_read_back": settings,
            "extra_trained_tokens_per_conversation": extra_tokens,
        },
        "runs": results,
        "median_trained_tokens_per_second": {name: med(name, "trained_tokens_per_second") for name in chosen},
        "paired_ratios": ratios,
        "peak_rss_gb": {name: med(name, "peak_rss_gb") for name in chosen},
        "mlx_peak_memory_gb": {name: med(name, "mlx_peak_memory_gb") for name in chosen},
    }
    gb = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731 (one line, used below)
    cells = [
        [
            name,
            f"{med(name, 'trained_tokens_per_second'):.1f}",
            f"{med(name, 'seconds_per_step'):.2f}",
            f"{med(name, 'trained_tokens_per_step'):.0f}",
            gb(med(name, "peak_rss_gb")),
            gb(med(name, "mlx_peak_memory_gb")),
        ]
        for name in results
    ]
    header = ["trainer", "trained tokens/s (median)", "s/step", "trained tokens/step", "peak RSS GB", "MLX peak GB"]
    ratio_lines = "\n".join(
        f"- {name}: **{r['median']:.2f}x** (rounds {r['min']:.2f}-{r['max']:.2f}: "
        + ", ".join(f"{x:.2f}" for x in r["per_round"])
        + ")"
        for name, r in ratios.items()
    )
    write_record(
        Path(args.output),
        "train_vs_peers",
        summary,
        "# Training throughput: mlx_bluey vs its peers",
        f"{ {k: v for k, v in summary['setup'].items() if k != 'plan'} }\n\n"
        "Every trainer ran the same batches (the plan in the JSON file); the settings above were read back "
        "from each run and were equal. Trained tokens per step: the PyTorch runs equal ours at every step "
        "(same token ids); mlx-lm's exceed ours by the same number per conversation at every step "
        f"({extra_tokens.get('mlx_lm.lora', 0)}: the newline after <end_of_turn> and its mask's first "
        "padding position), which its tokens/s counts as trained.\n\n"
        + table(header, cells, align="lrrrrr")
        + "\nRatios of trained tokens/s, paired within each round (median, range and every round):\n\n"
        + f"{ratio_lines}\n\n"
        "CPU result (2 cores, OpenBLAS). Ours computes the output head with NumPy at the labelled positions "
        "here; on Metal the NumPy head is off and the head runs in MLX.\n",
    )
    print(ratio_lines)


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--mlx-lm-child":
        mlx_lm_child(sys.argv[2], sys.argv[3], sys.argv[4:])
    elif len(sys.argv) > 2 and sys.argv[1] == "--ours-child":
        from mlx_bluey.runtime import ensure_fast_blas

        ensure_fast_blas()
        ours_child(sys.argv[2], sys.argv[3:])
    else:
        from mlx_bluey.runtime import ensure_fast_blas

        ensure_fast_blas()
        main()
