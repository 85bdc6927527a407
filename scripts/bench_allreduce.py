"""What data-parallel training sends per optimizer step, measured on localhost, and a model of when it pays.

    .venv/bin/python scripts/bench_allreduce.py            # launches itself on 2 ring processes, then models

Measured: the bytes one step all-reduces (the LoRA adapter's trainable tensors of the `make train` run, float32,
plus the loss/token sums), and the time distributed.all_reduce takes for them between 2 processes on this
machine's loopback (median of --repeats, after a warm-up). Modelled: N machines, each computing 1/N of a step,
then a ring all-reduce sending 2 (N - 1) / N x bytes per machine over the link, at nominal line rates (real
throughput is lower, latency is ignored): speed-up = T / (T / N + comm). T, the one-machine step time, comes
from benchmarks/bench/bench.json (trained tokens/s, this machine's CPU) and the median trained tokens per step
of benchmarks/make-train-270m/metrics.jsonl. Writes benchmarks/allreduce.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ADAPTER = ROOT / "adapters" / "bluey-gemma-3-270m-embedded" / "adapters.safetensors"
LINKS = {"10 GbE": 1.25e9, "Thunderbolt 4 (40 Gb/s)": 5e9, "Thunderbolt 5 (80 Gb/s)": 10e9}  # bytes/s, nominal


def lora_bytes(config: dict, rank: int) -> int:
    """float32 bytes of rank-r LoRA on every linear of a Gemma 3 config: r x (in + out) per layer and linear."""
    h, i, d = config["hidden_size"], config["intermediate_size"], config["head_dim"]
    q, kv = config["num_attention_heads"] * d, config["num_key_value_heads"] * d
    per_layer = (h + q) * 2 + (h + kv) * 2 + (h + i) * 3  # q and o, k and v, gate up and down
    return 4 * rank * per_layer * config["num_hidden_layers"]


def measure(repeats: int, out: Path) -> None:
    """In each of the launched processes: all-reduce tensors shaped like the adapter's, time it on rank 0."""
    import mlx.core as mx
    from safetensors.numpy import load_file

    from mlx_bluey.distributed import all_reduce, world

    group = world()
    grads = {name: mx.array(value) for name, value in load_file(str(ADAPTER)).items()}
    totals = {"weight": 1.0, "loss_sum": 1.0, "trained_tokens": 1.0, "input_tokens": 1.0}
    reduce = all_reduce(group)
    reduce(grads, totals)  # warm-up: the ring's connections
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        reduce(grads, totals)
        seconds.append(time.perf_counter() - started)
    if group.rank() == 0:
        nbytes = sum(v.nbytes for v in grads.values()) + 4 * len(totals)
        out.write_text(json.dumps({"bytes": nbytes, "tensors": len(grads), "seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return measure(args.repeats, args.worker)
    measured = ROOT / "benchmarks" / ".allreduce-measured.json"
    launch = [str(Path(sys.executable).parent / "mlx.launch"), "--backend", "ring", "-n", "2", "--"]
    subprocess.run(launch + [sys.executable, __file__, "--repeats", str(args.repeats), "--worker", str(measured)])
    local = json.loads(measured.read_text())
    measured.unlink()
    bench = json.loads((ROOT / "benchmarks" / "bench" / "bench.json").read_text())["results"]
    rows = [
        json.loads(line)
        for line in (ROOT / "benchmarks" / "make-train-270m" / "metrics.jsonl").read_text().splitlines()
    ]
    tokens_per_step = statistics.median(r["trained_tokens"] for r in rows)
    step_seconds = {r["model"]: tokens_per_step / r["train_tokens_per_second"]["median"] for r in bench}
    from mlx_bluey.bench import ONE_B_SHAPED
    from mlx_bluey.bench_record import command_line, machine, table, write_record
    from mlx_bluey.embedded import embedded_model_dir
    from mlx_bluey.gemma3_shapes import GEMMA3_1B_CONFIG

    rank = json.loads(ADAPTER.with_name("adapter_config.json").read_text())["lora_parameters"]["rank"]
    configs = {
        "embedded": json.loads((embedded_model_dir() / "config.json").read_text()),
        ONE_B_SHAPED: GEMMA3_1B_CONFIG,
    }
    step_bytes = {name: lora_bytes(config, rank) + 4 * 4 for name, config in configs.items()}  # + the 4 sums
    if step_bytes["embedded"] != local["bytes"]:
        raise SystemExit(f"formula {step_bytes['embedded']} bytes != the adapter's {local['bytes']}")
    nbytes = local["bytes"]
    model = []
    for name, seconds in step_seconds.items():
        nbytes = step_bytes[name]
        for link, rate in LINKS.items():
            for n in (2, 4, 8):
                comm = 2 * (n - 1) / n * nbytes / rate
                model.append({"model": name, "link": link, "machines": n, "step_s": seconds, "comm_s": comm,
                              "speedup": seconds / (seconds / n + comm)})  # fmt: skip
    result = {
        "command": command_line(),
        "machine": machine(),
        "processes": "2 on this machine's loopback (ring backend)",
        "bytes_per_step": step_bytes,
        "tensors": local["tensors"],
        "localhost_allreduce_seconds": local["seconds"],
        "trained_tokens_per_step": tokens_per_step,
        "model": model,
    }
    median_ms = 1000 * statistics.median(local["seconds"])
    lines = [
        f"One optimizer step all-reduces {local['bytes'] / 1e6:.2f} MB for the 270M ({local['tensors']} LoRA tensors "
        f"of the `make train` adapter, rank {rank}, float32, + 4 sums; {step_bytes[ONE_B_SHAPED] / 1e6:.2f} MB for the "
        f"1B by the same count). Between 2 processes on this machine's loopback: median {median_ms:.1f} ms "
        f"(range {1000 * min(local['seconds']):.1f}-{1000 * max(local['seconds']):.1f}, "
        f"{len(local['seconds'])} repeats): {local['bytes'] / statistics.median(local['seconds']) / 1e6:.0f} MB/s, "
        "far below any link's nominal rate below, so read the modelled all-reduce times as lower bounds. "
        "Measured with the two processes sharing this machine's cores.",
        "",
        f"Model (not measured): N machines each compute 1/N of a step of {tokens_per_step:.0f} trained tokens, then a "
        "ring all-reduce sends 2 (N-1)/N x bytes per machine at the link's nominal rate (latency ignored, real "
        "throughput lower). One-machine step times are this Linux CPU's (benchmarks/bench/bench.json); a Mac's GPU "
        "steps are faster, which makes the communication weigh more.",
        "",
    ]
    cells = [
        [m["model"], m["link"], m["machines"], f"{m['step_s']:.2f}", f"{m['comm_s']:.4f}", f"{m['speedup']:.2f}x"]
        for m in model
    ]
    header = ["model", "link", "machines", "step s (1 machine)", "all-reduce s", "speed-up"]
    lines.append(table(header, cells, align="llrrrr"))
    title = "# Data-parallel training: what a step sends, and when it pays"
    print(write_record(ROOT / "benchmarks", "allreduce", result, title, "\n".join(lines)))


if __name__ == "__main__":
    main()
