"""The benchmark runs on a tiny model in seconds; every figure is a positive measured number."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from mlx_bluey.gemma3_shapes import GEMMA3_1B_CONFIG

ROOT = Path(__file__).resolve().parent.parent


def test_bench_command_on_a_tiny_model(tmp_path, tiny_model_dir):
    out = tmp_path / "bench"
    result = run_cli(
        "bench",
        "--model",
        str(tiny_model_dir),
        "--dtype",
        "float32",
        "--dtype",
        "4bit",
        "--repeats",
        "2",
        "--prompt-tokens",
        "16",
        "--new-tokens",
        "4",
        "--train-length",
        "16",
        "--output",
        str(out),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads((out / "bench.json").read_text())
    for key in ("matmul_gflops", "memory_gb_per_second", "mlx_gemv_gb_per_second", "numpy_gemv_gb_per_second"):
        assert data["ceilings"][key] > 0
    ceilings = data["ceilings"]
    assert ceilings["memory_gb_per_second"] == max(
        ceilings["mlx_gemv_gb_per_second"], ceilings["numpy_gemv_gb_per_second"]
    )
    assert [(r["dtype"]) for r in data["results"]] == ["float32", "4bit"]
    full, quantized = data["results"]
    # per block: q, o 32x32 + k, v 16x32 + q/k norms 2x16 + gate, up, down 3x(64x32) + 4 norms x 32 = 9,376
    block = 2 * 32 * 32 + 2 * 16 * 32 + 2 * 16 + 3 * 64 * 32 + 4 * 32
    assert full["parameters"] == 102 * 32 + 2 * block + 32 == 22048  # embedding + 2 blocks + final norm
    assert full["weight_bytes"] == 4 * full["parameters"]
    assert quantized["weight_bytes"] < full["weight_bytes"] / 3
    for r in data["results"]:
        for key in ("prompt_tokens_per_second", "decode_tokens_per_second"):
            assert r[key]["low"] > 0 and r[key]["low"] <= r[key]["median"] <= r[key]["high"]
        assert r["load_seconds"] > 0 and r["peak_memory_gb"]["generate"] > 0
        assert 0 < r["decode_bandwidth_utilisation"] and math.isfinite(r["decode_bandwidth_utilisation"])
    assert full["train_tokens_per_second"]["median"] > 0 and 0 < full["training_flop_utilisation"]
    assert quantized["train_tokens_per_second"] is None
    assert "| model | dtype |" in (out / "bench.md").read_text()
    assert (out / "bench.png").read_bytes()[:4] == b"\x89PNG"


def test_1b_shape_is_gemma_3_1b():
    """The 1b-shaped model as bench builds it has the parameters Gemma 3 1B's shapes give, counted by hand in
    gemma3_shapes.py (MLX arrays are lazy: nothing is allocated to count them)."""
    from mlx.utils import tree_flatten
    from mlx_lm.models.gemma3_text import Model, ModelArgs

    model = Model(ModelArgs.from_dict(GEMMA3_1B_CONFIG))
    model.sanitize({})  # drops lm_head: the embedding is tied
    assert sum(v.size for _, v in tree_flatten(model.parameters())) == 999_885_952


def test_peer_benchmark_trains_everyone_on_near_median_lengths(tmp_path, tiny_tokenizer):
    import importlib.util

    from conftest import chat, write_jsonl

    from mlx_bluey.chat_format import encode_conversation

    spec = importlib.util.spec_from_file_location("bench_peers", ROOT / "scripts" / "bench_peers.py")
    bench_peers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_peers)
    replies = ["a" * n for n in (1, 5, 9, 10, 11, 30, 60)]  # character tokenizer: one token per letter
    rows = [chat("hi", r) for r in replies] + [chat("hi", "x", "more?", "y")]  # the last is two turns: skipped
    write_jsonl(tmp_path / "source.jsonl", rows)
    subset = bench_peers.single_turn_subset(tmp_path / "source.jsonl", tmp_path / "data", 3, tiny_tokenizer)
    kept = [
        json.loads(line)["messages"][1]["content"]
        for line in (tmp_path / "data" / "train.jsonl").read_text().splitlines()
    ]
    assert sorted(len(k) for k in kept) == [9, 10, 11]  # the median single-turn reply is 10 letters
    supervised = [sum(encode_conversation(tiny_tokenizer, chat("hi", k)["messages"]).labels) for k in kept]
    assert subset["examples"] == 3 and subset["supervised_tokens"] == f"{min(supervised)}-{max(supervised)}"
    assert (tmp_path / "data" / "valid.jsonl").read_text() == (tmp_path / "data" / "train.jsonl").read_text()


def test_decode_profile_script_on_the_tiny_model(tiny_model_dir, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "profile_decode.py"),
            "--model",
            str(tiny_model_dir),
            "--repeats",
            "2",
            "--output",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((tmp_path / "decode_profile.json").read_text())["rows"]
    assert [r["part"] for r in rows] == [
        "body (MLX)",
        "head (MLX)",
        "head (NumPy/BLAS)",
        "step, MLX head (mlx_lm.generate's)",
        "step, NumPy head (mlx_bluey's)",
    ]
    assert all(r["ms"] > 0 and r["gb_per_s"] > 0 for r in rows)
    # tiny model: the tied head is 102 x 32 float32 = 13,056 bytes; a step reads all 22,048 parameters
    assert [round(r["mb_read"] * 1e6) for r in rows] == [4 * (22048 - 3264), 13056, 13056, 4 * 22048, 4 * 22048]


def test_decode_peers_script_on_the_tiny_model(tiny_fused, tiny_export, tmp_path):
    """Every runtime decodes exactly --new-tokens tokens (the runners assert it) and gets a positive figure."""
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "bench_decode_peers.py"),
            "--model",
            str(tiny_fused),
            "--export",
            str(tiny_export),
            "--no-torch",
            "--new-tokens",
            "24",  # decode time = (24 tokens) - (1 token): with 6, a loaded machine's noise made one figure negative
            "--rounds",
            "2",
            "--output",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "decode_vs_peers.json").read_text())
    names = [
        "mlx_bluey",
        "mlx_lm.generate",
        "mlx_bluey (sampled)",
        "mlx_lm.generate (sampled)",
        *[f"onnxruntime {v}" for v in ("int8", "int8-vocab", "q8", "q4", "fp16", "fp32")],
    ]
    assert list(summary["decode_tokens_per_s"]) == names
    assert all(len(values) == 2 and min(values) > 0 for values in summary["decode_tokens_per_s"].values())
    # each row against mlx_lm.generate with the same sampling, paired within each round
    ratios = summary["paired_ratio_over_mlx_lm_generate"]
    assert ratios["mlx_lm.generate"]["per_round"] == [1.0, 1.0]
    assert ratios["mlx_lm.generate (sampled)"]["median"] == 1.0
    speeds = summary["decode_tokens_per_s"]
    assert ratios["mlx_bluey"]["per_round"] == [a / b for a, b in zip(speeds["mlx_bluey"], speeds["mlx_lm.generate"])]
    # ours and mlx_lm.generate emit the same greedy tokens (the script fails otherwise)
    greedy = summary["greedy_tokens"]
    assert len(greedy["mlx_bluey"]) == 24 and greedy["first_difference_from_mlx_bluey"]["mlx_lm.generate"] is None
    assert "| mlx_bluey (sampled) |" in (tmp_path / "decode_vs_peers.md").read_text()


def test_sampler_benchmark_script_runs():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_sampler.py"), "--vocab", "1000", "--repeats", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split("|")[1:3] for line in result.stdout.splitlines()[2:]]
    assert [name.strip() for name, _ in rows] == [
        "mlx_bluey.sampling",
        "mlx_lm make_sampler",
        "argsort of all 1000",
        "argpartition, top 64",
    ]
    assert all(float(ms) > 0 for _, ms in rows)


def test_training_peers_share_one_batch_plan_and_their_settings_are_checked():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_peers", ROOT / "scripts" / "bench_peers.py")
    peers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peers)
    plan = peers.make_plan(examples=8, batch_size=4, steps=3)
    assert plan == peers.make_plan(examples=8, batch_size=4, steps=3)  # seeded
    assert sorted(plan[0] + plan[1]) == list(range(8)) and plan[2] == plan[0]  # every example, then again
    settings = {"rank": 8, "scale": 20.0, "dropout": 0.0, "layers": 18, "batch_size": 4, "trainable_parameters": 9}
    run = lambda tokens, **changed: {"settings": {**settings, **changed}, "trained_tokens_by_step": tokens}  # noqa: E731
    ours = run([500, 510])
    # mlx-lm: 2 more tokens per conversation at every step is its masking, not other batches
    assert peers.check_settings({"mlx_bluey": [ours], "mlx_lm.lora": [run([508, 518])]}, 4) == (
        settings,
        {"mlx_bluey": 0, "mlx_lm.lora": 2},
    )
    for results in (
        {"mlx_bluey": [ours], "mlx_lm.lora": [run([508, 519])]},  # not a constant difference: other batches
        {"mlx_bluey": [ours], "pytorch+peft": [run([502, 512])]},  # PyTorch trains our very tokens
        {"mlx_bluey": [ours], "pytorch+peft": [run([500, 510], dropout=0.05)]},
    ):
        with pytest.raises(SystemExit):
            peers.check_settings(results, 4)


def test_timed_training_argv_is_a_train_command_without_validation_or_progress(monkeypatch, tmp_path):
    """The scripts' timed runs (bench_memory, bench_blas_kernels) parse into these train overrides."""
    from click.testing import CliRunner

    import mlx_bluey.config
    from mlx_bluey.bench_record import timed_training
    from mlx_bluey.cli import cli

    command = timed_training("configs/bluey.yaml", tmp_path / "out", 7, "--batch-size", "2")
    assert command[1:4] == ["-m", "mlx_bluey.cli", "train"]
    given = {}

    def load(path, overrides):
        given.update(path=path, **{key: value for key, value in overrides.items() if value is not None})
        raise mlx_bluey.config.ConfigError("stop here")

    monkeypatch.setattr(mlx_bluey.config, "load_config", load)
    result = CliRunner().invoke(cli, command[3:])
    assert "stop here" in result.output
    assert given == {
        "path": "configs/bluey.yaml",
        "output": str(tmp_path / "out"),
        "iters": 7,
        "val_every": 0,
        "save_every": 7,
        "progress": False,
        "batch_size": 2,
    }


def test_a_record_of_figures_that_are_not_blas_ones_names_the_cpu_and_no_blas():
    """bench_browser's records (the page computes in WASM): the CPU line, no BLAS facts of the script's process."""
    from mlx_bluey.bench_record import describe_machine, machine
    from mlx_bluey.runtime import describe_cpu

    facts = machine(blas=False)
    assert set(facts) == {"platform", "cpus", "cpu"} and facts["cpu"] == describe_cpu()
    line = describe_machine({"platform": "Linux-x86_64", "cpus": 2, "cpu": "AMD EPYC, 2 cores, avx2 fma (no AVX-512)"})
    assert line == "Linux-x86_64, 2 CPUs, CPU AMD EPYC, 2 cores, avx2 fma (no AVX-512)"


def test_bench_train_step_pairs_rounds_and_reports_loss_drift():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_train_step", ROOT / "scripts" / "bench_train_step.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def run(seconds, losses, tokens=100):
        return {"step_seconds": seconds, "trained_tokens_per_second": tokens / sum(seconds), "losses": losses}

    runs = {
        "baseline (abc)": [run([10.0, 2.0], [3.0, 2.5]), run([12.0, 3.0], [3.0, 2.5])],
        "current": [run([8.0, 2.0], [3.0, 2.5000005]), run([8.0, 2.0], [3.0, 2.5])],
    }
    rows, lines, ratios = bench.summarise(runs, "baseline (abc)")
    # whole timed runs, paired within each round: (100 / 10) / (100 / 12) = 12 / 10, then 15 / 10
    assert ratios["current"] == pytest.approx([1.2, 1.5], rel=1e-12)
    # a variant whose steps train other tokens is compared per token: (150 / 10) / (100 / 12) = 1.8, not 1.2
    other = {"baseline (abc)": runs["baseline (abc)"][:1], "batched": [run([8.0, 2.0], [3.0, 2.5], tokens=150)]}
    assert bench.summarise(other, "baseline (abc)")[2]["batched"] == pytest.approx([1.8], rel=1e-12)
    # every tree trains the conversations as the data has them: this one switches the training system message off
    assert bench.same_conversations(ROOT) == ["--no-system-from-card"]
    assert rows[0] == ["baseline (abc)", "13.5", "7.5", "0"]
    assert rows[1][:3] == ["current", "10.0", "10.0"] and float(rows[1][3]) == pytest.approx(5e-7, rel=0.01)
    assert "**1.35x** as fast (rounds 1.20-1.50: 1.20, 1.50)" in lines[0]
